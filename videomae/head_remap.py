"""Classifier heads across class lists: match class names, reorder and slice head rows."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from videomae.checkpoint_reading import CheckpointError
from videomae.data.labels import normalize_class_name

__all__ = ["match_class_names", "remap_head"]


def _normalized_index(names: Sequence[str], what: str) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        key = normalize_class_name(name)
        if key in index:
            raise CheckpointError(
                f"{what} class names {names[index[key]]!r} (id {index[key]}) and {name!r} (id {i}) are the same "
                "after normalisation (case, underscores, spaces); class names must be unique"
            )
        index[key] = i
    return index


def match_class_names(source_names: Sequence[str], target_names: Sequence[str]) -> list[int | None]:
    """For each target class, the index of the source class with the same normalised name (``None``: no match)."""
    source = _normalized_index(source_names, "checkpoint")
    _normalized_index(target_names, "model")  # refuse duplicates on this side too
    return [source.get(normalize_class_name(name)) for name in target_names]


def remap_head(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    source_names: Sequence[str],
    target_names: Sequence[str],
    fresh_weight: torch.Tensor,
    fresh_bias: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """Reorder / slice a classifier head's rows from the source class list to the target class list.

    Args:
        weight: checkpoint head weight ``[K, D]``, row k for ``source_names[k]``.
        bias: checkpoint head bias ``[K]`` (or None).
        source_names: the checkpoint's K class names.
        target_names: the model's M class names.
        fresh_weight: the model's freshly initialised head weight ``[M, D]``, kept for unmatched classes.
        fresh_bias: the model's head bias ``[M]`` (or None).

    Returns:
        ``(weight [M, D], bias [M] | None, unmatched target names)``.

    Raises:
        CheckpointError: name counts that do not fit the tensors, duplicate names, widths that differ, or no
            class in common (a label map that matches nothing is a mistake, not a fresh head).
    """
    if len(source_names) != weight.shape[0]:
        raise CheckpointError(
            f"label map: the checkpoint head has {weight.shape[0]} classes but {len(source_names)} source names"
        )
    if len(target_names) != fresh_weight.shape[0]:
        raise CheckpointError(
            f"label map: the model head has {fresh_weight.shape[0]} classes but {len(target_names)} target names"
        )
    if weight.shape[1:] != fresh_weight.shape[1:]:
        raise CheckpointError(f"label map: head width {tuple(weight.shape)} does not fit {tuple(fresh_weight.shape)}")
    rows = match_class_names(source_names, target_names)
    if all(r is None for r in rows):
        raise CheckpointError(
            f"label map: none of the model's {len(target_names)} classes (e.g. {list(target_names[:3])}) is among "
            f"the checkpoint's {len(source_names)} (e.g. {list(source_names[:3])}); drop label_map for a fresh head"
        )
    new_weight = fresh_weight.detach().clone().to(weight.dtype)
    new_bias = None if fresh_bias is None else fresh_bias.detach().clone().to(weight.dtype)
    for target, source in enumerate(rows):
        if source is None:
            continue
        new_weight[target] = weight[source]
        if new_bias is not None and bias is not None:
            new_bias[target] = bias[source]
    unmatched = [name for name, source in zip(target_names, rows) if source is None]
    return new_weight, new_bias, unmatched
