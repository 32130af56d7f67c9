"""The whole MAE-CLIP model as one safetensors file (``export/maeclip.safetensors``): both towers, the heads, and
in its metadata the constructor arguments, the tokenizer (``tokenizers`` JSON) and the class names, so zero-shot
evaluation reruns offline from this file alone. Loading is weights-only (safetensors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from videomae.checkpoint_reading import CheckpointError, read_checkpoint
from videomae.disk_faults import write_atomic
from videomae.models.maeclip import MaeClipModel

__all__ = ["MAECLIP_EXPORT", "MAECLIP_METADATA_KEY", "export_maeclip", "load_maeclip"]

MAECLIP_EXPORT = "maeclip.safetensors"
"""File name of the whole model beside the vision tower's ``model.safetensors`` in ``export/``."""
MAECLIP_METADATA_KEY = "videomae_maeclip"


def export_maeclip(model: MaeClipModel, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``model``'s fp32 weights and ``metadata`` (JSON: ``tokenizer``, ``label_names``...) atomically."""
    info = {"model_config": dict(model.model_config), **metadata}
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata={MAECLIP_METADATA_KEY: json.dumps(info)}))


def load_maeclip(path: str | Path, device: torch.device | str = "cpu") -> tuple[MaeClipModel, dict[str, Any]]:
    """``(model in eval mode, metadata)`` of a file written by :func:`export_maeclip`; a run folder or its
    ``export/`` folder names the file inside.

    Raises:
        CheckpointError: not a MAE-CLIP export, or its weights do not fit its own configuration.
    """
    path = Path(path)
    for candidate in (path / "export" / MAECLIP_EXPORT, path / MAECLIP_EXPORT):
        if path.is_dir() and candidate.is_file():
            path = candidate
    state, metadata = read_checkpoint(path)
    if MAECLIP_METADATA_KEY not in metadata:
        raise CheckpointError(f"{path}: not a MAE-CLIP export (no '{MAECLIP_METADATA_KEY}' metadata); give the "
                              f"run's export/{MAECLIP_EXPORT}")  # fmt: skip
    info = json.loads(metadata[MAECLIP_METADATA_KEY])
    kwargs = {k: v for k, v in info["model_config"].items() if k != "name"}
    model = MaeClipModel(**kwargs)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the weights do not fit its own model configuration: {err}") from None
    return model.to(device).eval(), info
