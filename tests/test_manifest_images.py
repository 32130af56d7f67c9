"""``manifest build`` over image folders (the ImageNet layout), captions from sidecars and captions files, and
``manifest check`` on image rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from videomae.cli import main
from videomae.data.captions import read_captions_file
from videomae.data.frame_check import guess_frame_template
from videomae.data.manifest import read_manifest
from videomae.data.manifest_tools import build_manifest, check_manifest, scan_folder


def _image(path: Path, h: int = 12, w: int = 20, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> Path:
    """root/<class>/<name>.<ext> with sparse ImageNet-like numbers, a sidecar caption, a corrupt file, a folder of
    video frames under another template, and an image at the top."""
    root = tmp_path_factory.mktemp("imagenet")
    for k, name in enumerate(["n01_10026.JPEG", "n01_231.JPEG", "n01_77.png"]):
        _image(root / "n01" / name, seed=k)
    for k, name in enumerate(["n02_5.jpg", "n02_9.webp"]):
        _image(root / "n02" / name, seed=10 + k)
    (root / "n01" / "n01_231.txt").write_text("  a goldfish in a bowl\n")
    (root / "n02" / "n02_5.txt").write_text("")  # empty: no caption
    (root / "n02" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    for i in range(3):
        _image(root / "clips" / "c1" / f"frame_{i + 1:04d}.jpg", seed=20 + i)
    _image(root / "top.png", seed=30)
    return root


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {r["path"]: r for r in csv.DictReader(f)}


def test_guess_frame_template():
    assert guess_frame_template([f"frame_{i:04d}.jpg" for i in range(1, 40)]) == "frame_{:04d}.jpg"
    assert guess_frame_template([f"{i}.png" for i in range(0, 12)]) == "{}.png"
    assert guess_frame_template(["n01_10026.JPEG", "n01_231.JPEG"]) is None  # sparse numbers: a collection
    assert guess_frame_template(["a1.jpg", "b2.jpg"]) is None and guess_frame_template(["img_1.jpg"]) is None
    assert guess_frame_template(["x_2.jpg", "x_3.jpg"]) is None  # a run must start at 0 or 1


def test_image_folders_give_one_row_per_image_labelled_by_class_folder(imagenet, tmp_path):
    clips, skipped = scan_folder(imagenet)
    assert [c.rel for c in clips] == ["n01/n01_10026.JPEG", "n01/n01_231.JPEG", "n01/n01_77.png", "n02/broken.png",
                                      "n02/n02_5.jpg", "n02/n02_9.webp", "top.png"]  # fmt: skip
    assert skipped == [("clips/c1", skipped[0][1])] and "--frame-template 'frame_{:04d}.jpg'" in skipped[0][1]
    assert "clips/c1" in [c.rel for c in scan_folder(imagenet, "frame_{:04d}.jpg")[0]]
    assert "clips/c1/frame_0001.jpg" in [c.rel for c in scan_folder(imagenet, images="all")[0]]
    assert [c.rel for c in scan_folder(imagenet, images="none")[0]] == []

    out = tmp_path / "m.csv"
    result = build_manifest(imagenet, out, labels_from_subfolders=True, workers=1, progress=False)
    rows = _rows(out)
    assert {p: r["label"] for p, r in rows.items()} == {
        "n01/n01_10026.JPEG": "n01", "n01/n01_231.JPEG": "n01", "n01/n01_77.png": "n01", "n02/n02_5.jpg": "n02",
        "n02/n02_9.webp": "n02", "top.png": "",
    }  # fmt: skip
    assert all((r["num_frames"], r["width"], r["height"]) == ("1", "20", "12") for r in rows.values())
    assert "fps" not in next(iter(rows.values()))  # a still has no frame rate
    assert [rel for rel, _ in result.skipped] == ["clips/c1", "n02/broken.png"]
    assert result.unlabelled == ["top.png"] and "text" not in next(iter(rows.values()))
    assert "6 rows are still images" in result.summary(str(imagenet))
    manifest = read_manifest(out, imagenet)  # reads back, labels as class names
    assert manifest.label_names == ["n01", "n02"]
    report = check_manifest(out, data_root=imagenet, num_frames=16, sampling_rate=4, workers=1, progress=False)
    assert report.ok, report.format()  # an image is never too short: it repeats over the clip


def test_captions_from_sidecars(imagenet, tmp_path):
    out = tmp_path / "m.csv"
    result = build_manifest(imagenet, out, captions_from_sidecars=True, workers=1, progress=False)
    texts = {p: r["text"] for p, r in _rows(out).items()}
    assert texts["n01/n01_231.JPEG"] == "a goldfish in a bowl" and texts["n02/n02_5.jpg"] == ""
    assert sum(bool(t) for t in texts.values()) == result.captioned == 1
    assert read_manifest(out, imagenet).rows[1].text == "a goldfish in a bowl"


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_captions_from_a_file_and_paths_that_name_no_clip(imagenet, tmp_path, kind):
    entries = [("n01/n01_77.png", 'a fish, "orange"'), ("./n02/n02_9.webp", "a dog"), ("n03/ghost.jpg", "x"),
               ("n09/gone.png", "y"), ("top.png", "")]  # fmt: skip
    captions = tmp_path / f"captions.{kind}"
    if kind == "csv":
        with open(captions, "w", newline="") as f:
            csv.writer(f).writerows([("path", "text"), *entries])
    else:
        captions.write_text("".join(json.dumps({"path": p, "text": t}) + "\n" for p, t in entries))
    out = tmp_path / "m.csv"
    result = build_manifest(imagenet, out, captions=captions, workers=1, progress=False)
    texts = {p: r["text"] for p, r in _rows(out).items()}
    assert texts == {"n01/n01_10026.JPEG": "", "n01/n01_231.JPEG": "", "n01/n01_77.png": 'a fish, "orange"',
                     "n02/n02_5.jpg": "", "n02/n02_9.webp": "a dog", "top.png": ""}  # fmt: skip
    assert result.caption_misses == ["n03/ghost.jpg", "n09/gone.png"] and result.captioned == 2
    summary = result.summary(str(imagenet))
    assert "2 captioned paths name no clip under the root: n03/ghost.jpg, n09/gone.png" in summary
    assert f"2 of 6 rows have a caption (from {captions})" in summary


def test_captions_file_problems_are_refused_with_their_line(tmp_path):
    clash = tmp_path / "clash.csv"
    clash.write_text("path,text\na.jpg,one\nb.jpg,two\n./a.jpg,three\n")
    with pytest.raises(ValueError, match=r"clash.csv:4: ./a.jpg already has another caption on line 2"):
        read_captions_file(clash)
    (tmp_path / "cols.csv").write_text("file,caption\na.jpg,one\n")
    with pytest.raises(ValueError, match=r"'path' and 'text' columns \(found: file, caption\)"):
        read_captions_file(tmp_path / "cols.csv")
    (tmp_path / "bad.jsonl").write_text('{"path": "a.jpg", "text": "one"}\n{"path": 3}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: expected an object"):
        read_captions_file(tmp_path / "bad.jsonl")


def test_the_command_takes_the_caption_and_image_options(imagenet, tmp_path, capsys):
    out = tmp_path / "m.csv"
    argv = ["manifest", "build", str(imagenet), "-o", str(out), "--labels-from-subfolders", "--quiet", "--workers",
            "1", "--captions-from-sidecars", "--images", "all"]  # fmt: skip
    assert main(argv) == 0
    rows = _rows(out)
    assert rows["clips/c1/frame_0001.jpg"]["label"] == "clips" and rows["n01/n01_231.JPEG"]["text"]
    assert "1 of 9 rows have a caption (from sidecars)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*argv, "--captions", str(tmp_path / "c.csv")])  # one caption source at a time
