"""The fine-tuning recipe's pieces from timm, set up for video: Mixup/CutMix, the loss, EMA; FLOPs; fp32 weights.

Videos are ``[B, C, T, H, W]``; timm's Mixup works on images ``[B, C, H, W]``, so channels and time are folded
together for it (a view, mixed in place): mixup blends whole clips, cutmix cuts the same box through every frame.
"""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn

from videomae.config import FinetuneTrainConfig
from videomae.engine.deepspeed_setup import consolidated_fp32_state_dict, full_fp32_params
from videomae.engine.ds_engine import TrainingEngine
from videomae.models.flops import transformer_forward_flops

__all__ = [
    "build_criterion",
    "build_mixup",
    "classifier_forward_flops",
    "classifier_train_flops",
    "current_fp32_state",
    "mix_clips",
]


def build_mixup(train: FinetuneTrainConfig, num_classes: int) -> Mixup | None:
    """timm ``Mixup`` as configured (label smoothing inside the soft targets); None when mixup and cutmix are off."""
    if not train.mixing:
        return None
    return Mixup(
        mixup_alpha=train.mixup,
        cutmix_alpha=train.cutmix,
        prob=train.mixup_prob,
        switch_prob=train.mixup_switch_prob,
        mode=train.mixup_mode,
        label_smoothing=train.smoothing,
        num_classes=num_classes,
    )


def build_criterion(train: FinetuneTrainConfig) -> nn.Module:
    """Soft-target cross-entropy with mixup/cutmix, label-smoothing cross-entropy with smoothing, else plain."""
    if train.mixing:
        return SoftTargetCrossEntropy()
    if train.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=train.smoothing)
    return nn.CrossEntropyLoss()


def mix_clips(mixup: Mixup, videos: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a batch of clips ``[B, C, T, H, W]`` (B even) -> mixed clips and soft targets ``[B, classes]``."""
    channels = videos.shape[1]
    images = rearrange(videos, "b c t h w -> b (c t) h w")  # a view: timm mixes it in place
    images, targets = mixup(images, labels)
    return rearrange(images, "b (c t) h w -> b c t h w", c=channels), targets


def classifier_train_flops(model_config: dict[str, Any]) -> int:
    """Forward + backward matmul FLOPs of one clip through a classification ViT (every token, no masking)."""
    return 3 * classifier_forward_flops(model_config)


def classifier_forward_flops(model_config: dict[str, Any]) -> int:
    """Forward matmul FLOPs of one clip through a classification ViT (every token, no masking)."""
    c = model_config
    tokens = (c["all_frames"] // c["tubelet_size"]) * (c["img_size"] // c["patch_size"]) ** 2
    patch_pixels = c.get("in_chans", 3) * c["tubelet_size"] * c["patch_size"] ** 2
    return (
        2 * tokens * patch_pixels * c["embed_dim"]
        + transformer_forward_flops(tokens, c["embed_dim"], c["depth"], c["mlp_ratio"])
        + 2 * c["embed_dim"] * c["num_classes"]
    )


def current_fp32_state(engine: TrainingEngine) -> dict[str, torch.Tensor] | None:
    """The run's fp32 weights now, without a checkpoint: on rank 0 (None elsewhere); collective under ZeRO."""
    if engine.zero_optimization_stage() == 0:
        return consolidated_fp32_state_dict(engine, "", "")
    params = full_fp32_params(engine)  # gathered from the partitions on every rank
    if engine.global_rank != 0:
        return None
    state = {k: v.detach().float().cpu().clone() for k, v in engine.module.state_dict().items()}
    state.update(params)
    return state
