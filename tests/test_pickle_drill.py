"""The crafted-pickle drill over every command that reads weights a user hands us: ``info``, ``predict``,
``visualize``, ``extract-features``, fine-tuning ``init=`` (the launch preflight and the run's own load) and the
distillation teacher. Each payload would create a marker file when unpickled; each path must refuse the file by
name and leave no marker. (Run folders: engine resume, per-rank state, universal conversion and ``export`` are in
test_safe_loading.py; exports with lying metadata in test_export_guard.py.)"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from videomae.checkpoint import CheckpointError
from videomae.cli import main as cli_main
from videomae.config import ConfigError, load_finetune_config
from videomae.launching.preflight import preflight_findings
from videomae.methods.distill import load_teacher
from videomae.methods.finetune_init import init_classifier
from videomae.models import create_model

TINY = dict(img_size=32, patch_size=8, all_frames=4)
CLASSIFIER = "vit_tiny_patch16_224"


class _Payload:
    marker: Path

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _top_level(path: Path, payload: _Payload) -> Path:
    torch.save(payload, path)
    return path


def _nested(path: Path, payload: _Payload) -> Path:
    """Real weights with the payload deep inside, as a release file's training arguments would be."""
    state = create_model(CLASSIFIER, num_classes=3, **TINY).state_dict()
    torch.save({"model": state, "args": {"history": [1, 2, {"note": payload}]}}, path)
    return path


def _legacy(path: Path, payload: _Payload) -> Path:
    """The pre-1.6 format: one pickle stream, no zip archive (torch.load cannot memory-map it)."""
    torch.save({"model": {"w": torch.zeros(2)}, "payload": payload}, path, _use_new_zipfile_serialization=False)
    return path


def _transformers_folder(path: Path, payload: _Payload) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "videomae"}))
    _nested(path / "pytorch_model.bin", payload)
    return path


CRAFTED: dict[str, Callable[[Path, _Payload], Path]] = {
    "evil.pth": _top_level,
    "nested.pth": _nested,
    "legacy.pt": _legacy,
    "hf_folder": _transformers_folder,
}


@pytest.fixture(params=sorted(CRAFTED))
def crafted(request, tmp_path) -> tuple[Path, Path]:
    """(the crafted weights, the file whose unpickling is refused)."""
    payload = _Payload()
    payload.marker = tmp_path / "pwned"
    path = CRAFTED[request.param](tmp_path / request.param, payload)
    return path, path / "pytorch_model.bin" if path.is_dir() else path


def _refused(message: str, crafted: tuple[Path, Path]) -> None:
    path, unpickled = crafted
    assert f"{unpickled}: refused to unpickle" in message, message
    assert not (path.parent / "pwned").exists(), "the payload ran"


def _finetune_config(*overrides: str):
    return load_finetune_config(None, ["train.max_steps=1", *overrides])


def _preflight(tmp_path: Path, *overrides: str) -> dict:
    """The launch preflight's findings by key, for a one-row manifest and the given weights."""
    manifest = tmp_path / "train.csv"
    manifest.write_text("path,label\na.mp4,0\n")
    cfg = _finetune_config(f"data.manifests=[{manifest}]", f"output_dir={tmp_path / 'run'}", *overrides)
    return {f.check: f for f in preflight_findings(cfg, sample_rows=0, check_port=False, quick=True)}


@pytest.mark.parametrize(
    "command",
    [
        ["info", "{ckpt}"],
        ["predict", "--model", CLASSIFIER, "{ckpt}", "{video}"],
        ["visualize", "--model", "pretrain_videomae_tiny_patch16_224", "{ckpt}", "{video}", "{out}/v.png"],
        ["extract-features", "--model", CLASSIFIER, "{ckpt}", "{out}/m.csv", "{out}/features"],
    ],
    ids=lambda c: c[0],
)
def test_every_command_refuses_a_crafted_pickle_by_name(crafted, command, media, tmp_path, capsys):
    (tmp_path / "m.csv").write_text(f"path\n{media['short']}\n")
    fill = {"ckpt": crafted[0], "video": media["short"], "out": tmp_path}
    code = cli_main([part.format(**fill) for part in command])
    assert code != 0
    _refused(capsys.readouterr().err, crafted)
    assert not (tmp_path / "v.png").exists() and not (tmp_path / "features").exists()


def test_finetune_init_refuses_a_crafted_pickle(crafted):
    model = create_model(CLASSIFIER, num_classes=3, **TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        init_classifier(model, crafted[0], "auto", None)
    _refused(str(err.value), crafted)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "the model was touched"


def test_distillation_teacher_refuses_a_crafted_pickle(crafted):
    cfg = _finetune_config("data.manifests=[a.csv]", "data.input_size=32", "data.num_frames=4",
                           f"distill.teacher={crafted[0]}", f"distill.teacher_model={CLASSIFIER}",
                           "distill.teacher_overrides={img_size: 32, patch_size: 8, all_frames: 4}")  # fmt: skip
    with pytest.raises(ConfigError) as err:
        load_teacher(cfg.distill, cfg.data, None, 3)
    _refused(str(err.value), crafted)


@pytest.mark.parametrize("key", ["init", "distill.teacher"])
def test_the_launch_preflight_refuses_a_crafted_pickle_before_any_process_starts(crafted, key, tmp_path):
    found = _preflight(tmp_path, f"{key}={crafted[0]}")[key]
    path, unpickled = crafted
    assert not found.ok and found.detail.startswith(f"{path}: ") and "refused to unpickle" in found.detail
    assert unpickled.name in found.detail and "allow-list" in found.detail, found.detail
    assert not (path.parent / "pwned").exists(), "the payload ran"


def test_an_honest_release_style_pickle_still_passes_the_preflight(tmp_path):
    """Namespace training arguments and NumPy scalars are on the allow-list: the release files keep loading."""
    import argparse

    import numpy as np

    path = tmp_path / "release.pth"
    state = create_model(CLASSIFIER, num_classes=3, **TINY).state_dict()
    torch.save({"model": state, "args": argparse.Namespace(lr=1e-3), "best": np.float64(0.5)}, path)
    assert _preflight(tmp_path, f"init={path}")["init"].ok
