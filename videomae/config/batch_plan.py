"""The batch plan: clips per micro-step, per optimizer step, and the peak learning rate they give.

One place for the arithmetic the DeepSpeed config, the trainer, the launcher's ``--dry-run`` and the config checks
share. Each video the loader reads yields ``data.num_sample`` augmented clips, and every clip is one sample for the
optimizer, so batches count clips::

    clips per micro-step (one process)  = train.batch_size * data.num_sample
    clips per optimizer step (all)      = clips per micro-step * train.grad_accum * world_size
    peak lr                             = train.lr * lr_batch / 256

``lr_batch`` is the clips per optimizer step (``train.lr_scale_by: clips``, our rule), or the videos
(``videos``: ``batch_size * grad_accum * world_size``, as the VideoMAE / VideoMAE V2 releases scale, which
reproduces their numbers with their base lr).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["BatchPlan", "batch_plan"]


@dataclass(frozen=True)
class BatchPlan:
    """How a run's batches add up on ``world_size`` processes."""

    videos_per_micro_step: int
    """``train.batch_size``: videos one process reads per micro-step."""
    clips_per_video: int
    """``data.num_sample``."""
    grad_accum: int
    world_size: int
    lr_scale_by: str
    base_lr: float
    """``train.lr``: per 256 samples of ``lr_batch``."""

    @property
    def clips_per_micro_step(self) -> int:
        """Clips one process's model sees per forward pass (DeepSpeed's micro batch)."""
        return self.videos_per_micro_step * self.clips_per_video

    @property
    def clips_per_rank_step(self) -> int:
        """Clips one process consumes per optimizer step."""
        return self.clips_per_micro_step * self.grad_accum

    @property
    def clips_per_step(self) -> int:
        """Clips per optimizer step over every process (DeepSpeed's train batch)."""
        return self.clips_per_rank_step * self.world_size

    @property
    def videos_per_step(self) -> int:
        """Videos read per optimizer step over every process."""
        return self.videos_per_micro_step * self.grad_accum * self.world_size

    @property
    def lr_batch(self) -> int:
        """The batch the learning rate is scaled by (see the module docstring)."""
        return self.clips_per_step if self.lr_scale_by == "clips" else self.videos_per_step

    @property
    def peak_lr(self) -> float:
        """``train.lr * lr_batch / 256``."""
        return self.base_lr * self.lr_batch / 256


def batch_plan(cfg: Any, world_size: int) -> BatchPlan:
    """The plan of a pretraining or fine-tuning config on ``world_size`` processes."""
    t = cfg.train
    return BatchPlan(t.batch_size, cfg.data.num_sample, t.grad_accum, world_size, t.lr_scale_by, t.lr)
