"""MoCo v3 (Chen, Xie, He 2021) as a method: a ViT encoder with projection and prediction MLPs trained by DeepSpeed,
a momentum encoder that follows it, and symmetric InfoNCE against the keys of the global batch.

Per micro-batch: the loader's two views of each video (``data.num_sample: 2``, each its own crop) get the paper's
photometric augmentation on the device (:mod:`videomae.methods.moco_views`); the query model predicts both views,
the momentum encoder projects both (no gradient, fp32 weights, the run's compute dtype through autocast), the keys
are gathered from every rank, and ``info_nce(q1, k2) + info_nce(q2, k1)`` is the loss. After each optimizer step the
momentum encoder moves towards the query encoder with the cosine momentum schedule. The export is the query
backbone alone, as a registered classifier without a head (what ``videomae probe`` and fine-tuning load).

The momentum encoder lives here, outside the DeepSpeed engine, as an fp32 module (like fine-tuning's EMA): under
bf16 the engine's module is bf16 and an EMA with ``1 - m`` down to 1e-5 would round away in bf16; it is not
trained, so DeepSpeed has nothing to do for it; and it is saved in the checkpoint's client state, restored on
resume and left out of the export.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any

import torch
from torch import nn

from videomae.checkpoint import export_weights, load_pretrained
from videomae.config import ConfigError, config_to_dict
from videomae.config.mocov3 import MocoV3Config
from videomae.data import HybridVideoDataset
from videomae.engine import dist
from videomae.engine.data_setup import build_dataset
from videomae.engine.deepspeed_setup import whole_parameters
from videomae.engine.method import LossOutput, Method, StepContext
from videomae.engine.optim import param_groups
from videomae.engine.session import Session, start_session
from videomae.engine.trainer import RunSummary, Trainer, build_trainer
from videomae.methods.finetune_recipe import classifier_forward_flops
from videomae.methods.moco_heads import (
    MocoEncoder,
    MocoV3Model,
    freeze_patch_embedding,
    momentum_at,
    update_momentum_encoder,
)
from videomae.methods.moco_views import ViewRecipe, augment_views
from videomae.models import create_model
from videomae.objectives.contrastive import symmetric_info_nce

__all__ = [
    "MOMENTUM_KEY",
    "MocoV3Method",
    "build_mocov3_method",
    "build_mocov3_trainer",
    "export_method",
    "run_mocov3",
    "view_recipes",
]

log = logging.getLogger(__name__)

MOMENTUM_KEY = "moco_momentum_encoder"
"""The checkpoint's client-state entry holding the momentum encoder's state dict."""
BACKBONE_PREFIX = "encoder.backbone."


def view_recipes(cfg: MocoV3Config) -> tuple[ViewRecipe, ViewRecipe]:
    """The photometric recipes of view 1 and view 2 from ``moco.*``."""
    m = cfg.moco
    return tuple(
        ViewRecipe(
            m.jitter_prob,
            tuple(m.jitter_strength),
            m.grayscale_prob,
            m.blur_prob[v],
            tuple(m.blur_sigma),
            m.solarize_prob[v],
        )  # fmt: skip
        for v in range(2)
    )


class MocoV3Method(Method):
    """Contrastive pretraining with a momentum encoder (MoCo v3) on images (one-frame clips) or clips.

    Args:
        cfg: the resolved config.
        session: the run's session (its device holds the momentum encoder).
        train_set: the training set (two views per video).
    """

    name = "mocov3"

    def __init__(self, cfg: MocoV3Config, session: Session | None, train_set: HybridVideoDataset | None) -> None:
        self.cfg, self.session, self.train_set = cfg, session, train_set
        self.recipes = view_recipes(cfg)
        self.momentum: MocoEncoder | None = None
        self.ctx: StepContext | None = None

    def build_backbone(self) -> nn.Module:
        """The registered classifier without a head (fresh weights)."""
        return create_model(self.cfg.model.name, **self.cfg.model.create_kwargs())

    def build_model(self) -> MocoV3Model:
        # Drawn from the run's seed, not the rank's: every rank builds the same weights (the momentum encoder is
        # copied from them before DeepSpeed would broadcast rank 0's).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            backbone = self.build_backbone()
            if self.cfg.moco.freeze_patch_embed:
                freeze_patch_embedding(backbone)
            return MocoV3Model(backbone, self.cfg.moco.mlp_dim, self.cfg.moco.proj_dim)

    def prepare_model(self, model: nn.Module, fresh: bool) -> None:
        """Load ``init`` into the backbone on a fresh run; the momentum encoder starts as an fp32 copy of the
        encoder (on resume its saved state replaces it)."""
        if fresh and self.cfg.init is not None:
            with whole_parameters(model):
                log.info("initialising from %s: %s", self.cfg.init, load_pretrained(model.backbone, self.cfg.init))
        self.momentum = copy.deepcopy(model.encoder).float().to(self.session.device).requires_grad_(False)

    def param_groups(self, model: nn.Module) -> list[dict]:
        skip = {BACKBONE_PREFIX + name for name in model.backbone.no_weight_decay()}
        return param_groups(model, self.cfg.train.weight_decay, skip)  # frozen parameters are left out

    def flops_per_clip(self, model: nn.Module) -> int:
        # query forward + backward and the momentum encoder's forward (the MLP heads are negligible)
        return 4 * classifier_forward_flops(model.backbone.model_config)

    def start(self, ctx: StepContext) -> None:
        self.ctx = ctx

    def loss(self, batch: dict[str, Any]) -> LossOutput:
        ctx = self.ctx
        videos = batch["video"].to(ctx.device, non_blocking=True)  # (B*2, C, T, H, W): [v0a, v0b, v1a, ...]
        views = videos.unflatten(0, (-1, 2)).transpose(0, 1)  # (2, B, C, T, H, W)
        if self.cfg.moco.augment:
            views = augment_views(views, self.recipes, ctx.generator)
        x = views.flatten(0, 1).to(ctx.compute_dtype)  # (2*B, ...) view-major
        q1, q2 = ctx.engine(x).float().chunk(2)  # (B, proj_dim) each
        with torch.no_grad(), self._autocast():
            k1, k2 = self.momentum(x).float().chunk(2)
        keys = dist.gather_rows(torch.stack([k1, k2], dim=1))  # (world*B, 2, proj_dim): both views in one gather
        first = dist.rank() * k1.shape[0]
        return LossOutput(symmetric_info_nce(q1, q2, keys[:, 0], keys[:, 1], first, self.cfg.moco.temperature))

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = self.ctx.compute_dtype
        if dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=dtype)

    def after_step(self, step: int) -> dict[str, float]:
        """Move the momentum encoder with the momentum of the next step (the release updates before each step's
        keys; its update before the first step is a no-op, the encoders being equal)."""
        m = momentum_at(step, self.ctx.total_steps, self.cfg.moco.momentum, self.cfg.moco.momentum_cosine)
        update_momentum_encoder(self.momentum, self.ctx.engine.module.encoder, m)
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {MOMENTUM_KEY: self.momentum.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if MOMENTUM_KEY not in state:
            raise ConfigError(f"resume: the checkpoint holds no momentum encoder ({MOMENTUM_KEY}): not a MoCo v3 run")
        self.momentum.load_state_dict(state[MOMENTUM_KEY])

    def export_model(self, state: dict[str, torch.Tensor]) -> nn.Module:
        """The query backbone alone, as its registered classifier without a head."""
        backbone = self.build_backbone()
        n = len(BACKBONE_PREFIX)
        backbone.load_state_dict({k[n:]: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)})
        return backbone

    def export_metadata(self, step: int) -> dict[str, Any]:
        return {"step": step, "method": "mocov3", "pretrain_config": config_to_dict(self.cfg)}

    def finish(self, summary: RunSummary) -> None:
        """With ``moco.export_momentum``, also export the momentum encoder's backbone."""
        if self.cfg.moco.export_momentum and dist.is_main():
            path = self.session.output_dir / "export" / "momentum.safetensors"
            export_weights(self.momentum.backbone, path, {**self.export_metadata(summary.step), "weights": "momentum"})
            log.info("exported the momentum encoder to %s", path)
        dist.barrier()


