"""Load, convert and export model weights.

``load_pretrained(model, source)`` reads our checkpoints, the original VideoMAE / VideoMAE V2 release files and
Hugging Face ``transformers`` VideoMAE weights into a pretraining or classification model and reports what
happened. ``export_weights`` / ``load_exported`` write and rebuild a model from a safetensors file that carries
its own metadata.

Loading never executes code (:mod:`videomae.checkpoint_reading`), and our exports are safetensors. Reading files
and remapping heads live in their own modules; their public names are importable from here too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from videomae.checkpoint_reading import (
    HF_INDEX_FILES,
    HF_WEIGHT_FILES,
    PICKLE_SUFFIXES,
    CheckpointError,
    read_checkpoint,
    read_state_dict,
    refuse_unsafe_pickle,
    to_release_layout,
    unwrap_state_dict,
    weights_only_globals,
)
from videomae.data.labels import normalize_class_name
from videomae.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from videomae.disk_faults import write_atomic
from videomae.export_guard import check_export_config
from videomae.head_remap import match_class_names, remap_head
from videomae.models.pos_embed import guess_grid, interpolate_pos_table, is_fixed_table
from videomae.models.registry import create_model

__all__ = [
    "HF_INDEX_FILES",
    "HF_WEIGHT_FILES",
    "PICKLE_SUFFIXES",
    "CheckpointError",
    "LoadReport",
    "export_weights",
    "load_exported",
    "load_pretrained",
    "match_class_names",
    "normalize_class_name",
    "read_checkpoint",
    "read_state_dict",
    "refuse_unsafe_pickle",
    "remap_head",
    "weights_only_globals",
]

_METADATA_KEY = "videomae"


@dataclass
class LoadReport:
    """What ``load_pretrained`` did.

    Attributes:
        source: where the weights came from.
        format: ``"videomae"`` (ours / the original release), ``"mae"`` (the MAE release) or ``"transformers"``.
        loaded: model keys filled from the checkpoint.
        missing: model keys the checkpoint lacks (left at their initial values).
        unexpected: checkpoint keys (after renaming) the model does not use.
        resized: model keys filled from a resampled tensor (position tables).
        notes: human-readable remarks (ignored tables, dropped heads).
        remapped_classes: with a label map, how many head rows were taken from the checkpoint by class name.
        unmatched_classes: with a label map, the model's classes the checkpoint's head lacks (fresh rows).
    """

    source: str
    format: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    remapped_classes: int = 0
    unmatched_classes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors from {self.source} ({self.format} format)"]
        for title, keys in (("missing", self.missing), ("unexpected", self.unexpected), ("resized", self.resized)):
            if keys:
                lines.append(f"  {title} ({len(keys)}): " + ", ".join(_compress(keys)))
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _compress(keys: list[str]) -> list[str]:
    """Group ``blocks.N.`` keys so a report stays short: ``decoder.blocks.{0..3}.attn.qkv.weight``."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        parts = key.split(".")
        idx = next((i for i, p in enumerate(parts) if p.isdigit() and i and parts[i - 1] == "blocks"), None)
        pattern = key if idx is None else ".".join([*parts[:idx], "{}", *parts[idx + 1 :]])
        groups.setdefault(pattern, []).append(parts[idx] if idx is not None else "")
    out = []
    for pattern, ids in groups.items():
        numbers = sorted({int(i) for i in ids if i})
        if len(numbers) > 2 and numbers == list(range(numbers[0], numbers[-1] + 1)):
            label = f"{numbers[0]}..{numbers[-1]}"
        else:
            label = ",".join(map(str, numbers))
        out.append(pattern.replace("{}", "{" + label + "}") if "{}" in pattern else pattern)
    return out


# --------------------------------------------------------------------------------------------- matching


