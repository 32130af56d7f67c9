"""The MAE-CLIP pretraining config (``method: maeclip``): vision and text towers, masks of the two passes, the
weights of the three losses, and the zero-shot / retrieval evaluation run at the end.

Used by ``deepspeed launch/pretrain.py --config maeclip_demo [key=value ...]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from videomae.config.loading import require
from videomae.config.sections import (
    DataConfig,
    DeepSpeedConfig,
    LoggingConfig,
    RunConfig,
    TrainConfig,
    validate_run_sections,
)

__all__ = [
    "MaeClipConfig",
    "MaeClipLossConfig",
    "MaeClipMaskConfig",
    "MaeClipModelConfig",
    "TextConfig",
    "ZeroShotConfig",
    "validate_maeclip",
]


@dataclass
class MaeClipModelConfig:
    """The vision tower, its pooling, the shared embedding and the MAE decoder."""

    vision: str = "vit_base_patch16_224"
    """Registered classifier used as the vision tower (``vit_*``; built with ``num_classes=0``)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Constructor arguments of the vision tower (``img_size``, ``all_frames``, ``tubelet_size``, ``depth``...)."""
    pooling: Literal["gap", "map", "max"] = "gap"
    """Vision pooling: ``gap`` global average, ``map`` attention pooling with a learned query, ``max`` per-token MLP
    then maximum over tokens."""
    pool_num_heads: int | None = None
    """Heads of ``map`` pooling; ``None``: the vision tower's."""
    embed_dim: int = 512
    """Width of the joint image/video-text space (CLIP B/16: 512)."""
    drop_path_rate: float | None = None
    """Stochastic depth of the vision tower; ``None`` keeps the registered default."""
    decoder_embed_dim: int = 512
    """MAE decoder width (MAE: 512)."""
    decoder_depth: int = 8
    """MAE decoder blocks (MAE: 8); built only when ``loss.mae > 0``."""
    decoder_num_heads: int = 16
    """MAE decoder heads (MAE: 16)."""
    with_cp: bool = False
    """Activation checkpointing in both towers."""

    @property
    def name(self) -> str:
        """The vision tower's registered name (what the launch preflight builds and checks the clips against)."""
        return self.vision

    def create_kwargs(self) -> dict[str, Any]:
        """The vision tower's ``create_model`` arguments besides its name (as other stages' model sections)."""
        return self.vision_overrides()

    def vision_overrides(self) -> dict[str, Any]:
        """Constructor arguments of the vision tower besides its name."""
        kwargs = dict(self.overrides)
        if self.drop_path_rate is not None:
            kwargs["drop_path_rate"] = self.drop_path_rate
        return kwargs


@dataclass
class TextConfig:
    """The text tower and its tokenizer (S: 384 wide, 6 heads; B: 512 wide, 8 heads; both 12 deep)."""

    tokenizer: str | None = None
    """``tokenizers`` JSON file (e.g. a CLIP ``tokenizer.json``); ``None``: the packaged byte-level BPE (4096)."""
    context_length: int = 77
    """Tokens per caption, start and end included (CLIP: 77); longer captions are cut before their end token (the
    run logs how many training captions that cuts, and the length that keeps them whole)."""
    width: int = 512
    """Token width."""
    depth: int = 12
    """Blocks."""
    num_heads: int = 8
    """Attention heads."""
    causal: bool = True
    """Causal attention as CLIP; ``false``: bidirectional (every token sees the whole caption)."""


@dataclass
class MaeClipMaskConfig:
    """Masks of the two passes and of the captions."""

    type: Literal["tube", "random"] = "random"
    """Vision masks: ``random`` per token (MAE, images) or ``tube`` (one spatial mask over time, VideoMAE)."""
    ratio: float = 0.0
    """Tokens dropped in the contrastive pass (0: the whole clip; 0.5 / 0.75: FLIP)."""
    mae_ratio: float = 0.75
    """Tokens hidden in the generative pass, whose pixels the MAE decoder predicts (MAE: 0.75; VideoMAE: 0.9)."""
    mlm_prob: float = 0.15
    """Share of caption tokens chosen for the masked-language loss (BERT: 0.15; 80% mask, 10% random, 10% kept)."""


@dataclass
class MaeClipLossConfig:
    """Weights of the three terms; 0 skips a term's pass (CLIP alone: ``mae=0, mlm=0``)."""

    clip: float = 1.0
    """Symmetric image/video-text InfoNCE over the global batch."""
    mae: float = 0.0
    """Masked-pixel MSE of the MAE decoder."""
    mlm: float = 0.0
    """Masked-language cross-entropy on masked captions."""
    normalize_target: bool = True
    """MAE targets: per-patch normalised pixels (as MAE / VideoMAE)."""


