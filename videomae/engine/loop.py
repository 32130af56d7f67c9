"""One training micro-step: masks for the whole batch on the device, forward, loss, non-finite check, step.

:func:`backward_step` (non-finite check, backward, step) is shared by every stage; :func:`train_step` is the
pretraining micro-step around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from videomae.config import MaskConfig
from videomae.engine import dist
from videomae.engine.ds_engine import TrainingEngine
from videomae.masking import random_mask, running_cell_mask, tube_mask

__all__ = ["MaskGenerator", "MicroStep", "NonFiniteError", "backward_step", "compute_dtype", "train_step"]


class NonFiniteError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


class MaskGenerator:
    """Encoder and decoder masks for whole batches, drawn on the device from a dedicated generator.

    The generator is separate from the global RNG so its state can be checkpointed and restored exactly.
    """

    def __init__(self, cfg: MaskConfig, grid: tuple[int, int, int], device: torch.device, seed: int) -> None:
        self.cfg = cfg
        self.grid = grid
        self.device = device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def __call__(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Masks ``[B, N]``: ``mask`` True = hidden from the encoder, ``decode_mask`` True = dropped by the decoder."""
        make = tube_mask if self.cfg.type == "tube" else random_mask
        mask = make(batch_size, self.grid, self.cfg.ratio, generator=self.generator, device=self.device)
        decode_mask = None
        if self.cfg.decoder_type == "run_cell":
            decode_mask = running_cell_mask(
                batch_size, self.grid, self.cfg.decoder_ratio, generator=self.generator, device=self.device
            )
        return mask, decode_mask


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
    pred: torch.Tensor | None = None
    """Detached predictions ``[B, N_dec, D]`` (kept only when asked, for pictures)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Further figures of this micro-batch (e.g. loss terms), averaged like the loss and logged with it."""


def train_step(
    engine: TrainingEngine,
    videos: torch.Tensor,
    masks: MaskGenerator,
    loss_fn: nn.Module,
    poison: bool = False,
    keep_pred: bool = False,
) -> MicroStep:
    """Run one pretraining micro-step through the DeepSpeed engine (masks, forward, loss, :func:`backward_step`).

    Args:
        engine: DeepSpeed engine wrapping the pretraining model.
        videos: normalised clips ``[B, C, T, H, W]`` on the engine's device, float32.
        masks: batch mask generator.
        loss_fn: ``MaskedPixelLoss``-like ``(pred, videos, mask, decode_mask) -> scalar``.
        poison: make the loss NaN (testing hook for the non-finite path).
        keep_pred: return the predictions.
    """
    mask, decode_mask = masks(videos.shape[0])  # (B, N) each
    pred = engine(videos.to(compute_dtype(engine)), mask, decode_mask)  # (B, N_dec, tubelet*p*p*C)
    result = backward_step(engine, loss_fn(pred.float(), videos, mask, decode_mask), poison)
    result.pred = pred.detach() if keep_pred else None
    return result


def backward_step(engine: TrainingEngine, loss: torch.Tensor, poison: bool = False) -> MicroStep:
    """Backward pass and (at an accumulation boundary) optimizer step for a micro-batch's ``loss``.

    A non-finite loss on any rank skips the backward pass and the step on every rank (they must agree, since
    both are collective). Non-finite gradients are caught by DeepSpeed's overflow check, which skips the step.

    Args:
        engine: the DeepSpeed engine whose forward produced ``loss``.
        loss: scalar loss of this rank's micro-batch.
        poison: make the loss NaN (testing hook for the non-finite path).
    """
    if poison:
        loss = loss * math.nan
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
