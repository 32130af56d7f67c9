"""Export a saved DeepSpeed checkpoint of a run as our safetensors file, or our export or a checkpoint as a
``transformers`` folder, offline (``videomae export``).

The run writes ``export/model.safetensors`` itself when it finishes; this covers the checkpoints in between (or
a run that was stopped): the checkpoint's fp32 weights are consolidated on one process, the model is rebuilt from
the config stored in the checkpoint (or from ``model_name`` + ``overrides``) and written by
:func:`~videomae.checkpoint.export_weights` with the same metadata layout as the run's own export.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from videomae.checkpoint import CheckpointError, export_weights, load_exported
from videomae.config import ConfigError
from videomae.config.loading import build_config
from videomae.config.methods import METHODS, method_config_class, method_export
from videomae.engine import checkpointing as ckpt
from videomae.engine.deepspeed_setup import checkpoint_fp32_state_dict, weights_only_loads
from videomae.hf_folder import write_hf_folder
from videomae.models import create_model

__all__ = [
    "ExportResult",
    "checkpoint_model",
    "export_checkpoint",
    "export_transformers",
    "find_checkpoint",
    "model_kwargs_from_config",
]

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    """What :func:`export_checkpoint` wrote."""

    path: Path
    checkpoint: Path
    step: int
    model_name: str
    num_tensors: int
    notes: list[str] = field(default_factory=list)


def find_checkpoint(path: str | Path) -> ckpt.CheckpointInfo:
    """The checkpoint meant by ``path``: a checkpoint folder, or the newest complete one of a run folder (or of
    its ``checkpoints/`` folder).

    Raises:
        FileNotFoundError: nothing complete there.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if (path / ckpt.COMMIT_FILE).is_file():
        return ckpt.checkpoint_at(path)
    for root in (path / "checkpoints", path):
        info = ckpt.find_latest(root)
        if info is not None:
            return info
    raise FileNotFoundError(f"{path}: no complete checkpoint (a folder with {ckpt.COMMIT_FILE}) there or in "
                            f"{path / 'checkpoints'}")  # fmt: skip


