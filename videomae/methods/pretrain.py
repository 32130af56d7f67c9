"""VideoMAE V2 pretraining as a method: the dual-masking model, masks drawn per batch on the device, the
masked-pixel loss, and reconstruction pictures of fixed clips."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from videomae.checkpoint import load_pretrained
from videomae.config import ConfigError, PretrainConfig, config_to_dict
from videomae.data import HybridVideoDataset
from videomae.engine.data_setup import build_dataset
from videomae.engine.deepspeed_setup import whole_parameters
from videomae.engine.method import LossOutput, Method, StepContext
from videomae.engine.optim import param_groups
from videomae.engine.session import Session, start_session
from videomae.engine.throughput import train_flops_per_clip
from videomae.engine.trainer import RunSummary, Trainer, build_trainer
from videomae.masking import MaskGenerator
from videomae.methods.pictures import ReconstructionPictures
from videomae.models import create_model
from videomae.objectives import MaskedPixelLoss

__all__ = ["PretrainMethod", "build_pretrain_method", "build_pretrain_trainer", "export_method", "run_pretraining"]

log = logging.getLogger(__name__)


class PretrainMethod(Method):
    """Masked video modelling with dual masking (VideoMAE V2).

    Args:
        cfg: the resolved pretraining config.
        train_set: the (hybrid) training set (None: batches come from elsewhere, e.g. a benchmark's fixed batch).
    """

    name = "pretrain"

    def __init__(self, cfg: PretrainConfig, train_set: HybridVideoDataset | None) -> None:
        self.cfg = cfg
        self.train_set = train_set
        self.ctx: StepContext | None = None
        self.masks: MaskGenerator | None = None
        self.loss_fn: MaskedPixelLoss | None = None
        self.pictures: ReconstructionPictures | None = None

    def build_model(self) -> nn.Module:
        return create_model(self.cfg.model.name, **self.cfg.model.create_kwargs())

    def prepare_model(self, model: nn.Module, fresh: bool) -> None:
        if fresh and self.cfg.init is not None:
            with whole_parameters(model):  # ZeRO-3: gathered only when there is something to load
                log.info("initialising from %s: %s", self.cfg.init, load_pretrained(model, self.cfg.init))

    def param_groups(self, model: nn.Module) -> list[dict]:
        return param_groups(model, self.cfg.train.weight_decay, model.no_weight_decay())

    def flops_per_clip(self, model: nn.Module) -> int:
        return train_flops_per_clip(model, self.cfg.mask)

    def start(self, ctx: StepContext) -> None:
        cfg, model = self.cfg, ctx.engine.module
        self.ctx = ctx
        self.masks = MaskGenerator(cfg.mask, model.grid_size, ctx.generator)
        self.loss_fn = MaskedPixelLoss(model.patch_size, model.tubelet_size, cfg.loss.normalize_target)
        if cfg.train.picture_every > 0:
            clips = [self.train_set[i]["video"] for i in range(min(cfg.train.picture_clips, len(self.train_set)))]
            self.pictures = ReconstructionPictures(
                clips, model, cfg.mask, ctx.output_dir / "pictures", cfg.loss.normalize_target
            )

    def loss(self, batch: dict[str, Any]) -> LossOutput:
        engine = self.ctx.engine
        videos = batch["video"].to(self.ctx.device, non_blocking=True)  # (B*S, C, T, H, W)
        mask, decode_mask = self.masks(videos.shape[0])  # (B*S, N) each
        pred = engine(videos.to(self.ctx.compute_dtype), mask, decode_mask)  # (B*S, N_dec, tubelet*p*p*C)
        return LossOutput(self.loss_fn(pred.float(), videos, mask, decode_mask))

    def begin(self, step: int) -> dict[str, Any]:
        if self.pictures is not None and step == 0:
            return self.pictures.save(self.ctx.engine, 0)
        return {}

    def after_step(self, step: int) -> dict[str, Any]:
        if self.pictures is not None and step % self.cfg.train.picture_every == 0:
            return self.pictures.save(self.ctx.engine, step)
        return {}

    def export_metadata(self, step: int) -> dict[str, Any]:
        return {"step": step, "pretrain_config": config_to_dict(self.cfg)}


def build_pretrain_method(
    cfg: PretrainConfig, session: Session, kind: type[PretrainMethod] = PretrainMethod
) -> PretrainMethod:
    """The pretraining method ``kind`` (a :class:`PretrainMethod`, e.g. image MAE's) with its training set
    (``session``: the run's process group is up)."""
    if not cfg.data.manifests:
        raise ConfigError("data.manifests: empty; give at least one manifest, e.g. data.manifests=[train.csv]")
    return kind(cfg, build_dataset(cfg.data, session.output_dir, cfg.seed))


def build_pretrain_trainer(cfg: PretrainConfig, kind: type[PretrainMethod] = PretrainMethod) -> Trainer:
    """A pretraining run of method ``kind`` built on this rank (process group, model, DeepSpeed engine), ready to
    :meth:`~Trainer.fit`."""
    session = start_session(cfg)
    return build_trainer(session, build_pretrain_method(cfg, session, kind))


def export_method(cfg: PretrainConfig) -> PretrainMethod:
    """The method without data, for exporting a checkpoint offline."""
    return PretrainMethod(cfg, None)


def run_pretraining(cfg: PretrainConfig) -> RunSummary:
    """Pretrain with dual masking on DeepSpeed as configured; every rank calls this.

    Raises:
        ConfigError: a setting that only shows up against the data or the device.
        NonFiniteError: ``train.max_nonfinite_steps`` consecutive non-finite steps.
    """
    return build_pretrain_trainer(cfg).fit()
