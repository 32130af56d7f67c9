"""The pretraining run: the VideoMAE V2 model, dual masks and masked-pixel loss plugged into the shared run."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from videomae.checkpoint import load_pretrained
from videomae.config import ConfigError, PretrainConfig, config_to_dict
from videomae.engine.data_setup import build_dataset
from videomae.engine.deepspeed_setup import whole_parameters
from videomae.engine.loop import MaskGenerator, MicroStep, train_step
from videomae.engine.optim import param_groups
from videomae.engine.pictures import ReconstructionPictures
from videomae.engine.rng_state import generator_seed
from videomae.engine.run import STOP_FILE, RunSummary, TrainingRun, find_resume_checkpoint
from videomae.engine.throughput import train_flops_per_clip
from videomae.models import create_model
from videomae.objectives import MaskedPixelLoss

__all__ = ["STOP_FILE", "PretrainRun", "RunSummary", "find_resume_checkpoint", "run_pretraining"]

log = logging.getLogger(__name__)


class PretrainRun(TrainingRun):
    """Everything one rank needs for a pretraining run, built from the config; :meth:`train` runs it."""

    stage = "pretrain"

    def __init__(self, cfg: PretrainConfig) -> None:
        if not cfg.data.manifests:
            raise ConfigError("data.manifests: empty; give at least one manifest, e.g. data.manifests=[train.csv]")
        super().__init__(cfg)

    def build_model(self) -> nn.Module:
        return create_model(self.cfg.model.name, **self.cfg.model.create_kwargs())

    def load_init(self, model: nn.Module) -> None:
        if self.cfg.init is not None:
            with whole_parameters(model):  # ZeRO-3: gathered only when there is something to load
                log.info("initialising from %s: %s", self.cfg.init, load_pretrained(model, self.cfg.init))

    def build_train_dataset(self) -> Any:
        return build_dataset(self.cfg.data, self.out, self.cfg.seed)

    def param_groups(self, model: nn.Module) -> list[dict]:
        return param_groups(model, self.cfg.train.weight_decay, model.no_weight_decay())

    def setup(self, model: nn.Module) -> None:
        cfg = self.cfg
        self.masks = MaskGenerator(cfg.mask, model.grid_size, self.device, seed=generator_seed(cfg.seed, self.env.rank))
        self.generator = self.masks.generator
        self.loss_fn = MaskedPixelLoss(model.patch_size, model.tubelet_size, cfg.loss.normalize_target)
        self.flops_per_clip = train_flops_per_clip(model, cfg.mask)
        self.pictures = None
        if cfg.train.picture_every > 0:
            clips = [self.dataset[i]["video"] for i in range(min(cfg.train.picture_clips, len(self.dataset)))]
            self.pictures = ReconstructionPictures(
                clips, model, cfg.mask, self.out / "pictures", cfg.loss.normalize_target
            )

    def micro_step(self, batch: dict, poison: bool) -> MicroStep:
        videos = batch["video"].to(self.device, non_blocking=True)  # (B*S, C, T, H, W)
        return train_step(self.engine, videos, self.masks, self.loss_fn, poison=poison)

    def on_start(self) -> None:
        if self.pictures is not None and self.state["step"] == 0:
            self.pictures.save(self.engine, 0)

    def on_step_end(self, step: int) -> dict[str, Any]:
        if self.pictures is not None and step % self.cfg.train.picture_every == 0:
            self.pictures.save(self.engine, step)
        return {}

    def export_metadata(self) -> dict[str, Any]:
        return {"step": self.state["step"], "pretrain_config": config_to_dict(self.cfg)}


def run_pretraining(cfg: PretrainConfig) -> RunSummary:
    """Pretrain with dual masking on DeepSpeed as configured; every rank calls this.

    Raises:
        ConfigError: a setting that only shows up against the data or the device.
        NonFiniteError: ``train.max_nonfinite_steps`` consecutive non-finite steps.
    """
    return PretrainRun(cfg).train()
