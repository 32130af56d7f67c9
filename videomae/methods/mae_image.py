"""Image MAE (He et al.) as a method: the pretraining method's model, init, optimizer groups and export, with MAE's
per-sample random mask drawn per batch on the device and MAE's normalised-pixel loss on the hidden patches."""

from __future__ import annotations

from typing import Any

from videomae.config.mae_image import ImageMAEConfig
from videomae.engine.method import LossOutput, StepContext
from videomae.engine.trainer import RunSummary, Trainer
from videomae.masking import MaskGenerator
from videomae.methods.pretrain import PretrainMethod, build_pretrain_trainer
from videomae.objectives.mae_pixels import MAEPixelLoss

__all__ = ["ImageMAEMethod", "build_image_mae_trainer", "export_method", "run_image_mae"]


class ImageMAEMethod(PretrainMethod):
    """Masked image modelling (MAE). What it shares with VideoMAE pretraining (building the model, loading ``init``,
    parameter groups, FLOPs, export metadata) it inherits; the mask and the loss are MAE's.

    Args:
        cfg: the resolved image MAE config.
        train_set: the training set of one-frame clips (None: batches come from elsewhere).
    """

    name = "mae_image"

    def __init__(self, cfg: ImageMAEConfig, train_set: Any) -> None:
        super().__init__(cfg, train_set)
        self.mae_loss: MAEPixelLoss | None = None

    def start(self, ctx: StepContext) -> None:
        model = ctx.engine.module
        self.ctx = ctx
        self.masks = MaskGenerator(self.cfg.mask, model.grid_size, ctx.generator)  # random mask: MAE's shuffle
        self.mae_loss = MAEPixelLoss(model.patch_size, self.cfg.loss.normalize_target)

    def loss(self, batch: dict[str, Any]) -> LossOutput:
        images = batch["video"].to(self.ctx.device, non_blocking=True)  # (B*S, C, 1, H, W)
        mask, _ = self.masks(images.shape[0])  # (B*S, N), True = hidden
        pred = self.ctx.engine(images.to(self.ctx.compute_dtype), mask)  # (B*S, N_masked, p*p*C)
        return LossOutput(self.mae_loss(pred.float(), images, mask))


def build_image_mae_trainer(cfg: ImageMAEConfig) -> Trainer:
    """An image MAE run built on this rank (process group, model, DeepSpeed engine), ready to :meth:`~Trainer.fit`."""
    return build_pretrain_trainer(cfg, ImageMAEMethod)


def export_method(cfg: ImageMAEConfig) -> ImageMAEMethod:
    """The method without data, for exporting a checkpoint offline."""
    return ImageMAEMethod(cfg, None)


def run_image_mae(cfg: ImageMAEConfig) -> RunSummary:
    """Pretrain an image MAE on DeepSpeed as configured; every rank calls this.

    Raises:
        ConfigError: a setting that only shows up against the data or the device.
        NonFiniteError: ``train.max_nonfinite_steps`` consecutive non-finite steps.
    """
    return build_image_mae_trainer(cfg).fit()
