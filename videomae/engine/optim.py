"""AdamW parameter groups and per-step learning-rate / weight-decay schedules."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from videomae.config import TrainConfig

__all__ = [
    "Schedule",
    "build_schedule",
    "cosine_value",
    "no_weight_decay",
    "param_groups",
    "param_ndim",
    "set_step_values",
]

# Parameters whose names contain one of these never get weight decay (position tables, learned tokens).
_NO_DECAY_NAME_PARTS = ("pos_embed", "mask_token", "cls_token", "rel_pos", "position")


def no_weight_decay(name: str, ndim: int, skip: set[str]) -> bool:
    """True for parameters trained without weight decay (the one rule of every optimizer we build).

    1-D tensors (norm weights, biases, layer-scale ``gamma_*``, ``q_bias``/``v_bias``), any ``*.bias``, position
    tables and learned tokens, and the names in ``skip`` (e.g. ``model.no_weight_decay()``).
    """
    return ndim <= 1 or name.endswith(".bias") or name in skip or any(part in name for part in _NO_DECAY_NAME_PARTS)


def param_groups(model: nn.Module, weight_decay: float, skip: Iterable[str] = ()) -> list[dict]:
    """Split trainable parameters into a decayed and a non-decayed AdamW group.

    No weight decay where :func:`no_weight_decay` says so (``skip``: e.g. ``model.no_weight_decay()``).

    Returns:
        Two groups; each has ``name`` ("decay" or "no_decay") and ``apply_wd`` so schedules know which to change.
    """
    skip = set(skip)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if no_weight_decay(name, param_ndim(param), skip) else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay", "apply_wd": True},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay", "apply_wd": False},
    ]


def param_ndim(param: torch.Tensor) -> int:
    """Dimensions of ``param``'s full shape, also for a ZeRO-3 partitioned parameter (whose data is a flat shard)."""
    return len(getattr(param, "ds_shape", param.shape))


def cosine_value(step: int, total_steps: int, peak: float, end: float, warmup_steps: int = 0) -> float:
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then half a cosine from ``peak`` to ``end``.

    ``step`` counts optimizer steps from 0; the value at ``step == total_steps`` is ``end``.
    """
    if step < warmup_steps:
        return peak * step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return end + 0.5 * (peak - end) * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Schedule:
    """Per-step learning rate and weight decay; a pure function of the step, so resume needs only the step."""

    total_steps: int
    warmup_steps: int
    peak_lr: float
    min_lr: float
    weight_decay: float
    weight_decay_end: float

    def lr(self, step: int) -> float:
        """Learning rate for optimizer step ``step``."""
        return cosine_value(step, self.total_steps, self.peak_lr, self.min_lr, self.warmup_steps)

    def wd(self, step: int) -> float:
        """Weight decay for optimizer step ``step`` (cosine without warm-up, constant when start == end)."""
        return cosine_value(step, self.total_steps, self.weight_decay, self.weight_decay_end, 0)


def build_schedule(train: TrainConfig, total_steps: int, steps_per_epoch: int, peak_lr: float) -> Schedule:
    """Schedule from the train section; ``peak_lr`` is the already scaled absolute lr."""
    if train.warmup_steps is not None:
        warmup = train.warmup_steps
    elif train.warmup_epochs is not None:
        warmup = round(train.warmup_epochs * steps_per_epoch)
    else:
        warmup = 0
    wd_end = train.weight_decay if train.weight_decay_end is None else train.weight_decay_end
    return Schedule(total_steps, min(warmup, total_steps), peak_lr, train.min_lr, train.weight_decay, wd_end)


def set_step_values(optimizer: torch.optim.Optimizer, lr: float, wd: float) -> None:
    """Write this step's lr (times the group's ``lr_scale``, e.g. layer-wise decay) into every group, and its
    weight decay into the decayed groups."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
        if group.get("apply_wd", group.get("weight_decay", 0.0) > 0):
            group["weight_decay"] = wd
