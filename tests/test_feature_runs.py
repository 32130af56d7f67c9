"""``extract-features`` at scale: 2 ranks write what 1 process writes, a rerun skips the videos done, a folder
made with other settings is refused, and a ``.npy`` that exists is complete."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import csv_manifest, free_port

from videomae.cli import main
from videomae.inference import extract_features, load_inference_model
from videomae.inference import feature_runs as runs
from videomae.inference.feature_runs import FeatureSettingsError, completed_clips
from videomae.inference.features import feature_file_name

BIN = Path(sys.executable).parent
CLIPS = [8, 1, 0, 5, 8]  # h264 64 frames, short 6, junk, frames folder 40, mpeg4 64; span 7, stride 8


@pytest.fixture
def manifest(media, tmp_path) -> str:
    rows = [(media["h264"], "a"), (media["short"], "b"), (media["junk"], "a"), (media["frames"], "b"),
            (media["mpeg4_avi"], "a")]  # fmt: skip
    return csv_manifest(tmp_path / "m.csv", rows)


def arrays(out: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted(out.glob("*.npy"))}


def extract(exports, manifest, out, **kw):
    model = load_inference_model(exports["pretrain"])
    return extract_features(model, manifest, out, sampling_rate=2, stride=8, batch_size=3, **kw)


def test_a_rerun_recomputes_only_the_deleted_files(exports, manifest, tmp_path):
    out = tmp_path / "f"
    first = extract(exports, manifest, out)
    assert [f.num_clips for f in first] == CLIPS and not any(f.reused for f in first)
    before = arrays(out)
    index = (out / "features.csv").read_text()
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}
    for f in (first[0], first[3]):
        (out / f.file).unlink()
        kept.pop(f.file)
    second = extract(exports, manifest, out)
    assert [f.reused for f in second] == [False, True, False, False, True]  # the unreadable row is retried
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy") if p.name in kept} == kept  # not rewritten
    after = arrays(out)
    assert after.keys() == before.keys()
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])
    assert (out / "features.csv").read_text() == index and not list(out.glob("features.rank*"))
    third = extract(exports, manifest, out, overwrite=True)
    assert not any(f.reused for f in third)
    assert all(p.stat().st_mtime_ns != kept[p.name] for p in out.glob("*.npy") if p.name in kept)


def test_a_rerun_with_other_settings_is_refused(exports, manifest, tmp_path, capsys):
    out = tmp_path / "f"
    extract(exports, manifest, out)
    settings = json.loads((out / "features.json").read_text())
    assert settings["weights_sha256"] == hashlib.sha256(exports["pretrain"].read_bytes()).hexdigest()
    assert (settings["stride"], settings["sampling_rate"], settings["num_frames"], settings["input_size"]) == (
        8,
        2,
        4,
        32,
    )
    assert (settings["pool"], settings["precision"], settings["decode_backend"]) == ("mean", "fp32", "auto")
    assert settings["mean"] == pytest.approx([0.485, 0.456, 0.406]) and settings["short_side_size"] == 32
    with pytest.raises(FeatureSettingsError, match=r"stride: 8 there, 4 now.*new output folder.*--overwrite"):
        extract_features(load_inference_model(exports["pretrain"]), manifest, out, sampling_rate=2, stride=4)
    assert json.loads((out / "features.json").read_text()) == settings  # the folder is untouched
    args = ["extract-features", str(exports["pretrain"]), manifest, str(out), "--sampling-rate", "2", "--stride", "8"]
    assert main([*args, "--pool", "tokens"]) == 2
    assert "pool: 'mean' there, 'tokens' now" in capsys.readouterr().err
    assert np.load(next(out.glob("000000_*.npy"))).ndim == 2  # still the mean-pooled features
    assert main([*args, "--pool", "tokens", "--overwrite"]) == 1  # exit 1: the junk row is unreadable
    assert "0 already done" in capsys.readouterr().out
    assert (
        np.load(next(out.glob("000000_*.npy"))).ndim == 3
        and json.loads((out / "features.json").read_text())["pool"] == "tokens"
    )
    assert main([*args, "--pool", "tokens"]) == 1 and "4 already done, skipped" in capsys.readouterr().out


def test_a_feature_file_that_exists_is_complete(exports, media, manifest, tmp_path, monkeypatch):
    out = tmp_path / "f"
    real_save = np.save

    def dies_half_way(file, array):  # a kill or a full disk in the middle of a write
        if array.shape[0] == 5:
            file.write(b"\x93NUMPY partial")
            raise OSError(28, "No space left on device")
        real_save(file, array)

    monkeypatch.setattr(runs.np, "save", dies_half_way)
    with pytest.raises(OSError):
        extract(exports, manifest, out)
    assert not list(out.glob("000003_*")) and not list(out.glob("*.partial"))
    monkeypatch.undo()
    truncated = out / feature_file_name(4, str(media["mpeg4_avi"]))
    truncated.write_bytes(b"\x93NUMPY\x01\x00v\x00")  # from another writer, cut short: not complete
    assert completed_clips(truncated) is None
    files = extract(exports, manifest, out)
    assert [f.reused for f in files] == [True, True, False, False, False]
    assert np.load(out / files[3].file).shape == (5, 64)
    assert np.load(truncated).shape == (8, 64)


@pytest.mark.slow
def test_two_ranks_write_what_one_process_writes(exports, manifest, tmp_path):
    common = [str(exports["pretrain"]), manifest, "--sampling-rate", "2", "--stride", "8", "--batch-size", "3"]
    assert main(["extract-features", *common[:2], str(tmp_path / "one"), *common[2:]]) == 1  # the junk row
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    command = [str(BIN / "torchrun"), "--nproc_per_node=2", f"--master_port={free_port()}", "-m", "videomae",
               "extract-features", *common[:2], str(tmp_path / "two"), *common[2:]]  # fmt: skip
    done = subprocess.run(command, env=env | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0, done.stderr  # exit 1 from the rank that met the junk row
    assert "wrote features of 4 videos (22 clips)" in done.stdout, done.stdout + done.stderr
    one, two = tmp_path / "one", tmp_path / "two"
    assert (two / "features.csv").read_text() == (one / "features.csv").read_text()
    assert json.loads((two / "features.json").read_text()) == json.loads((one / "features.json").read_text())
    a, b = arrays(one), arrays(two)
    assert a.keys() == b.keys() and len(a) == 4
    for name in a:
        np.testing.assert_array_equal(b[name], a[name])
    assert not list(two.glob("features.rank*")) and not list(two.glob("*.partial"))
