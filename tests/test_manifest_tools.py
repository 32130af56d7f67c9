"""Manifest build -> check round trip on real files, check's report and --fix, and merge's label maps."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from videomae.data.demo import write_h264
from videomae.data.manifest import ManifestError, read_manifest
from videomae.data.manifest_tools import (
    build_manifest,
    check_manifest,
    merge_manifests,
    normalize_class_name,
    scan_folder,
)

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_videos" / "Megamind.avi"
if not REAL.exists():
    REAL = Path("/work/shared/data/real_videos/Megamind.avi")


def _frames(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _decoded_count(path: Path) -> int:
    """Independent frame count: decode every frame with PyAV."""
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """root/walk/megamind.avi (real), root/walk/short.mp4 (12 frames), root/shapes/clip_a/ (20 jpgs from 1),
    root/shapes/clip_b/ (9 jpgs from 0), root/shapes/clip.mp4 (24 frames), junk and truncated files, a folder
    of wrongly named images, a hidden file, a text file."""
    root = tmp_path_factory.mktemp("scan")
    (root / "walk").mkdir()
    shutil.copy(REAL, root / "walk" / "megamind.avi")
    write_h264(root / "walk" / "short.mp4", _frames(12), fps=8)
    (root / "shapes" / "clip_a").mkdir(parents=True)
    for i, frame in enumerate(_frames(20, seed=1), start=1):
        Image.fromarray(frame).save(root / "shapes" / "clip_a" / f"img_{i:05d}.jpg")
    (root / "shapes" / "clip_b").mkdir()
    for i, frame in enumerate(_frames(9, seed=2)):
        Image.fromarray(frame).save(root / "shapes" / "clip_b" / f"img_{i:05d}.jpg")
    write_h264(root / "shapes" / "clip.mp4", _frames(24, seed=3), fps=12)
    (root / "shapes" / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    data = (root / "shapes" / "clip.mp4").read_bytes()
    (root / "shapes" / "cut.mp4").write_bytes(data[: len(data) // 3])  # moov atom lost: unreadable
    (root / "other").mkdir()
    for i, frame in enumerate(_frames(2), start=1):  # video frames named by another template
        Image.fromarray(frame).save(root / "other" / f"frame-{i}.png")
    (root / "shapes" / ".hidden.mp4").write_bytes(b"")
    (root / "walk" / "notes.txt").write_text("not a video")
    return root


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_scan_finds_videos_and_frame_folders(tree):
    clips, skipped = scan_folder(tree)
    assert [(c.rel, c.is_folder, c.start) for c in clips] == [
        ("shapes/clip.mp4", False, None),
        ("shapes/clip_a", True, 1),
        ("shapes/clip_b", True, 0),
        ("shapes/cut.mp4", False, None),
        ("shapes/junk.mp4", False, None),
        ("walk/megamind.avi", False, None),
        ("walk/short.mp4", False, None),
    ]
    assert [rel for rel, _ in skipped] == ["other"] and "img_{:05d}.jpg" in skipped[0][1]
    assert "set --frame-template 'frame-{}.png'" in skipped[0][1]
    clips, skipped = scan_folder(tree, frame_template="frame-{}.png")
    assert ("other", True, 1) in [(c.rel, c.is_folder, c.start) for c in clips]


def test_build_probes_and_labels_from_subfolders(tree, tmp_path):
    out = tmp_path / "m.csv"
    result = build_manifest(tree, out, labels_from_subfolders=True, workers=2, progress=False)
    rows = _read_csv(out)
    assert [r["path"] for r in rows] == [
        "shapes/clip.mp4",
        "shapes/clip_a",
        "shapes/clip_b",
        "walk/megamind.avi",
        "walk/short.mp4",
    ]
    by_path = {r["path"]: r for r in rows}
    assert int(by_path["walk/megamind.avi"]["num_frames"]) == _decoded_count(REAL) == 270
    assert (by_path["walk/megamind.avi"]["width"], by_path["walk/megamind.avi"]["height"]) == ("720", "528")
    assert float(by_path["walk/megamind.avi"]["fps"]) == pytest.approx(23.976, abs=1e-3)
    assert by_path["walk/short.mp4"]["num_frames"] == "12" and float(by_path["walk/short.mp4"]["fps"]) == 8
    assert float(by_path["walk/short.mp4"]["duration"]) == pytest.approx(1.5)
    assert (by_path["shapes/clip_a"]["start"], by_path["shapes/clip_a"]["num_frames"]) == ("1", "20")
    assert (by_path["shapes/clip_b"]["start"], by_path["shapes/clip_b"]["num_frames"]) == ("0", "9")
    assert by_path["shapes/clip_a"]["fps"] == ""  # frame folders have no frame rate
    assert [r["label"] for r in rows] == ["shapes", "shapes", "shapes", "walk", "walk"]
    assert result.label_names == ["shapes", "walk"]
    assert sorted(rel for rel, _ in result.skipped) == ["other", "shapes/cut.mp4", "shapes/junk.mp4"]
    # the written file is a valid manifest for the reader, relative to the scanned root
    manifest = read_manifest(out, tree)
    assert Path(manifest.rows[0].path) == tree / "shapes" / "clip.mp4"


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_build_labels_from_a_mapping_file(tree, tmp_path, kind):
    if kind == "csv":
        mapping = tmp_path / "map.csv"
        mapping.write_text("name,label\nmegamind,cartoon\nshapes/clip_a,noise\nclip.mp4,noise\n")
    else:
        mapping = tmp_path / "map.json"
        mapping.write_text(json.dumps({"walk/megamind.avi": "cartoon", "clip_a": "noise", "shapes/clip": "noise"}))
    result = build_manifest(tree, tmp_path / "m.csv", label_map=mapping, workers=1, progress=False)
    labels = {r["path"]: r["label"] for r in _read_csv(tmp_path / "m.csv")}
    assert labels == {
        "shapes/clip.mp4": "noise",
        "shapes/clip_a": "noise",
        "shapes/clip_b": "",
        "walk/megamind.avi": "cartoon",
        "walk/short.mp4": "",
    }
    assert result.unlabelled == ["shapes/clip_b", "walk/short.mp4"]


def test_build_then_check_then_fix(tree, tmp_path):
    built = tmp_path / "built.csv"
    build_manifest(tree, built, labels_from_subfolders=True, workers=2, progress=False)
    labels = tmp_path / "labels.txt"
    labels.write_text("shapes\nwalk\n")
    clean = check_manifest(
        built, data_root=tree, num_frames=4, sampling_rate=2, label_map=labels, workers=2, progress=False
    )
    assert clean.ok and clean.exit_code == 0 and clean.num_rows == 5

    good = built.read_text().splitlines()
    bad_rows = [
        "walk/missing.mp4,,,walk,,,,",  # line 7
        "shapes/junk.mp4,,,shapes,,,,",  # line 8
        "walk/short.mp4,,12,walk,8.0,32,32,1.5",  # line 9: repeats line 6
        "shapes/clip.mp4,,24,running,,,,",  # line 10: unknown class
        "shapes/clip_a,1,twenty,shapes,,,,",  # line 11: not an integer
        "shapes/clip_a,3,19,shapes,,,,",  # line 12: only 18 files from number 3 on
    ]
    manifest = tmp_path / "bad.csv"
    manifest.write_text("\n".join(good + bad_rows) + "\n")
    fixed = tmp_path / "fixed.csv"
    report = check_manifest(
        manifest, data_root=tree, num_frames=4, sampling_rate=2, label_map=labels, fix=fixed, workers=2, progress=False
    )
    assert report.exit_code == 1
    assert [(p.line, p.kind) for p in report.problems] == [
        (7, "missing"),
        (8, "undecodable"),
        (9, "duplicate"),
        (10, "unknown_label"),
        (11, "malformed"),
        (12, "frame_count"),
    ]
    assert report.num_rows == 11
    text = report.format()
    assert f"{manifest}:9: duplicate:" in text and "repeats line 6" in text and "'running'" in text
    # the good rows byte for byte, and the folder that holds 18 frames from number 3 kept with its count corrected
    assert fixed.read_text() == built.read_text() + "shapes/clip_a,3,18,shapes,,,,\n"
    assert (report.kept, report.corrected) == (6, 1)
    assert "wrote 6 good rows" in report.format() and "1 with num_frames corrected" in report.format()
    again = check_manifest(
        fixed, data_root=tree, num_frames=4, sampling_rate=2, label_map=labels, workers=1, progress=False
    )
    assert again.ok


def test_check_too_short_and_truncated_real_video(tree, tmp_path):
    data = REAL.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) * 2 // 5])  # AVI keeps its head: a prefix still decodes
    decodable = _decoded_count(tmp_path / "cut.avi")
    assert 0 < decodable < 270
    manifest = tmp_path / "m.txt"  # the original `path start total` list format
    manifest.write_text(f"{tree}/walk/short.mp4 0 -1\n{tmp_path}/cut.avi 0 270\n{tree}/shapes/clip_a 1 20\n")
    report = check_manifest(manifest, num_frames=8, sampling_rate=2, workers=1, progress=False)
    assert [(p.line, p.kind) for p in report.problems] == [(1, "too_short"), (2, "frame_count")]
    assert "12 frames < the 15" in report.problems[0].message
    assert f"only {decodable} decode" in report.problems[1].message
    report = check_manifest(manifest, num_frames=8, sampling_rate=16, workers=1, progress=False)
    assert [(p.line, p.kind) for p in report.problems] == [
        (1, "too_short"),
        (2, "frame_count"),
        (2, "too_short"),
        (3, "too_short"),
    ]


def test_check_refuses_an_unreadable_manifest(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,lable\na.mp4,1\n")
    report = check_manifest(manifest, workers=1, progress=False)
    assert report.fatal and report.exit_code == 2
    assert report.problems[0].line == 1 and "misspelling" in report.problems[0].message


def test_normalize_class_name():
    assert normalize_class_name("  Playing_Guitar ") == "playing guitar"
    assert normalize_class_name("air  drumming") == normalize_class_name("Air_Drumming") == "air drumming"


def test_merge_label_maps_and_remaps(tmp_path):
    (tmp_path / "a_labels.txt").write_text("abseiling\nair_drumming\nPlaying guitar\n")
    (tmp_path / "b_labels.txt").write_text("Abseiling\nbaking cookies\nplaying_guitar\n")
    (tmp_path / "a.txt").write_text("x/1.mp4 0\nx/2.mp4 2\nx/3.mp4 1\n")  # `path label`
    (tmp_path / "b.csv").write_text("path,label,source\nx/1.mp4,0,\ny/4.mp4,1,k600\ny/5.mp4,2,\nx/2.mp4,0,\n")
    (tmp_path / "c.csv").write_text("path,label\nz/9.mp4,Baking_Cookies\nz/8.mp4,juggling\n")
    out = tmp_path / "out" / "k.csv"
    result = merge_manifests(
        [tmp_path / "a.txt", tmp_path / "b.csv", tmp_path / "c.csv"],
        out,
        label_map_out=tmp_path / "out" / "labels.txt",
        label_maps=[tmp_path / "a_labels.txt", tmp_path / "b_labels.txt", "-"],
    )
    # union of normalised names, sorted: hand-computed
    merged = ["abseiling", "air drumming", "baking cookies", "juggling", "playing guitar"]
    assert (tmp_path / "out" / "labels.txt").read_text().splitlines() == merged == result.label_names
    remaps = {Path(p).name: json.loads(Path(p).read_text()) for p, _ in result.remaps}
    assert remaps == {
        "k.remap.0.a.json": {"0": 0, "1": 1, "2": 4},
        "k.remap.1.b.json": {"0": 0, "1": 2, "2": 4},
        "k.remap.2.c.json": {"Baking_Cookies": 2, "juggling": 3},
    }
    rows = _read_csv(out)
    assert [(r["path"], r["label"], r["source"]) for r in rows] == [
        ("x/1.mp4", "0", "a"),
        ("x/2.mp4", "4", "a"),
        ("x/3.mp4", "1", "a"),
        ("y/4.mp4", "2", "k600"),
        ("y/5.mp4", "4", "b"),
        ("z/9.mp4", "2", "c"),
        ("z/8.mp4", "3", "c"),
    ]
    assert result.duplicates == 2 and result.rows_per_input == [3, 2, 2]
    assert len(result.conflicts) == 1 and result.conflicts[0][1] == 5 and "x/2.mp4" in result.conflicts[0][2]
    back = read_manifest(out, label_map=tmp_path / "out" / "labels.txt")
    assert [merged[r.label] for r in back.rows][:3] == ["abseiling", "playing guitar", "air drumming"]


def test_merge_refuses_integer_labels_without_a_label_map(tmp_path):
    (tmp_path / "a.csv").write_text("path,label\na.mp4,3\n")
    with pytest.raises(ValueError, match="a.csv: labels are integer ids"):
        merge_manifests([tmp_path / "a.csv"], tmp_path / "o.csv", label_map_out=tmp_path / "l.txt")
    (tmp_path / "u.csv").write_text("path\na.mp4\n")
    with pytest.raises(ValueError, match="no labelled rows"):
        merge_manifests([tmp_path / "u.csv"], tmp_path / "o.csv", label_map_out=tmp_path / "l.txt")
    (tmp_path / "l.txt").write_text("a\nb\n")
    with pytest.raises(ManifestError, match="outside the label map"):
        merge_manifests(
            [tmp_path / "a.csv"], tmp_path / "o.csv", label_map_out=tmp_path / "m.txt", label_maps=[tmp_path / "l.txt"]
        )


EXAMPLES = Path(__file__).resolve().parents[1] / "data_lists" / "examples"
EXAMPLE_FORMATS = {
    "captions.csv": "csv",
    "demo_train.csv": "csv",
    "demo_val_ids.csv": "csv",
    "hybrid_pretrain.csv": "csv",
    "original_pretrain_hybrid.txt": "path_start_total",
    "original_finetune_videos.txt": "path_label",
    "original_finetune_frames.txt": "folder_total_label",
    "original_unlabeled.txt": "path",
}


def test_schema_examples_read_check_and_match_the_demo_set(tmp_path):
    from videomae.data.demo import DemoConfig, write_demo_dataset

    # the examples point at the first clips of the default demo set; a smaller set is a prefix of it
    write_demo_dataset(tmp_path, DemoConfig(num_train=6, num_val=4), workers=0)
    truth = {}
    for split in ("train", "val"):
        for name in (f"{split}.csv", f"{split}_frames.csv"):
            truth |= {r["path"]: r["label"] for r in _read_csv(tmp_path / name)}
    names = (EXAMPLES / "labels.txt").read_text().split()
    assert names == (tmp_path / "labels.txt").read_text().split()
    assert sorted(p.name for p in EXAMPLES.iterdir() if p.name != "labels.txt") == sorted(EXAMPLE_FORMATS)
    for file, fmt in EXAMPLE_FORMATS.items():
        manifest = read_manifest(EXAMPLES / file, tmp_path, label_map=EXAMPLES / "labels.txt")
        assert manifest.format == fmt, file
        for row in manifest.rows:
            if row.label is not None:
                assert names[row.label] == truth[str(Path(row.path).relative_to(tmp_path))], (file, row.line)
        report = check_manifest(
            EXAMPLES / file,
            data_root=tmp_path,
            label_map=EXAMPLES / "labels.txt",
            num_frames=16,
            sampling_rate=1,
            workers=1,
            progress=False,
        )
        assert report.ok, report.format()
