"""Checks on an export's metadata before a model is built from it.

An export's metadata says which model to build (``model_config``); a damaged or crafted file can say anything, and
building first would let ``encoder_depth=100000`` exhaust memory before a single weight is compared. So the metadata
is bounded by the file's own tensors first (no size a model needs can exceed both the number of tensors and the
largest tensor dimension of its weights), then the model is built on the ``meta`` device (no memory, no data) and its
parameter names and shapes must equal the file's exactly; only then is it built for real.
"""

from __future__ import annotations

from typing import Any

import torch

from videomae.models.registry import create_model

__all__ = ["check_export_config"]


def _size_limit(state: dict[str, torch.Tensor]) -> int:
    """The largest integer any honest model setting of these weights can take."""
    largest_dim = max((d for t in state.values() for d in t.shape), default=0)
    return max(len(state), largest_dim)


def check_export_config(
    path: Any, config: dict[str, Any], state: dict[str, torch.Tensor], what: str = "metadata model_config"
) -> tuple[str, dict]:
    """Validate an export's ``model_config`` against its tensors -> ``(model name, constructor arguments)``.

    ``what`` names where the settings came from in messages (a transformers folder's ``config.json`` goes through
    the same check, its fields turned into constructor arguments first).

    Raises:
        ValueError: (``CheckpointError`` at the caller) naming the setting or the tensors that disagree.
    """
    config = dict(config)
    name = config.pop("name", None)
    if not isinstance(name, str):
        raise ValueError(f"{path}: its metadata names no model (model_config.name)")
    limit = _size_limit(state)
    for key, value in config.items():
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= limit:
            raise ValueError(
                f"{path}: {what}.{key}={value} is impossible for these weights ({len(state)} tensors, "
                f"none wider than {limit}); the file is damaged or does not describe these weights"
            )
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in create_model(name, **config).state_dict().items()}
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: {what} does not build a model: {err}") from None
    actual = {k: tuple(v.shape) for k, v in state.items()}
    if expected != actual:
        differ = sorted(k for k in expected.keys() | actual.keys() if expected.get(k) != actual.get(k))
        shown = ", ".join(f"{k}: settings {expected.get(k)} vs file {actual.get(k)}" for k in differ[:3])
        raise ValueError(
            f"{path}: {what} does not match the weights ({len(differ)} tensors differ: {shown}"
            f"{' ...' if len(differ) > 3 else ''})"
        )
    return name, config
