"""Which pretraining method a config runs: the top-level ``method`` key picks the config class and the run.

Every pretraining recipe is started the same way (``deepspeed launch/pretrain.py --config NAME``); the method is
a key of the config, not a script::

    method: mocov3        # videomae (default) | mae_image | mocov3 | maeclip

The table names modules as strings so that loading a config imports only that method's config class, never its
model or DeepSpeed: config errors still come before anything heavy.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from videomae.config.loading import ConfigError

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "MethodEntry",
    "method_config_class",
    "method_entry",
    "method_export",
    "method_of",
    "method_run",
    "method_trainer",
]

DEFAULT_METHOD = "videomae"


@dataclass(frozen=True)
class MethodEntry:
    """A pretraining method: where its config class and its run function live (``"module:name"``)."""

    config: str
    """The config dataclass (with a ``method`` field whose default is the method's name)."""
    run: str
    """``cfg -> RunSummary``: trains on this rank (every rank calls it)."""
    trainer: str
    """``cfg -> Trainer``: the run built on this rank, not yet fitted (``videomae doctor`` steps it)."""
    exporter: str
    """``cfg -> Method``: the method without data or process group, enough for its ``export_model`` and
    ``export_metadata`` (``videomae export`` of a checkpoint goes through them, as the run's own export does)."""
    summary: str
    """One line for ``--help`` and error messages."""


METHODS: dict[str, MethodEntry] = {
    "videomae": MethodEntry(
        "videomae.config.pretrain:PretrainConfig", "videomae.methods.pretrain:run_pretraining",
        "videomae.methods.pretrain:build_pretrain_trainer", "videomae.methods.pretrain:export_method",
        "VideoMAE V2: tube masking, running-cell decoder masking, normalised-pixel loss (video)",
    ),
    "mae_image": MethodEntry(
        "videomae.config.mae_image:ImageMAEConfig", "videomae.methods.mae_image:run_image_mae",
        "videomae.methods.mae_image:build_image_mae_trainer", "videomae.methods.mae_image:export_method",
        "MAE (He et al.): random 75% masking of image patches, class token, normalised-pixel loss",
    ),
    "mocov3": MethodEntry(
        "videomae.config.mocov3:MocoV3Config", "videomae.methods.mocov3:run_mocov3",
        "videomae.methods.mocov3:build_mocov3_trainer", "videomae.methods.mocov3:export_method",
        "MoCo v3 (Chen, Xie, He): momentum encoder, symmetric InfoNCE over the global batch (images or clips)",
    ),
    "maeclip": MethodEntry(
        "videomae.config.maeclip:MaeClipConfig", "videomae.methods.maeclip:run_maeclip",
        "videomae.methods.maeclip:build_maeclip_trainer", "videomae.methods.maeclip:export_method",
        "MAE-CLIP (Weers et al.): image/video-text contrastive + masked pixels + masked language",
    ),
}  # fmt: skip


def method_of(data: dict[str, Any]) -> str:
    """The method a raw config mapping asks for (``method`` key, default ``videomae``).

    Raises:
        ConfigError: the key is not one of :data:`METHODS`.
    """
    name = data.get("method", DEFAULT_METHOD)
    if not isinstance(name, str) or name not in METHODS:
        raise ConfigError(f"method: {name!r} is not a pretraining method; choose one of {', '.join(METHODS)}")
    return name


def method_entry(name: str) -> MethodEntry:
    """The table entry of method ``name``.

    Raises:
        ConfigError: unknown method.
    """
    return METHODS[method_of({"method": name})]


def _resolve(path: str, what: str, name: str) -> Any:
    module, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:  # a method listed but not installed in this build
        raise ConfigError(f"method: {name!r}: its {what} ({path}) cannot be loaded: {err}") from None


def method_config_class(name: str) -> type:
    """The config dataclass of method ``name`` (imported on first use).

    Raises:
        ConfigError: unknown method, or its module is missing.
    """
    return _resolve(method_entry(name).config, "config class", name)


def method_run(name: str) -> Any:
    """The run function of method ``name`` (imported on first use; it imports DeepSpeed)."""
    return _resolve(method_entry(name).run, "run function", name)


def method_trainer(name: str) -> Any:
    """The trainer builder of method ``name`` (``cfg -> Trainer``; imported on first use)."""
    return _resolve(method_entry(name).trainer, "trainer builder", name)


def method_export(name: str) -> Any:
    """The export builder of method ``name`` (``cfg -> Method`` without data; imported on first use)."""
    return _resolve(method_entry(name).exporter, "export builder", name)