def build_mocov3_method(cfg: MocoV3Config, session: Session) -> MocoV3Method:
    """The MoCo v3 method with its training set (``session``: the run's process group is up)."""
    if not cfg.data.manifests:
        raise ConfigError("data.manifests: empty; give at least one manifest, e.g. data.manifests=[train.csv]")
    return MocoV3Method(cfg, session, build_dataset(cfg.data, session.output_dir, cfg.seed))


def build_mocov3_trainer(cfg: MocoV3Config) -> Trainer:
    """A MoCo v3 run built on this rank (process group, model, DeepSpeed engine), ready to :meth:`~Trainer.fit`."""
    session = start_session(cfg)
    return build_trainer(session, build_mocov3_method(cfg, session))


def export_method(cfg: MocoV3Config) -> MocoV3Method:
    """The method without data or session, for exporting a checkpoint offline."""
    return MocoV3Method(cfg, None, None)


def run_mocov3(cfg: MocoV3Config) -> RunSummary:
    """Pretrain with MoCo v3 on DeepSpeed as configured; every rank calls this.

    Raises:
        ConfigError: a setting that only shows up against the data or the device.
        NonFiniteError: ``train.max_nonfinite_steps`` consecutive non-finite steps.
    """
    return build_mocov3_trainer(cfg).fit()
