"""The image MAE pretraining config (``method: mae_image``): the pretraining keys with MAE's defaults for images.

Images are one-frame clips (``data.num_frames: 1``) through an image MAE model (``pretrain_mae_*``), hidden by MAE's
per-sample random mask (``mask.type: random``, 75%) with every hidden patch decoded (``mask.decoder_type: none``).
Settings that mean nothing for images are refused with the key and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from videomae.config.loading import require
from videomae.config.pretrain import MaskConfig, ModelConfig, PretrainConfig, validate
from videomae.config.sections import DataConfig

__all__ = ["ImageMAEConfig", "ImageMAEDataConfig", "ImageMAEMaskConfig", "ImageMAEModelConfig", "validate_image_mae"]

IMAGE_MAE_PREFIX = "pretrain_mae_"
"""Registered image MAE models start with this (``videomae.models.list_models("pretrain_mae_")``)."""


@dataclass
class ImageMAEModelConfig(ModelConfig):
    """Which image MAE model to build."""

    name: str = "pretrain_mae_base_patch16_224"
    """Registered image MAE model (``videomae.models.list_models("pretrain_mae_")``)."""


@dataclass
class ImageMAEMaskConfig(MaskConfig):
    """MAE's mask: per-sample random, every hidden patch decoded."""

    type: Literal["tube", "random"] = "random"
    """Encoder mask: ``random`` (MAE's per-sample shuffle; ``tube`` is refused: an image has one frame)."""
    ratio: float = 0.75
    """Fraction of patches hidden from the encoder (MAE: 0.75)."""
    decoder_type: Literal["run_cell", "none"] = "none"
    """Decoder mask: ``none`` (MAE decodes every hidden patch; ``run_cell`` is refused)."""


@dataclass
class ImageMAEDataConfig(DataConfig):
    """Training images: the manifests' files as one-frame clips."""

    num_frames: int = 1
    """Frames per clip: 1 (an image file, or one frame of a video)."""
    sampling_rate: int = 1
    """Temporal stride between sampled frames (no meaning for one frame)."""
    num_sample: int = 1
    """Augmented views drawn from each decoded image (MAE: 1)."""
    hflip_prob: float = 0.5
    """Probability of a horizontal flip per image (MAE's ``RandomHorizontalFlip``)."""


@dataclass
class ImageMAEConfig(PretrainConfig):
    """An image MAE pretraining run."""

    method: str = "mae_image"
    """The pretraining method (``videomae.config.methods.METHODS``): ``mae_image`` for this config."""
    output_dir: str = "runs/mae_image"
    """Run folder: resolved config, metrics, TensorBoard events, checkpoints, bad-sample list."""
    data: ImageMAEDataConfig = field(default_factory=ImageMAEDataConfig)
    model: ImageMAEModelConfig = field(default_factory=ImageMAEModelConfig)
    mask: ImageMAEMaskConfig = field(default_factory=ImageMAEMaskConfig)

    def validate(self) -> None:
        """The pretraining checks, then those of images (see :func:`validate_image_mae`)."""
        validate(self)
        validate_image_mae(self)


def validate_image_mae(cfg: ImageMAEConfig) -> None:
    """What makes no sense for image MAE.

    Raises:
        ConfigError: naming the dotted key and the allowed values.
    """
    one_frame = "1 (image MAE trains on images: one-frame clips)"
    require(cfg.data.num_frames == 1, "data.num_frames", one_frame, cfg.data.num_frames)
    for i, src in enumerate(cfg.data.manifests):
        require(src.num_frames in (None, 1), f"data.manifests[{i}].num_frames", f"null or {one_frame}", src.num_frames)
    require(
        cfg.model.name.startswith(IMAGE_MAE_PREFIX), "model.name", f"an image MAE model ({IMAGE_MAE_PREFIX}*)",
        cfg.model.name,
    )  # fmt: skip
    require(cfg.mask.type == "random", "mask.type", "random (MAE's per-sample shuffle; an image has one frame)",
            cfg.mask.type)  # fmt: skip
    require(cfg.mask.decoder_type == "none", "mask.decoder_type", "none (MAE decodes every hidden patch)",
            cfg.mask.decoder_type)  # fmt: skip
    pictures = (
        "0: reconstruction pictures show VideoMAE's per-channel target, and MAE's normalises each patch over all "
        "its channels at once"
    )
    require(cfg.train.picture_every == 0, "train.picture_every", pictures, cfg.train.picture_every)