def model_kwargs_from_config(model_section: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(name, create_model kwargs)`` from a run config's ``model`` section: its ``overrides`` plus every other
    field that is set (the sections name their fields after the constructors' arguments)."""
    if not isinstance(model_section, dict) or not model_section.get("name"):
        raise CheckpointError("the checkpoint's config has no model.name; pass --model NAME (and --override k=v)")
    kwargs = {k: v for k, v in model_section.items() if k not in ("name", "overrides") and v is not None}
    kwargs.update(model_section.get("overrides") or {})
    return model_section["name"], kwargs


def _client_state(folder: Path) -> dict[str, Any]:
    """The run's client state (config, counters) from rank 0's model-states file (memory-mapped, weights-only)."""
    files = sorted(folder.glob("*model_states.pt"))
    if not files:
        raise FileNotFoundError(f"{folder}: no DeepSpeed model-states file")
    with weights_only_loads():  # DeepSpeed's allow-list; anything else is refused with the file named
        return torch.load(files[0], map_location="cpu", mmap=True)


def checkpoint_model(
    path: str | Path,
    *,
    model_name: str | None = None,
    overrides: dict[str, Any] | None = None,
    label_names: list[str] | None = None,
) -> tuple[nn.Module, dict[str, Any], ckpt.CheckpointInfo, list[str]]:
    """Rebuild the model of a run's DeepSpeed checkpoint with its consolidated fp32 weights.

    A pretraining run's checkpoint (its stored config names a ``method``) goes through the method, as the run's own
    export does: the config picks the method, whose ``export_model`` / ``export_metadata`` make the model and its
    metadata (MoCo v3: the query backbone; MAE-CLIP: the vision tower). Otherwise (a fine-tuning run, or
    ``model_name`` given) the registered model is rebuilt from ``model.name`` + ``overrides``.

    Arguments as :func:`export_checkpoint`. Returns ``(model, export metadata, checkpoint, notes)``.
    """
    info = find_checkpoint(path)
    client = _client_state(info.path)
    config = client.get("config") or {}
    state, notes = checkpoint_fp32_state_dict(info.root, info.tag)
    if model_name is None and not overrides and config.get("method") in METHODS:
        model, metadata = _method_export(config, state, info, notes)
    else:
        model, metadata = _registered_export(config, state, info, model_name, overrides)
    metadata["source_checkpoint"] = str(info.path)
    names = label_names if label_names is not None else client.get("label_names")
    if names is not None:
        metadata["label_names"] = list(names)
    return model, metadata, info, notes


def _method_export(
    config: dict[str, Any], state: dict[str, torch.Tensor], info: ckpt.CheckpointInfo, notes: list[str]
) -> tuple[nn.Module, dict[str, Any]]:
    """The method's export of ``state``: the model and metadata the run would have written at this step."""
    try:
        cfg = build_config(method_config_class(config["method"]), config)
    except ConfigError as err:
        raise CheckpointError(f"{info.path}: the stored config does not load: {err}") from None
    method = method_export(cfg.method)(cfg)
    try:
        return method.export_model(state), method.export_metadata(info.step)
    except RuntimeError as err:
        error = err
    missing = _frozen_from_config(method, state, cfg.precision)
    if missing:  # a ZeRO-1 checkpoint saves no frozen parameters
        notes.append(
            f"{info.path}: the checkpoint holds no {', '.join(missing)} (frozen; ZeRO-1 does not save them): "
            "rebuilt from the config's seed, rounded to its precision as training held them"
        )
        try:
            model = method.export_model(state)
        except RuntimeError as err:
            error = err
        else:
            return model, method.export_metadata(info.step)
    raise CheckpointError(f"{info.path}: the weights do not fit the {cfg.method} model: {error}") from None


def _frozen_from_config(method: Any, state: dict[str, torch.Tensor], precision: str) -> list[str]:
    """Fill ``state`` with the frozen parameters it lacks from the method's freshly built model (seeded by the
    config, as the run built it), rounded through the run's dtype; returns their names."""
    frozen = {n: p for n, p in method.build_model().named_parameters() if not p.requires_grad and n not in state}
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    for name, param in frozen.items():
        state[name] = param.detach().to(dtype).float()
    return sorted(frozen)


def _registered_export(
    config: dict[str, Any],
    state: dict[str, torch.Tensor],
    info: ckpt.CheckpointInfo,
    model_name: str | None,
    overrides: dict[str, Any] | None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The registered model ``model_name`` (default: the stored ``model.name``) holding ``state``."""
    if model_name is None:
        model_name, kwargs = model_kwargs_from_config(config.get("model"))
        kwargs.update(overrides or {})
    else:
        kwargs = dict(overrides or {})
    if "head.weight" in state and "num_classes" not in kwargs:
        kwargs["num_classes"] = state["head.weight"].shape[0]
    try:
        model = create_model(model_name, **kwargs)
        model.load_state_dict(state, strict=True)
    except (TypeError, RuntimeError) as err:
        raise CheckpointError(f"{info.path}: the weights do not fit {model_name}({kwargs}): {err}") from None
    return model, {"step": info.step, "config": config}


def export_checkpoint(
    path: str | Path,
    out: str | Path,
    *,
    model_name: str | None = None,
    overrides: dict[str, Any] | None = None,
    label_names: list[str] | None = None,
) -> ExportResult:
    """Consolidate a run's DeepSpeed checkpoint into a safetensors export.

    Args:
        path: checkpoint folder (``.../checkpoints/step_00000200``), run folder or checkpoints folder (newest).
        out: the ``.safetensors`` file to write.
        model_name: registered model; default: the method of the config stored in the checkpoint (a fine-tuning
            run's: its ``model.name``).
        overrides: constructor arguments (default: the stored config's; with ``model_name``, only these). A
            classifier's ``num_classes`` defaults to the checkpoint's head.
        label_names: class names to store (default: the checkpoint's ``label_names``, if it holds them).

    Raises:
        FileNotFoundError: no complete checkpoint at ``path``.
        CheckpointError: the weights do not fit the model.
    """
    model, metadata, info, notes = checkpoint_model(
        path, model_name=model_name, overrides=overrides, label_names=label_names
    )
    written = export_weights(model, out, metadata)
    for note in notes:
        log.warning(note)
    return ExportResult(Path(written), info.path, info.step, model.model_config["name"], len(model.state_dict()), notes)


def export_transformers(
    source: str | Path,
    out: str | Path,
    *,
    label_names: Sequence[str] | None = None,
    model_name: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[nn.Module, Path]:
    """``videomae export SRC OUT --format transformers``: our export file, or a run's checkpoint, as an HF folder.

    Args:
        source: our ``.safetensors`` export, or a checkpoint / checkpoints / run folder.
        out: the folder to write.
        label_names: class names (default: the export's or checkpoint's ``label_names``).
        model_name: for a checkpoint, the registered model (default: its stored config's).
        overrides: for a checkpoint, constructor arguments.

    Returns:
        ``(the model written, the folder)``.

    Raises:
        CheckpointError: unreadable source; NotExpressibleError: ``transformers`` cannot express the model.
    """
    if Path(source).is_file():
        if model_name is not None or overrides:
            raise ValueError("--model / --override apply to checkpoint folders; an export rebuilds its own model")
        model, metadata = load_exported(source)
    else:
        model, metadata, _, _ = checkpoint_model(source, model_name=model_name, overrides=overrides)
    names = label_names if label_names is not None else metadata.get("label_names")
    loss = (metadata.get("config") or metadata.get("pretrain_config") or {}).get("loss") or {}
    is_classifier = "num_classes" in model.model_config
    written = write_hf_folder(model, out, names if is_classifier else None, loss.get("normalize_target", True))
    return model, written
