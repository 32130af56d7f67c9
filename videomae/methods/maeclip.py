"""MAE-CLIP as a method: image/video-text contrastive learning over the global batch, plus an MAE decoder on
masked clips and a masked-language head on masked captions, weighted by ``loss.clip``, ``loss.mae``, ``loss.mlm``.

One step runs two passes through the model (one engine call):

* contrastive: the clips (FLIP-masked when ``mask.ratio > 0``) and their captions -> embeddings -> symmetric
  InfoNCE against every rank's pairs;
* generative: the clips masked at ``mask.mae_ratio`` -> MAE decoder -> masked-pixel MSE, and the captions
  masked BERT-style -> masked-language cross-entropy.

A term whose weight is 0 skips its pass (and its decoder / head is not built). Every training row needs a caption
(the manifest's ``text`` column): rows without one are refused when the method is built, naming them.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import torch
from torch import nn

from videomae.checkpoint import load_pretrained
from videomae.checkpoint_maeclip import MAECLIP_EXPORT, export_maeclip, load_maeclip
from videomae.config import ConfigError, ManifestSource, config_to_dict
from videomae.config.maeclip import MaeClipConfig
from videomae.data import HybridVideoDataset
from videomae.engine import dist
from videomae.engine.data_setup import hybrid_dataset
from videomae.engine.deepspeed_setup import whole_parameters
from videomae.engine.method import LossOutput, Method, StepContext
from videomae.engine.optim import param_groups
from videomae.engine.session import Session, start_session
from videomae.engine.trainer import RunSummary, Trainer, build_trainer
from videomae.evaluation.zero_shot import zero_shot_report
from videomae.masking import random_mask, tube_mask
from videomae.models.maeclip import MaeClipModel
from videomae.objectives import MaskedPixelLoss
from videomae.objectives.clip_losses import info_nce, mask_caption_tokens, mlm_loss
from videomae.text import CaptionTokenizer, load_tokenizer

__all__ = [
    "MaeClipMethod",
    "build_maeclip_method",
    "build_maeclip_model",
    "build_maeclip_trainer",
    "check_captions",
    "warn_cut_captions",
    "export_method",
    "run_maeclip",
]

log = logging.getLogger(__name__)
ZERO_SHOT_FILE = "zero_shot.json"


def build_maeclip_model(cfg: MaeClipConfig, tokenizer: CaptionTokenizer) -> MaeClipModel:
    """The model ``cfg`` describes, its text vocabulary and special ids taken from ``tokenizer``."""
    m, t = cfg.model, cfg.text
    return MaeClipModel(
        vision=m.vision, vision_overrides=m.vision_overrides(), embed_dim=m.embed_dim, pooling=m.pooling,
        pool_num_heads=m.pool_num_heads, vocab_size=tokenizer.vocab_size, context_length=t.context_length,
        text_width=t.width, text_depth=t.depth, text_num_heads=t.num_heads, text_causal=t.causal,
        pad_id=tokenizer.pad_id, eot_id=tokenizer.eot_id, decoder_embed_dim=m.decoder_embed_dim,
        decoder_depth=m.decoder_depth if cfg.loss.mae > 0 else 0, decoder_num_heads=m.decoder_num_heads,
        mlm_head=cfg.loss.mlm > 0, with_cp=m.with_cp,
    )  # fmt: skip


def check_captions(dataset: HybridVideoDataset, key: str) -> None:
    """Refuse a dataset with rows whose caption is empty, naming the first few (manifest and line) and the fix.

    Raises:
        ConfigError: some row has no caption.
    """
    missing = [row for row in dataset.rows if not (row.text or "").strip()]
    if missing:
        where = ", ".join(f"{r.manifest}:{r.line}" for r in missing[:5])
        raise ConfigError(
            f"{key}: {len(missing)} of {len(dataset)} rows have no caption (e.g. {where}); MAE-CLIP needs a `text` "
            f"column on every row: add captions (`videomae manifest build --captions ...`) or drop those rows"
        )


class MaeClipMethod(Method):
    """MAE-CLIP pretraining (see the module docstring).

    Args:
        cfg: the resolved config.
        train_set: the captioned training set (None: batches come from elsewhere).
        tokenizer: captions -> token ids.
    """

    name = "maeclip"

    def __init__(self, cfg: MaeClipConfig, train_set: HybridVideoDataset | None, tokenizer: CaptionTokenizer) -> None:
        self.cfg, self.train_set, self.tokenizer = cfg, train_set, tokenizer
        self.ctx: StepContext | None = None
        self.pixel_loss: MaskedPixelLoss | None = None
        self.init_state: dict[str, torch.Tensor] | None = None
        self.final_model: MaeClipModel | None = None

    def build_model(self) -> nn.Module:
        return build_maeclip_model(self.cfg, self.tokenizer)

    def prepare_model(self, model: nn.Module, fresh: bool) -> None:
        if not fresh:
            return
        with whole_parameters(model):
            if self.cfg.init is not None:
                log.info("vision tower from %s: %s", self.cfg.init, load_pretrained(model.vision, self.cfg.init))
            if self.cfg.zero_shot.compare_init and dist.is_main():
                self.init_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    def param_groups(self, model: nn.Module) -> list[dict]:
        return param_groups(model, self.cfg.train.weight_decay, model.no_weight_decay())

    def start(self, ctx: StepContext) -> None:
        self.ctx = ctx
        model = ctx.engine.module
        self.pixel_loss = MaskedPixelLoss(model.patch_size, model.tubelet_size, self.cfg.loss.normalize_target)

    def _vision_mask(self, batch_size: int, ratio: float) -> torch.Tensor:
        make = tube_mask if self.cfg.mask.type == "tube" else random_mask
        grid = self.ctx.engine.module.grid_size
        return make(batch_size, grid, ratio, generator=self.ctx.generator, device=self.ctx.device)  # (B, N)

    def loss(self, batch: dict[str, Any]) -> LossOutput:
        cfg, ctx, w = self.cfg, self.ctx, self.cfg.loss
        videos = batch["video"].to(ctx.device, non_blocking=True)  # (B, C, T, H, W)
        tokens = self.tokenizer(batch["text"]).to(ctx.device, non_blocking=True)  # (B, L)
        batch_size = videos.shape[0]
        # the contrastive pass: the pair (FLIP: the clip with mask.ratio of its tokens dropped)
        clip_tokens = tokens if w.clip > 0 else None
        clip_mask = self._vision_mask(batch_size, cfg.mask.ratio) if w.clip > 0 and cfg.mask.ratio > 0 else None
        # the generative pass: the clip masked for the MAE decoder, the caption masked for the MLM head
        mae_mask = self._vision_mask(batch_size, cfg.mask.mae_ratio) if w.mae > 0 else None
        mlm_inputs = mlm_targets = None
        if w.mlm > 0:
            t = self.tokenizer
            mlm_inputs, mlm_targets = mask_caption_tokens(
                tokens, sorted(t.special_ids), t.mask_id, t.vocab_size, ctx.generator, cfg.mask.mlm_prob
            )
        out = ctx.engine(videos.to(ctx.compute_dtype), clip_tokens, clip_mask, mae_mask, mlm_inputs)
        terms: dict[str, tuple[float, torch.Tensor]] = {}
        metrics: dict[str, torch.Tensor] = {}
        if clip_tokens is not None:
            video_all = dist.gather_rows_with_grad(out["video"].float())
            text_all = dist.gather_rows_with_grad(out["text"].float())
            offset = dist.rank() * out["video"].shape[0]
            terms["loss_clip"] = (w.clip, info_nce(out["video"], out["text"], out["logit_scale"].float(),
                                                   video_all, text_all, offset))  # fmt: skip
            metrics["logit_scale"] = out["logit_scale"].detach().float()
        if mae_mask is not None:
            terms["loss_mae"] = (w.mae, self.pixel_loss(out["pixels"].float(), videos, mae_mask))
        if mlm_inputs is not None:
            terms["loss_mlm"] = (w.mlm, mlm_loss(out["mlm_logits"], mlm_targets))
        loss = sum(weight * term for weight, term in terms.values())
        metrics.update({name: term.detach() for name, (_, term) in terms.items()})
        return LossOutput(loss, metrics)

    def export_model(self, state: dict[str, torch.Tensor]) -> nn.Module:
        """The vision tower, a registered classifier (``vision.*`` weights, ``num_classes=0``), which the trainer
        writes as ``export/model.safetensors``; the whole model is kept for :meth:`finish` to write (nothing here
        may fail on rank 0 alone: the other ranks wait for the trainer's write)."""
        self.final_model = self.build_model()
        self.final_model.load_state_dict(state)
        return self.final_model.vision

    def _maeclip_metadata(self, step: int) -> dict[str, Any]:
        return {"step": step, "tokenizer": self.tokenizer.to_json(), "context_length": self.tokenizer.context_length,
                "pretrain_config": config_to_dict(self.cfg)}  # fmt: skip

    def export_metadata(self, step: int) -> dict[str, Any]:
        return {"step": step, "method": "maeclip", "whole_model": MAECLIP_EXPORT,
                "pretrain_config": config_to_dict(self.cfg)}  # fmt: skip

    def finish(self, summary: RunSummary) -> None:
        """Rank 0: the whole model to ``export/maeclip.safetensors``, then zero-shot classification and retrieval on
        ``zero_shot.val`` into ``zero_shot.json``."""
        if self.final_model is None:  # not rank 0
            return
        path = self.ctx.output_dir / "export" / MAECLIP_EXPORT
        export_maeclip(self.final_model, path, self._maeclip_metadata(summary.step))
        self.final_model = None
        log.info("exported the whole MAE-CLIP model to %s", path)
        z = self.cfg.zero_shot
        if z.val is None:
            return
        model, _ = load_maeclip(path, self.ctx.device)
        dataset = val_dataset(self.cfg)
        result: dict[str, Any] = {"step": summary.step, "val": z.val}
        result["trained"] = self._report(model, dataset)
        if self.init_state is not None:
            model.load_state_dict(self.init_state)
            result["init"] = self._report(model, dataset)
        path = self.ctx.output_dir / ZERO_SHOT_FILE
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        log.info("zero-shot top-1 %.3f (chance %.3f), video->text R@1 %.3f: %s", result["trained"]["top1"],
                 result["trained"]["chance"], result["trained"]["retrieval"]["video_to_text"]["R@1"], path)  # fmt: skip

    def _report(self, model: MaeClipModel, dataset: HybridVideoDataset) -> dict[str, Any]:
        z = self.cfg.zero_shot
        return zero_shot_report(
            model, self.tokenizer, dataset, dataset.label_names, z.templates,
            underscores_as_spaces=z.underscores_as_spaces, batch_size=z.batch_size,
        )  # fmt: skip


def val_dataset(cfg: MaeClipConfig) -> HybridVideoDataset:
    """The captioned, labelled ``zero_shot.val`` manifest, one centre view per clip."""
    z = cfg.zero_shot
    source = ManifestSource(path=z.val, data_root=z.data_root)
    dataset = hybrid_dataset([source], cfg.data, train=False, return_text=True)
    if not dataset.label_names:
        raise ConfigError(f"zero_shot.val: {z.val} names no classes; zero-shot needs class names as labels")
    check_captions(dataset, "zero_shot.val")
    return dataset


def warn_cut_captions(dataset: HybridVideoDataset, tokenizer: CaptionTokenizer, key: str) -> int:
    """Log, once, how many captions of ``dataset`` are longer than the tokenizer's context (they lose their end:
    a direction or colour named last would never reach the text tower), with the longest and the fix; -> the count.
    """
    counts = tokenizer.token_counts([row.text or "" for row in dataset.rows])
    cut = [(n, row) for n, row in zip(counts, dataset.rows, strict=True) if n > tokenizer.context_length]
    if cut:
        longest, row = max(cut, key=lambda item: item[0])
        log.warning(
            "%s: %d of %d captions are longer than text.context_length=%d tokens and are cut before their end "
            "(longest: %d tokens, %s:%d); raise text.context_length to %d to keep them whole",
            key, len(cut), len(counts), tokenizer.context_length, longest, row.manifest, row.line, longest,
        )  # fmt: skip
    return len(cut)


def build_maeclip_method(cfg: MaeClipConfig, session: Session) -> MaeClipMethod:
    """The method with its captioned training set and tokenizer (``session``: the process group is up).

    Raises:
        ConfigError: no manifests, or rows without captions.
    """
    if not cfg.data.manifests:
        raise ConfigError(
            "data.manifests: empty; give at least one captioned manifest, e.g. data.manifests=[train.csv]"
        )
    tokenizer = load_tokenizer(cfg.text.tokenizer, cfg.text.context_length)
    train_set = hybrid_dataset(
        cfg.data.manifests, cfg.data, num_sample=cfg.data.num_sample, train=True, hflip_prob=cfg.data.hflip_prob,
        run_dir=session.output_dir, seed=cfg.seed, return_text=True,
    )  # fmt: skip
    check_captions(train_set, "data.manifests")
    if dist.is_main():
        warn_cut_captions(train_set, tokenizer, "data.manifests")
    return MaeClipMethod(cfg, train_set, tokenizer)


def build_maeclip_trainer(cfg: MaeClipConfig) -> Trainer:
    """A MAE-CLIP run built on this rank (process group, model, DeepSpeed engine), ready to :meth:`~Trainer.fit`."""
    session = start_session(cfg)
    return build_trainer(session, build_maeclip_method(cfg, session))


def export_method(cfg: MaeClipConfig) -> MaeClipMethod:
    """The method without data (its tokenizer only), for exporting a checkpoint offline."""
    return MaeClipMethod(cfg, None, load_tokenizer(cfg.text.tokenizer, cfg.text.context_length))


def run_maeclip(cfg: MaeClipConfig) -> RunSummary:
    """Train MAE-CLIP on DeepSpeed as configured; every rank calls this.

    Raises:
        ConfigError: a setting that only shows up against the data (e.g. rows without captions).
    """
    return build_maeclip_trainer(cfg).fit()
