"""The MoCo v3 pretraining config (``method: mocov3``): a ViT classifier as the encoder, the MoCo heads, the
momentum encoder's schedule and the views' augmentation, on the shared data/train/DeepSpeed sections.

Used by ``deepspeed launch/pretrain.py --config mocov3_demo [key=value ...]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from videomae.config.loading import require
from videomae.config.sections import (
    DataConfig,
    DeepSpeedConfig,
    LoggingConfig,
    RunConfig,
    TrainConfig,
    validate_run_sections,
)

__all__ = ["MocoConfig", "MocoDataConfig", "MocoModelConfig", "MocoV3Config", "validate"]


@dataclass
class MocoDataConfig(DataConfig):
    """Training data of MoCo v3: the shared data keys, with two views per decoded video."""

    num_sample: int = 2
    """Views per decoded video: MoCo v3 takes exactly 2 (each with its own crop and flip), batched as
    ``[v0a, v0b, v1a, ...]``."""
    hflip_prob: float = 0.5
    """Probability of a horizontal flip per view (the release flips with 0.5)."""


@dataclass
class MocoModelConfig:
    """The encoder: a registered ViT classifier built without a head (``num_classes=0``), whose pooled feature
    (class token of image ViTs, mean of the tokens of video ViTs) feeds the projection MLP."""

    name: str = "vit_base_patch16_224"
    """Registered classifier name (``videomae.models.list_models()``), e.g. ``vit_base_patch16_224``."""
    drop_path_rate: float | None = None
    """Stochastic depth rate of the encoder; ``None`` keeps the registered default."""
    with_cp: bool = False
    """Activation (gradient) checkpointing in every block: less memory, ~30% more compute."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Further constructor arguments passed to ``create_model`` (``img_size``, ``all_frames``, ``depth``...)."""

    def create_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``videomae.models.create_model`` besides the name (an identity head)."""
        kwargs: dict[str, Any] = {"with_cp": self.with_cp, "num_classes": 0}
        if self.drop_path_rate is not None:
            kwargs["drop_path_rate"] = self.drop_path_rate
        kwargs.update(self.overrides)
        return kwargs


@dataclass
class MocoConfig:
    """MoCo v3's own settings (release defaults for ViT)."""

    temperature: float = 0.2
    """InfoNCE temperature tau (release: 0.2 for ViT, 1.0 for ResNet); the loss is scaled by 2 tau."""
    momentum: float = 0.99
    """Momentum m0 of the key encoder's update (release: 0.99 for ViT)."""
    momentum_cosine: bool = True
    """Raise the momentum from ``momentum`` to 1 over the run, ``1 - (1 - m0) (cos(pi step / steps) + 1) / 2``
    (the release's ``--moco-m-cos``); false: constant."""
    proj_dim: int = 256
    """Output width of the projection and prediction MLPs."""
    mlp_dim: int = 4096
    """Hidden width of the projection (3 layers) and prediction (2 layers) MLPs."""
    freeze_patch_embed: bool = True
    """The frozen random patch projection: the patch embedding is drawn Xavier-uniform (as a Linear over
    ``C * tubelet * p * p`` inputs, zero bias) and never trained (the paper's stability trick)."""
    export_momentum: bool = False
    """Also export the momentum encoder's backbone as ``export/momentum.safetensors``."""
    augment: bool = True
    """Apply the photometric view augmentation below on the device (false: the loader's crops and flips only)."""
    jitter_prob: float = 0.8
    """Probability of colour jitter per view."""
    jitter_strength: list[float] = field(default_factory=lambda: [0.4, 0.4, 0.2, 0.1])
    """Brightness, contrast, saturation, hue strengths of the colour jitter (torchvision ``ColorJitter``)."""
    grayscale_prob: float = 0.2
    """Probability of converting a view to grayscale."""
    blur_prob: list[float] = field(default_factory=lambda: [1.0, 0.1])
    """Probability of Gaussian blur on view 1 and on view 2 (the paper's asymmetric recipe)."""
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    """Range of the blur's sigma in pixels; the kernel is about a tenth of the image side (23 px at 224)."""
    solarize_prob: list[float] = field(default_factory=lambda: [0.0, 0.2])
    """Probability of solarisation (threshold 0.5) on view 1 and on view 2."""


