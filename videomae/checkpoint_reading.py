"""Read weights files without running code: pickles, safetensors and Hugging Face folders.

Pickles go through ``torch.load(weights_only=True)`` with an allow-list of the harmless extra types the release
files hold (``argparse.Namespace`` training arguments, NumPy scalars and dtypes); ``torch.save``'s zip archives are
memory-mapped, so their tensors are read only when used.
"""

from __future__ import annotations

import argparse
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from videomae.models.convert_hf import convert_hf_state_dict, is_hf_state_dict
from videomae.models.convert_mae import convert_mae_state_dict, mae_layout

__all__ = [
    "HF_INDEX_FILES",
    "HF_WEIGHT_FILES",
    "PICKLE_SUFFIXES",
    "CheckpointError",
    "read_checkpoint",
    "read_state_dict",
    "to_release_layout",
    "refuse_unsafe_pickle",
    "unwrap_state_dict",
    "weights_only_globals",
]

_WRAPPER_KEYS = ("model", "module", "state_dict", "model_state")
_PREFIXES = ("_orig_mod.", "module.")
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl")
"""Checkpoint files read with ``torch.load(weights_only=True)``."""
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
"""Weights of a Hugging Face ``save_pretrained`` folder, in order of preference."""
HF_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
"""Indexes of sharded weights in a Hugging Face folder."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model (the message names file and key)."""


def weights_only_globals() -> list[Any]:
    """Harmless types the release pickles hold, with the module paths NumPy 1.x wrote."""
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    allowed: list[Any] = [argparse.Namespace, np.dtype, (scalar, "numpy.core.multiarray.scalar"), scalar]
    allowed += [type(np.dtype(t)) for t in ("f8", "f4", "i8", "i4", "b1")]
    return allowed


def _torch_load(path: Path) -> Any:
    # torch.save's zip archives are memory-mapped: the pickle is parsed, tensor bytes are read when used.
    mmap = zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals(weights_only_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused to unpickle (it holds objects outside the weights-only allow-list, which could run "
            f"code; for a DeepSpeed model_states file, whose pickle holds its config object, load exported or "
            f"zero_to_fp32 weights instead): {str(err).splitlines()[0]}"
        ) from None


def refuse_unsafe_pickle(path: str | Path) -> None:
    """Unpickle ``path`` weights-only without reading its tensors (memory-mapped), to refuse a crafted file before
    a job starts; a cheap pickle parse for ``torch.save``'s zip archives, a full load for legacy pickles.

    Raises:
        CheckpointError: the pickle holds objects outside the allow-list, naming the file.
    """
    _torch_load(Path(path))


HF_MODEL_TYPES = ("videomae", "vit_mae", "vit")
"""``transformers`` model types whose folders we read: VideoMAE, and ViTMAE / ViT for the image models."""


def read_checkpoint(source: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a checkpoint file or Hugging Face folder -> (raw object, safetensors metadata or HF config).

    Accepts ``.pth``/``.pt``/``.bin``/``.ckpt`` pickles, ``.safetensors`` and a folder with ``config.json`` and
    ``model.safetensors`` / ``pytorch_model.bin`` (sharded weights with their ``*.index.json`` too).
    """
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        config_file = path / "config.json"
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
        if config.get("model_type", "videomae") not in HF_MODEL_TYPES:
            allowed = ", ".join(map(repr, HF_MODEL_TYPES))
            raise CheckpointError(f"{config_file}: model_type {config['model_type']!r} is not one of {allowed}")
        for name in HF_WEIGHT_FILES:
            if (path / name).exists():
                return read_checkpoint(path / name)[0], config
        for index_name in HF_INDEX_FILES:
            if (path / index_name).exists():
                shards = sorted(set(json.loads((path / index_name).read_text())["weight_map"].values()))
                state: dict[str, Any] = {}
                for shard in shards:
                    state.update(read_checkpoint(path / shard)[0])
                return state, config
        raise CheckpointError(f"{path}: folder has no model.safetensors, pytorch_model.bin or sharded index")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
            return load_file(str(path)), metadata
        except SafetensorError as err:
            message = f"{path}: not a readable safetensors file ({err}); re-export or re-download it"
            raise CheckpointError(message) from None
    if path.suffix in PICKLE_SUFFIXES:
        return _torch_load(path), {}
    raise CheckpointError(f"{path}: unknown checkpoint type {path.suffix!r}; use .pth/.pt/.bin/.ckpt/.safetensors")


def unwrap_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The state dict inside a training checkpoint (``model`` / ``module`` / ``state_dict``), prefixes stripped."""
    while isinstance(obj, dict) and not _is_state_dict(obj):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            raise CheckpointError(f"{source}: no state dict found; top-level keys {sorted(map(str, obj))[:20]}")
        obj = inner
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
    state = {}
    for key, value in obj.items():
        while key.startswith(_PREFIXES):
            key = key.removeprefix("_orig_mod.").removeprefix("module.")
        state[key] = value
    return state


def read_state_dict(source: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """A checkpoint's weights in the release's key layout -> ``(state dict, metadata, format)``.

    Wrappers and prefixes are removed and ``transformers`` keys converted, as :func:`load_pretrained` does;
    ``format``: see :func:`to_release_layout`.
    """
    raw, metadata = read_checkpoint(source)
    state, fmt, _ = to_release_layout(unwrap_state_dict(raw, str(source)))
    return state, metadata, fmt


def to_release_layout(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """Weights in our (the VideoMAE release's) key layout -> ``(state, format, notes)``. ``format``: ``"mae"`` for
    the MAE release's image models, ``"transformers"`` for ``transformers`` ViTMAE / ViT (converted by
    :mod:`videomae.models.convert_mae`, whose test comes first: a bare ViTMAEModel's keys look like a bare
    VideoMAEModel's) and VideoMAE (:mod:`videomae.models.convert_hf`), else ``"videomae"`` (unchanged)."""
    fmt = mae_layout(state)
    if fmt is not None:
        converted, notes = convert_mae_state_dict(state)
        return converted, fmt, notes
    if is_hf_state_dict(state):
        return convert_hf_state_dict(state), "transformers", []
    return state, "videomae", []


def _is_state_dict(obj: dict) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())
