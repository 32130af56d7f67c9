"""The backward half of a micro-step, shared by every method: non-finite check, backward, optimizer step."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from videomae.engine import dist
from videomae.engine.ds_engine import TrainingEngine

__all__ = ["MicroStep", "NonFiniteError", "backward_step", "compute_dtype"]


class NonFiniteError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


@dataclass
class MicroStep:
    """What one micro-step did."""

    loss: float
    """This rank's loss (NaN/inf when the step was skipped for it)."""
    skipped: bool
    """No update came from this micro-batch (non-finite loss on some rank, or DeepSpeed skipped the step)."""
    boundary: bool
    """This micro-step ended an accumulation window (an optimizer step was attempted)."""
    grad_norm: float | None = None
    """Global gradient norm of the optimizer step (boundary steps only, when DeepSpeed reports it)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """The method's further figures of this micro-batch (:attr:`LossOutput.metrics`), averaged like the loss."""


def backward_step(engine: TrainingEngine, loss: torch.Tensor) -> MicroStep:
    """Backward pass and (at an accumulation boundary) optimizer step for a micro-batch's ``loss``.

    A non-finite loss on any rank skips the backward pass and the step on every rank (they must agree, since
    both are collective). Non-finite gradients are caught by DeepSpeed's overflow check, which skips the step.

    Args:
        engine: the DeepSpeed engine whose forward produced ``loss``.
        loss: scalar loss of this rank's micro-batch.
    """
    if not dist.all_finite(loss):
        return MicroStep(loss=loss.item(), skipped=True, boundary=False)
    boundary = engine.is_gradient_accumulation_boundary()
    engine.backward(loss)
    engine.step()
    grad_norm = engine.get_global_grad_norm() if boundary else None
    if isinstance(grad_norm, torch.Tensor):
        grad_norm = grad_norm.item()
    skipped = boundary and not engine.was_step_applied()
    return MicroStep(loss=loss.item(), skipped=skipped, boundary=boundary, grad_norm=grad_norm)


def compute_dtype(engine: TrainingEngine) -> torch.dtype:
    """The dtype the engine's module computes in (inputs are cast to it)."""
    if engine.bfloat16_enabled():
        return torch.bfloat16
    if engine.fp16_enabled():
        return torch.float16
    return torch.float32
