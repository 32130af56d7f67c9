"""A trained model ready for inference: rebuilt from our export, or built by name and filled by ``load_pretrained``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from videomae.checkpoint import CheckpointError, load_exported, load_pretrained
from videomae.hf_folder import is_hf_folder, load_hf_folder
from videomae.models import PretrainVisionTransformer, VideoViT, VisionTransformer, create_model

__all__ = ["POOLS", "PRECISIONS", "InferenceModel", "export_metadata", "load_inference_model", "run_setting"]

POOLS = ("mean", "tokens")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class InferenceModel:
    """A model in eval mode with what is known about it.

    Attributes:
        model: a classifier (:class:`VisionTransformer`) or a pretraining model (:class:`PretrainVisionTransformer`,
            whose encoder gives features).
        metadata: the export's metadata (``model_config``, ``label_names``, the run's config...); ``{}`` otherwise.
        source: where the weights came from.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast around the forward).
        notes: remarks from loading (e.g. keys left at their initial values).
    """

    model: nn.Module
    metadata: dict[str, Any]
    source: str
    precision: str = "fp32"
    notes: list[str] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.model.parameters()).device

    @property
    def is_classifier(self) -> bool:
        """Whether the model has a classification head."""
        return isinstance(self.model, VisionTransformer) and isinstance(self.model.head, nn.Linear)

    @property
    def backbone(self) -> VideoViT:
        """The ViT trunk: the pretraining model's encoder, or the classifier itself."""
        return self.model.encoder if isinstance(self.model, PretrainVisionTransformer) else self.model

    @property
    def num_frames(self) -> int:
        """Frames per input clip."""
        return self.backbone.patch_embed.num_frames

    @property
    def input_size(self) -> int:
        """Input height and width."""
        return self.backbone.patch_embed.img_size

    @property
    def label_names(self) -> list[str] | None:
        """Class names stored with the weights (``None`` when unknown)."""
        return self.metadata.get("label_names")

    def run_setting(self, key: str, section: str = "data") -> Any:
        """``<section>.<key>`` of the training run's config stored in the export (``None`` when absent)."""
        return run_setting(self.metadata, key, section)

    def autocast(self) -> torch.autocast:
        """Autocast context for this model's precision (a no-op for fp32)."""
        dtype = PRECISIONS[self.precision]
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32)

    @torch.no_grad()
    def logits(self, videos: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, K]`` (float32, CPU) of normalised clips ``[B, C, T, H, W]``."""
        if not self.is_classifier:
            raise CheckpointError(f"{self.source}: {type(self.model).__name__} has no classification head")
        with self.autocast():
            return self.model(videos.to(self.device)).float().cpu()

    @torch.no_grad()
    def features(self, videos: torch.Tensor, pool: str = "mean") -> torch.Tensor:
        """Features of normalised clips ``[B, C, T, H, W]`` (float32, CPU).

        Args:
            pool: ``mean``: one vector per clip ``[B, D]``: a classifier's own pooled features (``fc_norm`` of the
                token mean, or its first token without mean pooling), a pretraining encoder's token mean;
                ``tokens``: every output token ``[B, N, D]`` in ``(t, h, w)`` order.
        """
        if pool not in POOLS:
            raise ValueError(f"pool={pool!r}: expected one of {POOLS}")
        videos = videos.to(self.device)
        with self.autocast():
            if pool == "tokens":
                out = self.backbone.forward_tokens(videos)  # (B, N, D)
            elif isinstance(self.model, VisionTransformer):
                out = self.model.forward_features(videos)  # (B, D)
            else:
                out = self.backbone.forward_tokens(videos).mean(dim=1)  # (B, D)
        return out.float().cpu()


def run_setting(metadata: dict[str, Any], key: str, section: str = "data") -> Any:
    """``<section>.<key>`` of the training run's config held in an export's ``metadata`` (``None`` when absent)."""
    for name, value in metadata.items():
        if (name == "config" or name.endswith("_config")) and isinstance(value, dict):
            part = value.get(section)
            if isinstance(part, dict) and part.get(key) is not None:
                return part[key]
    return None


def export_metadata(source: str | Path) -> dict[str, Any]:
    """The ``videomae`` metadata of a safetensors export (``{}`` for any other source)."""
    if not str(source).endswith(".safetensors") or not Path(source).is_file():
        return {}
    try:
        with safe_open(str(source), framework="pt") as handle:
            return json.loads((handle.metadata() or {}).get("videomae", "{}"))
    except (SafetensorError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{source}: unreadable safetensors metadata ({err})") from None


_export_metadata = export_metadata  # the name videomae.launching.config_checks imports


def load_inference_model(
    source: str | Path,
    *,
    model_name: str | None = None,
    overrides: dict[str, Any] | None = None,
    allow_missing: Sequence[str] = (),
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> InferenceModel:
    """Load weights for inference.

    Args:
        source: our export (rebuilt from its metadata when ``model_name`` is None), a ``transformers`` folder
            (built from its ``config.json`` when ``model_name`` is None; ``id2label`` gives the class names), or,
            with ``model_name``, any checkpoint :func:`~videomae.checkpoint.load_pretrained` reads.
        model_name: registered model to build; ``overrides`` are its constructor arguments.
        allow_missing: key prefixes the checkpoint may leave unfilled (e.g. ``("head.", "fc_norm.")`` for features
            from a pretraining checkpoint); any other missing key is an error.
        device: where the model runs.
        precision: ``fp32``, ``bf16`` or ``fp16``.

    Raises:
        CheckpointError: unreadable checkpoint, no metadata and no ``model_name``, or weights that leave the model
            partly uninitialised.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {sorted(PRECISIONS)}")
    if not Path(source).exists():  # said as such: no hint about --model for a file that is not there
        raise CheckpointError(f"checkpoint {source} does not exist")
    if model_name is None and is_hf_folder(source):
        model, folder = load_hf_folder(source, device)
        return InferenceModel(model, folder.metadata(), str(source), precision, list(folder.notes))
    if model_name is None:
        try:
            model, metadata = load_exported(source)
        except CheckpointError as err:
            raise CheckpointError(f"{err}; for other checkpoints name the model (--model NAME, and --override "
                                  "key=value for a non-default size)") from None  # fmt: skip
        return InferenceModel(model.to(device).eval(), metadata, str(source), precision)
    try:
        model = create_model(model_name, **(overrides or {}))
    except TypeError as err:  # an override the constructor does not take
        raise CheckpointError(f"model overrides {overrides}: {err}") from None
    report = load_pretrained(model, source)
    missing = [k for k in report.missing if not k.startswith(tuple(allow_missing))]
    if missing:
        raise CheckpointError(
            f"{source} leaves {len(missing)} tensors of {model_name} unfilled ({', '.join(missing[:6])}"
            f"{' ...' if len(missing) > 6 else ''}); check --model and --override"
        )
    notes = list(report.notes) + [f"{k}: not in the checkpoint, left at its initial value" for k in report.missing]
    return InferenceModel(model.to(device).eval(), export_metadata(source), str(source), precision, notes)
