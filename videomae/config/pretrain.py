"""The pretraining stage's config: model, masks, loss and pictures on top of the shared sections.

Used by ``deepspeed launch/pretrain.py --config demo [key=value ...]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from videomae.config.loading import ConfigError, build_config, build_config_from, read_config_data, require
from videomae.config.methods import method_config_class, method_of
from videomae.config.sections import (
    DataConfig,
    DeepSpeedConfig,
    LoggingConfig,
    RunConfig,
    TrainConfig,
    validate_data,
    validate_deepspeed,
    validate_logging,
    validate_train,
)

__all__ = [
    "LossConfig",
    "MaskConfig",
    "ModelConfig",
    "PretrainConfig",
    "PretrainTrainConfig",
    "config_from_dict",
    "load_config",
    "validate",
]


@dataclass
class ModelConfig:
    """Which model to build; names and overrides follow the VideoMAE V2 release."""

    name: str = "pretrain_videomae_base_patch16_224"
    """Registered model name (``videomae.models.list_models()``)."""
    decoder_depth: int | None = None
    """Decoder blocks; ``None`` keeps the registered default."""
    drop_path_rate: float | None = None
    """Stochastic depth rate of the encoder; ``None`` keeps the registered default."""
    with_cp: bool = False
    """Activation (gradient) checkpointing in every block: less memory, ~30% more compute."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Further constructor arguments passed to ``create_model`` (``img_size``, ``all_frames``, ``encoder_depth``...)."""

    def create_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``videomae.models.create_model`` besides the name."""
        kwargs: dict[str, Any] = {"with_cp": self.with_cp}
        if self.decoder_depth is not None:
            kwargs["decoder_depth"] = self.decoder_depth
        if self.drop_path_rate is not None:
            kwargs["drop_path_rate"] = self.drop_path_rate
        kwargs.update(self.overrides)
        return kwargs


@dataclass
class MaskConfig:
    """Encoder and decoder masking (VideoMAE V2 dual masking)."""

    type: Literal["tube", "random"] = "tube"
    """Encoder mask: ``tube`` (one spatial mask repeated over time) or ``random`` (per token)."""
    ratio: float = 0.9
    """Fraction of tokens hidden from the encoder."""
    decoder_type: Literal["run_cell", "none"] = "run_cell"
    """Decoder mask: ``run_cell`` (running cell, VideoMAE V2) or ``none`` (decode every hidden token)."""
    decoder_ratio: float = 0.5
    """Fraction of tokens dropped by the decoder (running cell supports 0.5 and 0.75 and 0.25 patterns)."""


@dataclass
class LossConfig:
    """The masked-pixel reconstruction loss."""

    normalize_target: bool = True
    """Regress per-patch normalised pixels (mean/std over each token's pixels per channel), as VideoMAE does."""


@dataclass
class PretrainTrainConfig(TrainConfig):
    """The training loop of pretraining: the shared fields plus reconstruction pictures."""

    picture_every: int = 0
    """Save a reconstruction PNG every this many steps (0: never)."""
    picture_clips: int = 2
    """Clips shown in each reconstruction picture."""


@dataclass
class PretrainConfig(RunConfig):
    """A pretraining run."""

    method: str = "videomae"
    """The pretraining method (``videomae.config.methods.METHODS``): it picks the config class and the run."""
    output_dir: str = "runs/pretrain"
    """Run folder: resolved config, metrics, TensorBoard events, checkpoints, pictures, bad-sample list."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: PretrainTrainConfig = field(default_factory=PretrainTrainConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def validate(self) -> None:
        """Range checks that types alone cannot express (see :func:`validate`)."""
        validate(self)


def validate(cfg: PretrainConfig) -> None:
    """Range checks of a pretraining config that types alone cannot express.

    Raises:
        ConfigError: naming the dotted key and the allowed values.
    """
    require(cfg.method == type(cfg).method, "method", f"{type(cfg).method!r} for a {type(cfg).__name__}", cfg.method)
    validate_data(cfg.data)
    validate_train(cfg.train)
    validate_deepspeed(cfg.deepspeed, cfg.train.compile)
    validate_logging(cfg.logging)
    require(cfg.train.picture_clips >= 1, "train.picture_clips", "an integer >= 1", cfg.train.picture_clips)
    require(cfg.train.picture_every >= 0, "train.picture_every", "an integer >= 0 (0: never)", cfg.train.picture_every)
    if cfg.model.decoder_depth is not None:
        require(cfg.model.decoder_depth >= 1, "model.decoder_depth", "an integer >= 1 or null", cfg.model.decoder_depth)
    if cfg.model.drop_path_rate is not None:
        ok = 0.0 <= cfg.model.drop_path_rate < 1.0
        require(ok, "model.drop_path_rate", "null or a number in [0, 1)", cfg.model.drop_path_rate)
    m = cfg.mask
    require(0.0 < m.ratio < 1.0, "mask.ratio", "a number in (0, 1)", m.ratio)
    if m.decoder_type == "run_cell":
        ratio_ok = m.decoder_ratio in (0.25, 0.5, 0.75)
        require(ratio_ok, "mask.decoder_ratio", "0.25, 0.5 or 0.75 (run_cell)", m.decoder_ratio)


def config_from_dict(data: dict[str, Any], kind: type = PretrainConfig) -> Any:
    """Build and validate a config (a :class:`PretrainConfig` unless ``kind`` says otherwise) from nested mappings.

    Raises:
        ConfigError: unknown key, wrong type or value out of range; the message starts with the dotted key.
    """
    return build_config(kind, data)


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), kind: type | None = None) -> Any:
    """Load a pretraining config file (or the defaults when ``path`` is None) and apply dotted overrides.

    Args:
        path: the YAML file.
        overrides: ``dotted.key=value`` strings, later ones winning.
        kind: the config class; default: the class of the config's ``method`` (:mod:`videomae.config.methods`:
            :class:`PretrainConfig` for ``videomae``).

    Raises:
        ConfigError: file unreadable or invalid, unknown method or key, bad type or value (the message names the
            key).
    """
    data = read_config_data(path, overrides)
    if kind is None:
        try:
            kind = method_config_class(method_of(data))
        except ConfigError as err:
            raise ConfigError(f"{err} (in {path} or the overrides)" if path is not None else str(err)) from None
    return build_config_from(kind, data, path)
