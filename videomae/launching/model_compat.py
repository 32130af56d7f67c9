"""Do two stages' models share an encoder? Both are built on the ``meta`` device (no memory, no init) and the
shapes of their patch embedding and blocks compared in the classifier's key layout.

Pretraining and classification models name their sizes differently (``encoder_embed_dim, encoder_depth,
encoder_num_heads`` vs ``embed_dim, depth, num_heads``), so configs that look alike can build different encoders;
``load_pretrained`` would then fail on a shape, or silently leave the blocks it has no weights for at their fresh
values. Position tables are left out: they are resampled to the new grid when the weights are loaded.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from videomae.config import ConfigError, classifier_kwargs
from videomae.models import create_model
from videomae.models.arguments import ModelArgumentError

__all__ = ["encoder_mismatch", "encoder_shapes", "meta_model"]

_BACKBONE = ("patch_embed.", "blocks.")


def meta_model(kind: str, cfg: Any) -> nn.Module:
    """The stage's model built on the ``meta`` device (no memory, no init), as the run will build it.

    Args:
        kind: ``pretrain`` or ``finetune``.
        cfg: the stage's resolved config.

    Raises:
        ConfigError: ``model.name`` is not registered, ``model.overrides`` has an argument the model does not take,
            or an argument is out of range (the message starts with its key, e.g. ``model.overrides.depth``).
    """
    m = cfg.model
    try:
        kwargs = m.create_kwargs() if kind == "pretrain" else classifier_kwargs(m, m.overrides.get("num_classes", 1))
        with torch.device("meta"):
            return create_model(m.name, **kwargs)
    except ModelArgumentError as err:
        key = "model.name"  # unless the config set it: the registered model's own value
        if err.argument in m.overrides:
            key = f"model.overrides.{err.argument}"
        elif getattr(m, err.argument, None) is not None:
            key = f"model.{err.argument}"
        raise ConfigError(f"{key}: {str(err).partition(': ')[2]}") from None
    except ValueError as err:
        raise ConfigError(f"model.name: {err}") from None
    except TypeError as err:
        raise ConfigError(f"model.overrides: {err}") from None


def encoder_shapes(kind: str, cfg: Any) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of the patch embedding and blocks of the stage's model, keys as the classifier names them.

    Args:
        kind: ``pretrain`` or ``finetune``.
        cfg: the stage's resolved config.

    Raises:
        ConfigError: as :func:`meta_model`.
    """
    shapes = {}
    for key, value in meta_model(kind, cfg).state_dict().items():
        key = key.removeprefix("encoder.")  # the pretraining layout; its decoder keys stay out
        if key.startswith(_BACKBONE):
            shapes[key] = tuple(value.shape)
    return shapes


def encoder_mismatch(source: dict[str, tuple[int, ...]], target: dict[str, tuple[int, ...]], limit: int = 3) -> str:
    """What differs between the encoder that is loaded (``source``) and the one it is loaded into (``target``):
    ``""`` when nothing does, else up to ``limit`` differences and a count of the rest."""
    problems: dict[str, None] = {}  # ordered set: a missing block is reported once, as blocks.N.*
    for key in dict.fromkeys([*source, *target]):  # model order: patch embedding, then blocks 0, 1, ...
        if key not in target or key not in source:
            where = "only in the weights" if key not in target else "not in the weights"
            problems[f"{_group(key)} {where}"] = None
        elif source[key] != target[key]:
            problems[f"{key}: weights {source[key]}, model {target[key]}"] = None
    if not problems:
        return ""
    more = f"; {len(problems) - limit} more" if len(problems) > limit else ""
    return "; ".join(list(problems)[:limit]) + more


def _group(key: str) -> str:
    parts = key.split(".")
    return f"blocks.{parts[1]}.*" if parts[0] == "blocks" else key