@dataclass
class MocoV3Config(RunConfig):
    """A MoCo v3 pretraining run."""

    method: str = "mocov3"
    """The pretraining method (``videomae.config.methods.METHODS``): it picks the config class and the run."""
    output_dir: str = "runs/mocov3"
    """Run folder: resolved config, metrics, TensorBoard events, checkpoints, bad-sample list, export."""
    data: MocoDataConfig = field(default_factory=MocoDataConfig)
    model: MocoModelConfig = field(default_factory=MocoModelConfig)
    moco: MocoConfig = field(default_factory=MocoConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def validate(self) -> None:
        """Range checks that types alone cannot express (see :func:`validate`)."""
        validate(self)


def _probability(key: str, value: float) -> None:
    require(0.0 <= value <= 1.0, key, "a probability in [0, 1]", value)


def validate(cfg: MocoV3Config) -> None:
    """Range checks of a MoCo v3 config.

    Raises:
        ConfigError: naming the dotted key and the allowed values.
    """
    require(cfg.method == type(cfg).method, "method", f"{type(cfg).method!r} for a {type(cfg).__name__}", cfg.method)
    validate_run_sections(cfg)
    two = "2: MoCo v3 contrasts two views of each video (its crops are drawn independently)"
    require(cfg.data.num_sample == 2, "data.num_sample", two, cfg.data.num_sample)
    # The momentum encoder is a whole fp32 copy per rank, updated from the query encoder's whole weights; ZeRO-3
    # leaves each rank a shard of those, so the update would need a gather of every weight at every step.
    zero3 = "0, 1 or 2 (ZeRO-3 partitions the query encoder whose weights the whole momentum encoder follows)"
    require(cfg.deepspeed.zero_stage != 3, "deepspeed.zero_stage", zero3, cfg.deepspeed.zero_stage)
    require("num_classes" not in cfg.model.overrides, "model.overrides.num_classes", "unset (the encoder has no "
            "head: its pooled feature feeds the projector)", cfg.model.overrides.get("num_classes"))  # fmt: skip
    if cfg.model.drop_path_rate is not None:
        ok = 0.0 <= cfg.model.drop_path_rate < 1.0
        require(ok, "model.drop_path_rate", "null or a number in [0, 1)", cfg.model.drop_path_rate)
    m = cfg.moco
    require(m.temperature > 0, "moco.temperature", "a number > 0", m.temperature)
    require(0.0 <= m.momentum <= 1.0, "moco.momentum", "a number in [0, 1]", m.momentum)
    require(m.proj_dim >= 1, "moco.proj_dim", "an integer >= 1", m.proj_dim)
    require(m.mlp_dim >= 1, "moco.mlp_dim", "an integer >= 1", m.mlp_dim)
    _probability("moco.jitter_prob", m.jitter_prob)
    _probability("moco.grayscale_prob", m.grayscale_prob)
    s = m.jitter_strength
    strengths_ok = len(s) == 4 and all(v >= 0 for v in s) and s[3] <= 0.5
    allowed = "4 numbers >= 0: brightness, contrast, saturation, hue (hue <= 0.5)"
    require(strengths_ok, "moco.jitter_strength", allowed, m.jitter_strength)
    for key in ("blur_prob", "solarize_prob"):
        values = getattr(m, key)
        require(len(values) == 2, f"moco.{key}", "two probabilities: view 1, view 2", values)
        for i, value in enumerate(values):
            _probability(f"moco.{key}[{i}]", value)
    sigma_ok = len(m.blur_sigma) == 2 and 0 < m.blur_sigma[0] <= m.blur_sigma[1]
    require(sigma_ok, "moco.blur_sigma", "[low, high] with 0 < low <= high", m.blur_sigma)
