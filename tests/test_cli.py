"""The ``videomae`` command: parsing, dispatch and exit statuses, through ``main([...])`` and a real subprocess."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from videomae.cli import build_parser, main
from videomae.data.demo import CLASS_NAMES


def test_help_lists_the_commands_in_a_subprocess():
    out = subprocess.run([sys.executable, "-m", "videomae.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("demo-data", "manifest", "predict", "extract-features", "visualize", "export", "info"):
        assert command in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "videomae.cli", "manifest", "check", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--sampling-rate" in out.stdout and "--fix" in out.stdout


def test_unknown_command_and_missing_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["nonsense"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["manifest", "build", "somewhere"])  # -o is required
    assert e.value.code == 2
    assert "-o/--output" in capsys.readouterr().err


def test_build_parser_arguments():
    args = build_parser().parse_args(
        ["manifest", "check", "m.csv", "--num-frames", "16", "--sampling-rate", "4", "--fix", "clean.csv"]
    )
    assert (args.manifest, args.num_frames, args.sampling_rate, args.fix, args.data_root) == (
        "m.csv",
        16,
        4,
        "clean.csv",
        None,
    )
    args = build_parser().parse_args(["demo-data", "out", "--num-train", "12", "--frames", "8"])
    assert (args.out, args.num_train, args.frames, args.size) == ("out", 12, 8, 64)
    with pytest.raises(SystemExit):  # the two label sources exclude each other
        build_parser().parse_args(
            ["manifest", "build", "r", "-o", "o.csv", "--labels-from-subfolders", "--label-map", "m.json"]
        )


def test_demo_data_then_manifest_commands(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(
            ["demo-data", str(out), "--num-train", "6", "--num-val", "6", "--frames", "8", "--workers", "0", "--quiet"]
        )
        == 0
    )
    assert f"data_root={out}" in capsys.readouterr().out
    with open(out / "train.csv", newline="") as f:
        assert {r["label"] for r in csv.DictReader(f)} == set(CLASS_NAMES)

    # check: clean, then too short for 8 x 2 frames (the clips have 8)
    assert (
        main(
            [
                "manifest",
                "check",
                str(out / "train.csv"),
                "--data-root",
                str(out),
                "--label-map",
                str(out / "labels.txt"),
                "--num-frames",
                "8",
                "--quiet",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    assert "6 rows, OK" in capsys.readouterr().out
    assert (
        main(
            [
                "manifest",
                "check",
                str(out / "val_frames.csv"),
                "--data-root",
                str(out),
                "--num-frames",
                "8",
                "--sampling-rate",
                "2",
                "--quiet",
                "--workers",
                "1",
            ]
        )
        == 1
    )
    report = capsys.readouterr().out
    assert report.count("too_short") == 7 and f"{out / 'val_frames.csv'}:2: too_short:" in report

    # build on the demo folder: 12 videos + 12 frame folders + 12 still images, labelled by the first sub-folder
    assert (
        main(
            [
                "manifest",
                "build",
                str(out),
                "-o",
                str(tmp_path / "all.csv"),
                "--labels-from-subfolders",
                "--workers",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    with open(tmp_path / "all.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 36 and {r["label"] for r in rows} == {"frames", "images", "videos"}
    assert {(r["label"], r["num_frames"]) for r in rows} == {("frames", "8"), ("videos", "8"), ("images", "1")}

    # merge train + val (labelled by name) into one label space
    assert (
        main(
            [
                "manifest",
                "merge",
                str(out / "train.csv"),
                str(out / "val.csv"),
                "-o",
                str(tmp_path / "m.csv"),
                "--label-map-out",
                str(tmp_path / "labels.txt"),
            ]
        )
        == 0
    )
    merged_names = (tmp_path / "labels.txt").read_text().splitlines()
    assert merged_names == sorted(n.replace("_", " ") for n in CLASS_NAMES)


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["manifest", "build", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o.csv")]) == 2
    assert "nowhere is not a folder" in capsys.readouterr().err
    (tmp_path / "a.csv").write_text("path,label\na.mp4,1\n")
    assert (
        main(
            [
                "manifest",
                "merge",
                str(tmp_path / "a.csv"),
                "-o",
                str(tmp_path / "o.csv"),
                "--label-map-out",
                str(tmp_path / "l.txt"),
            ]
        )
        == 2
    )
    assert "integer ids" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("path,lable\na.mp4,1\n")
    assert main(["manifest", "check", str(tmp_path / "bad.csv"), "--quiet"]) == 2
    assert "misspelling" in capsys.readouterr().out
    assert main(["demo-data", str(tmp_path / "d"), "--size", "65"]) == 2
    assert "size=65" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        ["predict", "{ckpt}", "{video}"],
        ["predict", "{ckpt}", "{video}", "--model", "vit_tiny_patch16_224"],
        ["extract-features", "{ckpt}", "{video}", "{out}"],
        ["visualize", "{ckpt}", "{video}", "{out}"],
        ["info", "{ckpt}"],
        ["export", "{ckpt}", "{out}"],
    ],
)
def test_a_missing_checkpoint_is_named_as_missing(tmp_path, capsys, command):
    ckpt = tmp_path / "runs" / "model.safetensors"
    args = [a.format(ckpt=ckpt, video=tmp_path / "clip.mp4", out=tmp_path / "out") for a in command]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{ckpt} does not exist" in err and "--model" not in err, err
