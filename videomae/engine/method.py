"""What a training method supplies to the trainer (:mod:`videomae.engine.trainer`), and what it is given back.

A method is a small object: its model, the batch -> (loss, figures) function, optionally a per-step update (an EMA, a
momentum encoder) and periodic work (pictures, validation), the state it keeps in checkpoints and its export. It
never drives DeepSpeed, the loop, resume or checkpoints; it reads the run through the :class:`StepContext` the
trainer hands it once the DeepSpeed engine exists. ``videomae/engine/README.md`` describes the order of the calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import Dataset

from videomae.engine.ds_engine import TrainingEngine

if TYPE_CHECKING:
    from videomae.engine.trainer import RunSummary

__all__ = ["LossOutput", "Method", "StepContext"]


@dataclass
class LossOutput:
    """One micro-batch's loss, before the backward pass."""

    loss: torch.Tensor
    """Scalar loss of this rank's micro-batch (float32); the trainer runs backward and step on it."""
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    """Detached scalar figures of this micro-batch (e.g. loss terms), averaged like the loss and logged with it."""


@dataclass(frozen=True)
class StepContext:
    """The run as a method sees it, from :meth:`Method.start` on."""

    engine: TrainingEngine
    """The DeepSpeed engine wrapping the method's model (``engine.module``)."""
    device: torch.device
    rank: int
    world_size: int
    generator: torch.Generator
    """This rank's stream for the method's own random draws (masks, mixing); checkpointed and restored by the
    trainer, so draw from it rather than from the global generators."""
    output_dir: Path
    total_steps: int
    """Optimizer steps of the whole run (0 when there is no training set)."""
    compute_dtype: torch.dtype
    """The dtype the engine computes in (inputs are cast to it)."""


class Method:
    """Base of a training method: the calls without a default must be implemented.

    Construct a method with its data already built (a ``build_*_method(cfg, session)`` function does that work), so
    the trainer only ever calls it, and it never reaches into the trainer.
    """

    name = "train"
    """Name on the progress bar and in the logs."""
    train_set: Dataset | None = None
    """The training set (None: nothing to train, e.g. evaluation only)."""

    def build_model(self) -> nn.Module:
        """The model with fresh weights. The trainer calls it inside DeepSpeed's ``zero.Init`` under ZeRO-3, which
        partitions each module's parameters as soon as it is built: initialisation that touches a child's weights
        must go through ``nn.Module.apply``. Also used to rebuild the model for the export."""
        raise NotImplementedError

    def prepare_model(self, model: nn.Module, fresh: bool) -> None:
        """Called with the fp32 model before DeepSpeed wraps and casts it; ``fresh``: not resuming, so load the
        configured initial weights (under ZeRO-3 gather the parameters around the load:
        ``deepspeed_setup.whole_parameters``). Keep fp32 copies (e.g. an EMA) here."""

    def param_groups(self, model: nn.Module) -> list[dict]:
        """Optimizer parameter groups (with ``apply_wd`` and optionally ``lr_scale``)."""
        raise NotImplementedError

    def flops_per_clip(self, model: nn.Module) -> int | None:
        """Forward + backward FLOPs of one training clip, for the MFU figure (None: not reported)."""
        return None

    def start(self, ctx: StepContext) -> None:
        """The engine exists: build what :meth:`loss` needs (losses, mask generators on ``ctx.device``)."""

    def loss(self, batch: dict[str, Any]) -> LossOutput:
        """Forward and loss of one loader batch through ``ctx.engine``; no backward (the trainer runs it)."""
        raise NotImplementedError

    def begin(self, step: int) -> None:
        """Before the first step of this process; ``step`` is where the run starts (0, or the resumed step)."""

    def after_step(self, step: int) -> dict[str, float]:
        """After optimizer step ``step`` (1-based), before it is logged and checkpointed: per-step updates (EMA,
        momentum encoders) and periodic work (pictures, validation). Returns extra metrics; a non-empty dict makes
        the step a logged one."""
        return {}

    def finish(self, summary: RunSummary) -> None:
        """The last step is done and exported (e.g. the final evaluation)."""

    def state_dict(self) -> dict[str, Any]:
        """The method's state stored in every checkpoint (tensors, numbers, strings; the same on every rank)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` stored (``state`` is the checkpoint's whole client state)."""

    def export_model(self, state: dict[str, torch.Tensor]) -> nn.Module:
        """The model written to ``export/``, given the consolidated fp32 state dict of the engine's module;
        default: :meth:`build_model` holding ``state``."""
        model = self.build_model()
        model.load_state_dict(state)
        return model

    def export_metadata(self, step: int) -> dict[str, Any]:
        """Metadata of the exported safetensors file of step ``step``."""
        return {"step": step}
