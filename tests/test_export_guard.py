"""An export's metadata is checked against its tensors before any model is built; damaged files are named."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from videomae.checkpoint import CheckpointError, export_weights, load_exported, read_checkpoint
from videomae.inference.loading import load_inference_model
from videomae.models import create_model

TINY = {"img_size": 32, "patch_size": 8, "all_frames": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}


@pytest.fixture
def export(tmp_path) -> Path:
    model = create_model("vit_tiny_patch16_224", **TINY, num_classes=3)
    return export_weights(model, tmp_path / "model.safetensors", {"label_names": ["a", "b", "c"]})


def _with_config(export: Path, out: Path, **changes) -> Path:
    """The same weights, with ``model_config`` entries changed in the metadata."""
    with safe_open(str(export), framework="pt") as handle:
        info = json.loads(handle.metadata()["videomae"])
    info["model_config"].update(changes)
    save_file(load_file(str(export)), str(out), metadata={"videomae": json.dumps(info)})
    return out


def test_lying_sizes_are_refused_before_any_model_is_built(export, tmp_path):
    liar = _with_config(export, tmp_path / "liar.safetensors", depth=100_000, embed_dim=8192)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"model_config\.(depth=100000|embed_dim=8192) is impossible"):
        load_exported(liar)
    assert time.perf_counter() - start < 5  # building 100 000 blocks would take minutes and gigabytes


def test_sizes_that_do_not_match_the_weights_are_refused_naming_the_tensors(export, tmp_path):
    off = _with_config(export, tmp_path / "off.safetensors", depth=3)
    with pytest.raises(CheckpointError, match=r"does not match the weights \(\d+ tensors differ: blocks\.2\."):
        load_exported(off)
    unknown = _with_config(export, tmp_path / "unknown.safetensors", name="vit_nonexistent")
    with pytest.raises(CheckpointError, match="does not build a model"):
        load_exported(unknown)


def test_an_honest_export_still_loads_exactly(export):
    model, info = load_exported(export)
    assert info["label_names"] == ["a", "b", "c"]
    for key, value in load_file(str(export)).items():
        assert torch.equal(model.state_dict()[key], value)


@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_a_damaged_safetensors_file_is_named(export, tmp_path, damage):
    bad = tmp_path / f"{damage}.safetensors"
    data = export.read_bytes()
    bad.write_bytes(bytes(range(256)) * 8 if damage == "random" else data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{bad}: not a readable safetensors file"):
        read_checkpoint(bad)
    with pytest.raises(CheckpointError, match=str(bad)):
        load_inference_model(bad)