@dataclass
class ZeroShotConfig:
    """Zero-shot classification and retrieval, at the end of training (``zero_shot.json``) and in
    ``videomae zero-shot``."""

    val: str | None = None
    """Captioned, labelled manifest to evaluate on (``None``: no evaluation at the end)."""
    data_root: str | None = None
    """Prefix of relative paths in ``val``; ``None``: ``data.data_root``."""
    templates: list[str] = field(default_factory=lambda: ["a video of a {}.", "a photo of a {}."])
    """Prompt templates, ``{}`` replaced by the class name; a class's text embedding is their mean."""
    underscores_as_spaces: bool = True
    """Class names' underscores become spaces in prompts (``square_up`` -> ``square up``)."""
    batch_size: int = 16
    """Clips per forward pass."""
    compare_init: bool = False
    """Also evaluate the weights the run started from (fresh runs; kept on CPU meanwhile): ``init`` in the file."""


@dataclass
class MaeClipTrainConfig(TrainConfig):
    """The training loop (the shared fields); CLIP's AdamW: betas (0.9, 0.98), eps 1e-6, weight decay 0.2."""


@dataclass
class MaeClipConfig(RunConfig):
    """A MAE-CLIP pretraining run."""

    method: str = "maeclip"
    """The pretraining method (``videomae.config.methods.METHODS``): it picks the config class and the run."""
    output_dir: str = "runs/maeclip"
    """Run folder: config, metrics, checkpoints, ``export/`` (vision tower + whole model), ``zero_shot.json``."""
    data: DataConfig = field(default_factory=DataConfig)
    model: MaeClipModelConfig = field(default_factory=MaeClipModelConfig)
    text: TextConfig = field(default_factory=TextConfig)
    mask: MaeClipMaskConfig = field(default_factory=MaeClipMaskConfig)
    loss: MaeClipLossConfig = field(default_factory=MaeClipLossConfig)
    train: MaeClipTrainConfig = field(default_factory=MaeClipTrainConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    zero_shot: ZeroShotConfig = field(default_factory=ZeroShotConfig)

    def validate(self) -> None:
        """Range checks that types alone cannot express (see :func:`validate_maeclip`)."""
        validate_maeclip(self)


def validate_maeclip(cfg: MaeClipConfig) -> None:
    """Range checks of a MAE-CLIP config.

    Raises:
        ConfigError: naming the dotted key and the allowed values.
    """
    require(cfg.method == "maeclip", "method", "'maeclip' for a MaeClipConfig", cfg.method)
    validate_run_sections(cfg)
    m, t, k, w, z = cfg.model, cfg.text, cfg.mask, cfg.loss, cfg.zero_shot
    for key, value in [
        ("model.embed_dim", m.embed_dim),
        ("model.decoder_embed_dim", m.decoder_embed_dim),
        ("model.decoder_depth", m.decoder_depth),
        ("model.decoder_num_heads", m.decoder_num_heads),
        ("text.width", t.width),
        ("text.depth", t.depth),
        ("text.num_heads", t.num_heads),
        ("zero_shot.batch_size", z.batch_size),
    ]:
        require(value >= 1, key, "an integer >= 1", value)
    if m.pool_num_heads is not None:
        require(m.pool_num_heads >= 1, "model.pool_num_heads", "an integer >= 1 or null", m.pool_num_heads)
    if m.drop_path_rate is not None:
        ok = 0.0 <= m.drop_path_rate < 1.0
        require(ok, "model.drop_path_rate", "null or a number in [0, 1)", m.drop_path_rate)
    require(t.width % t.num_heads == 0, "text.width", f"a multiple of text.num_heads ({t.num_heads})", t.width)
    require(t.context_length >= 3, "text.context_length", "an integer >= 3 (<sot>, a token, <eot>)", t.context_length)
    require(0.0 <= k.ratio < 1.0, "mask.ratio", "a number in [0, 1) (0: no FLIP masking)", k.ratio)
    require(0.0 < k.mae_ratio < 1.0, "mask.mae_ratio", "a number in (0, 1)", k.mae_ratio)
    require(0.0 < k.mlm_prob < 1.0, "mask.mlm_prob", "a number in (0, 1)", k.mlm_prob)
    for key, value in [("loss.clip", w.clip), ("loss.mae", w.mae), ("loss.mlm", w.mlm)]:
        require(value >= 0, key, "a weight >= 0 (0 skips the term)", value)
    require(w.clip + w.mae + w.mlm > 0, "loss.clip", "a positive weight on at least one term", (w.clip, w.mae, w.mlm))
    require(bool(z.templates), "zero_shot.templates", "at least one prompt template", z.templates)
    for i, template in enumerate(z.templates):
        require(template.count("{}") == 1, f"zero_shot.templates[{i}]", "a text with one '{}'", template)