def _target_layout(state: dict[str, torch.Tensor], model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename backbone keys between the pretraining layout (``encoder.*``) and the classifier layout."""
    notes = []
    model_is_pretrain = any(k.startswith("encoder.") for k in model.state_dict())
    backbone = ("patch_embed.", "blocks.", "norm.", "pos_embed", "cls_token")
    out = {}
    if model_is_pretrain:
        if any(k.startswith("encoder.") for k in state):  # already the pretraining layout
            return dict(state), notes
        for key, value in state.items():
            out["encoder." + key if key.startswith(backbone) else key] = value
        return out, notes
    has_encoder = any(k.startswith(("encoder.", "backbone.")) for k in state)
    for key, value in state.items():
        out[key.removeprefix("encoder.").removeprefix("backbone.")] = value
    if has_encoder and "norm.weight" in out and "norm.weight" not in model.state_dict():
        notes.append(
            "the encoder's final norm is not used with mean pooling (as in the release's fine-tuning); "
            "fc_norm starts fresh"
        )
    return out, notes


def _fit_pos_table(
    key: str, table: torch.Tensor, model: nn.Module, source_grid: tuple[int, int, int] | None, report: LoadReport
) -> torch.Tensor | None:
    """Return the table to load for ``key`` (resampled if needed), or None when the model's table is fixed."""
    owner = model.encoder if key.startswith("encoder.") else model
    target = owner.pos_embed
    if not isinstance(target, nn.Parameter):
        # A fixed table in the checkpoint (VideoMAE's sinusoid, MAE's 2-D sin-cos) carries no information: the model
        # builds its own.
        if is_fixed_table(table):
            report.notes.append(f"{key}: fixed position table in the checkpoint; the model builds its own")
            return None
        raise CheckpointError(
            f"{report.source}: {key} is a learned position table but the model's is fixed; "
            "build the model with use_learnable_pos_emb=True"
        )
    if table.shape == target.shape:
        return table
    if table.shape[-1] != target.shape[-1]:
        raise CheckpointError(f"{report.source}: {key} width {table.shape[-1]} != model width {target.shape[-1]}")
    grid = owner.grid_size
    extra = 0
    old_grid = source_grid or guess_grid(table.shape[1], grid)
    if old_grid is None:  # the release's learnable table has one leading extra token
        extra = 1
        old_grid = guess_grid(table.shape[1] - 1, grid)
    if old_grid is None:
        raise CheckpointError(
            f"{report.source}: cannot tell the token grid of {key} with {table.shape[1]} tokens; pass source_grid"
        )
    if source_grid is not None:
        extra = table.shape[1] - int(np.prod(source_grid))
    # Leading rows the model has too (an image ViT's class token) are kept, others dropped.
    keep = min(extra, getattr(owner, "num_prefix_tokens", 0))
    resized = interpolate_pos_table(table, old_grid, grid, num_extra_tokens=extra)[:, extra - keep :]
    report.resized.append(key)
    report.notes.append(f"{key}: position table resampled from grid {tuple(old_grid)} to {tuple(grid)}")
    return resized


def _refuse_unset_trunk(own: dict[str, torch.Tensor], to_load: dict[str, torch.Tensor], source: str) -> None:
    """A transformers checkpoint must fill the model's whole trunk: one that lacks a part (a mean-pooling model's
    final norm, a learned position table) would load as a silently different model. Heads and the decoder may
    start fresh (fine-tuning, continued pretraining)."""
    fresh_ok = ("head.", "fc_norm.", "decoder.", "encoder_to_decoder.", "mask_token")
    unset = [k for k in own if k not in to_load and not k.startswith(fresh_ok)]
    if not unset:
        return
    hint = ""
    if any(k.removeprefix("encoder.").startswith("norm.") for k in unset):
        hint = (
            "; its encoder has no final norm (config.json use_mean_pooling=true): build the model with "
            "final_norm=False (pretraining) or use_mean_pooling=True (classifier), or let videomae build it from "
            "the folder's config.json (no --model)"
        )
    raise CheckpointError(f"{source}: the transformers checkpoint leaves {', '.join(_compress(unset))} unset{hint}")


# --------------------------------------------------------------------------------------------- label maps


def _apply_label_map(
    state: dict[str, torch.Tensor],
    model: nn.Module,
    label_map: tuple[Sequence[str] | None, Sequence[str]],
    metadata: dict[str, Any],
    report: LoadReport,
) -> None:
    """Replace ``head.weight`` / ``head.bias`` in ``state`` by rows matched by class name (see :func:`remap_head`)."""
    source_names, target_names = label_map
    if source_names is None:  # our exports carry their class names, transformers configs an id2label map
        if "id2label" in metadata:
            source_names = [metadata["id2label"][str(i)] for i in range(len(metadata["id2label"]))]
        else:
            source_names = json.loads(metadata.get(_METADATA_KEY, "{}")).get("label_names")
        if source_names is None:
            raise CheckpointError(
                f"{report.source}: label_map has no source class names and the checkpoint's metadata has no "
                "'label_names' (our exports) or 'id2label' (transformers); pass label_map=(checkpoint_names, "
                "model_names)"
            )
    own = model.state_dict()
    if "head.weight" not in state:
        raise CheckpointError(f"{report.source}: label_map given but the checkpoint has no classifier head.weight")
    if "head.weight" not in own:
        raise CheckpointError("label_map given but the model has no classifier head (num_classes=0?)")
    weight, bias, unmatched = remap_head(
        state["head.weight"], state.get("head.bias"), source_names, target_names, own["head.weight"],
        own.get("head.bias"),
    )  # fmt: skip
    state["head.weight"] = weight
    if bias is not None:
        state["head.bias"] = bias
    report.remapped_classes = len(target_names) - len(unmatched)
    report.unmatched_classes = unmatched
    matched = f"{report.remapped_classes}/{len(target_names)}"
    note = f"head remapped by class name: {matched} classes from the checkpoint's {len(source_names)}"
    if unmatched:
        shown = ", ".join(map(repr, unmatched[:10])) + (" ..." if len(unmatched) > 10 else "")
        note += f"; {len(unmatched)} without a match start fresh: {shown}"
    report.notes.append(note)


def load_pretrained(
    model: nn.Module,
    source: str | Path | dict[str, Any],
    *,
    strict: bool = False,
    source_grid: tuple[int, int, int] | None = None,
    label_map: tuple[Sequence[str] | None, Sequence[str]] | None = None,
) -> LoadReport:
    """Load weights into ``model`` from any supported format and report what changed.

    Args:
        model: a :class:`~videomae.models.PretrainVisionTransformer` or :class:`~videomae.models.VisionTransformer`.
        source: a file (``.pth``/``.pt``/``.bin``/``.safetensors``), a Hugging Face folder, or a (wrapped) state dict.
            Formats: ours; the original VideoMAE / V2 releases (``model``/``module`` wrappers; pretraining weights
            ``encoder.*`` into a classifier, whose decoder keys are then reported unexpected); ``transformers``
            VideoMAE (pretraining, bare model, classification); for image models the MAE release
            (``{"model": state_dict}``, pretraining or fine-tuned) and ``transformers`` ViTMAE / ViT
            (:mod:`videomae.models.convert_mae`). ``_orig_mod.`` and ``module.`` prefixes are stripped.
        strict: raise when anything is missing or unexpected.
        source_grid: ``(T', H', W')`` of a checkpoint's learned position table when it cannot be guessed.
        label_map: ``(checkpoint class names, model class names)``: the head's rows are taken by class name
            (:func:`normalize_class_name`), e.g. a Kinetics-710 head sliced to Kinetics-400; model classes without
            a match keep their fresh rows and are listed in ``report.unmatched_classes``. ``None`` as the first
            element reads the names from an export's ``label_names`` or a transformers config's ``id2label``.

    Returns:
        A :class:`LoadReport`.

    Raises:
        CheckpointError: unreadable or unsafe file, a shape mismatch that cannot be resolved (names the key), or a
            transformers checkpoint that leaves part of the model's trunk unset (e.g. the final norm a mean-pooling
            transformers model lacks): it would load as a different model.
    """
    name = "<state dict>" if isinstance(source, dict) else str(source)
    raw, metadata = (source, {}) if isinstance(source, dict) else read_checkpoint(source)
    state = unwrap_state_dict(raw, name)
    state, fmt, notes = to_release_layout(state)
    report = LoadReport(source=name, format=fmt, notes=notes)
    state, layout_notes = _target_layout(state, model)
    report.notes += layout_notes
    if label_map is not None:
        _apply_label_map(state, model, label_map, metadata, report)
    own = model.state_dict()
    to_load: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("pos_embed") and value.ndim == 3:
            fitted = _fit_pos_table(key, value, model, source_grid, report)
            if fitted is not None:
                to_load[key] = fitted
            continue
        if key in own and own[key].shape != value.shape:
            if key in ("head.weight", "head.bias"):
                report.notes.append(f"{key}: checkpoint shape {tuple(value.shape)} != {tuple(own[key].shape)}; dropped")
                continue
            raise CheckpointError(
                f"{name}: shape mismatch for {key}: checkpoint {tuple(value.shape)}, model {tuple(own[key].shape)}"
            )
        to_load[key] = value
    if fmt == "transformers":
        _refuse_unset_trunk(own, to_load, name)
    result = model.load_state_dict(to_load, strict=False)
    report.missing = list(result.missing_keys)
    report.unexpected = list(result.unexpected_keys)
    report.loaded = [k for k in to_load if k not in set(result.unexpected_keys)]
    if strict and (report.missing or report.unexpected):
        raise CheckpointError(f"strict load failed:\n{report}")
    return report


# --------------------------------------------------------------------------------------------- export


def export_weights(model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights to a safetensors file with the metadata needed to rebuild it.

    The file's metadata entry ``videomae`` holds JSON: ``model_config`` (constructor arguments incl. the registry
    ``name``), ``patch_size``, ``tubelet_size``, ``num_frames``, ``img_size``, ``mean``, ``std`` (ImageNet unless
    given) and anything in ``metadata`` (e.g. ``label_names``).
    """
    config = dict(model.model_config)
    if not config.get("name"):
        raise CheckpointError("export_weights needs a model built with create_model (model_config['name'] is unset)")
    info = {
        "model_config": config,
        "patch_size": config["patch_size"],
        "tubelet_size": config["tubelet_size"],
        "num_frames": config["all_frames"],
        "img_size": config["img_size"],
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        **(metadata or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # Written aside and renamed: a failed write (a full disk is named as such) leaves no partial export.
    return write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata={_METADATA_KEY: json.dumps(info)}))


def load_exported(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model written by :func:`export_weights` -> ``(model in eval mode, metadata)``."""
    state, metadata = read_checkpoint(path)
    if _METADATA_KEY not in metadata:
        raise CheckpointError(f"{path}: not a videomae export (no '{_METADATA_KEY}' metadata entry)")
    try:
        info = json.loads(metadata[_METADATA_KEY])
        name, config = check_export_config(path, info["model_config"], state)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: unusable videomae metadata: {err}") from None
    model = create_model(name, **config)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), info
