"""``transformers`` VideoMAE folders, both ways: read one fully, write one ``from_pretrained`` opens; for the image
models the same with ViTMAE / ViT folders (:mod:`videomae.models.hf_image_config`, :mod:`videomae.models.convert_mae`).

Reading (:func:`read_hf_folder`, :func:`load_hf_folder`): the model is built from the folder's ``config.json``, no
model name or overrides needed. The weights are read weights-only (:mod:`videomae.checkpoint_reading`), and the
config's sizes go through the same check as our exports' metadata (:func:`~videomae.export_guard.check_export_config`:
bounded by the weights, then built on ``meta`` and compared tensor by tensor) before anything is allocated.

Writing (:func:`write_hf_folder`, :func:`export_transformers`): ``config.json`` (with ``id2label`` / ``label2id``
from our class names) and ``model.safetensors`` in the layout ``save_pretrained`` writes, for
``VideoMAEForPreTraining`` or ``VideoMAEForVideoClassification``; a model ``transformers`` cannot express is refused
with the reason before anything is written (:func:`~videomae.models.hf_config.to_hf_config`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from videomae.checkpoint import CheckpointError
from videomae.checkpoint_reading import HF_WEIGHT_FILES, read_checkpoint, unwrap_state_dict
from videomae.disk_faults import write_atomic
from videomae.export_guard import check_export_config
from videomae.models.convert_hf import HF_BACKBONE_PREFIX, convert_hf_state_dict, is_hf_state_dict, to_hf_state_dict
from videomae.models.convert_mae import convert_mae_state_dict, to_hf_vit_state_dict, to_mae_release_state_dict
from videomae.models.hf_config import (
    EPS_NOTE,
    HF_CLASSES,
    from_hf_config,
    hf_label_names,
    registered_name,
    to_hf_config,
)
from videomae.models.hf_image_config import (
    from_hf_image_config,
    image_hf_kind,
    is_image_hf_config,
    registered_image_name,
    to_hf_image_config,
)
from videomae.models.image_classification import ImageVisionTransformer
from videomae.models.image_mae import ImageMAE
from videomae.models.pos_embed import is_fixed_table
from videomae.models.registry import create_model

__all__ = [
    "CONFIG_FILE",
    "HFFolder",
    "classifier_trunk",
    "is_hf_folder",
    "load_hf_folder",
    "read_hf_folder",
    "write_hf_folder",
]

CONFIG_FILE = "config.json"


def is_hf_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder with a ``config.json`` (a ``save_pretrained`` folder)."""
    return Path(path).is_dir() and (Path(path) / CONFIG_FILE).is_file()


@dataclass
class HFFolder:
    """A ``transformers`` VideoMAE folder read and checked, ready to build.

    Attributes:
        path: the folder.
        kind: ``pretraining``, ``classifier`` or ``encoder`` (``VideoMAEModel``: a classifier without a head).
        model_name: the registered variant of its width (``model_kwargs`` hold every size).
        model_kwargs: constructor arguments from ``config.json``.
        state: the weights in our key layout for that kind.
        label_names: class names by id from ``id2label`` (classifiers).
        config: ``config.json`` as read.
        notes: remarks (numeric differences ``transformers`` cannot avoid).
    """

    path: Path
    kind: str
    model_name: str
    model_kwargs: dict[str, Any]
    state: dict[str, torch.Tensor]
    label_names: list[str] | None
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        """What inference reads beside the model, in our exports' layout (class names, the pretraining target)."""
        out: dict[str, Any] = {"transformers_config": self.config}
        if self.label_names is not None:
            out["label_names"] = self.label_names
        if self.kind == "pretraining":
            out["config"] = {"loss": {"normalize_target": bool(self.config.get("norm_pix_loss", True))}}
        return out


def _kind(config: dict[str, Any], hf_keys: Sequence[str]) -> str:
    """The model class: ``config.json``'s ``architectures``, else what the weights hold."""
    for kind, cls in HF_CLASSES.items():
        if cls in (config.get("architectures") or []):
            return kind
    if any(k.startswith(("decoder.", "encoder_to_decoder.")) for k in hf_keys):
        return "pretraining"
    return "classifier" if any(k.startswith("classifier.") for k in hf_keys) else "encoder"


def read_hf_folder(path: str | Path) -> HFFolder:
    """Read a ``transformers`` VideoMAE folder and check its ``config.json`` against its weights.

    Raises:
        CheckpointError: unreadable or unsafe weights, not VideoMAE, a config field our models cannot follow, or a
            config that does not describe the weights (each named).
    """
    path = Path(path)
    raw, config = read_checkpoint(path)
    hf_state = unwrap_state_dict(raw, str(path))
    if is_image_hf_config(config):
        return _read_image_folder(path, config, hf_state)
    if not is_hf_state_dict(hf_state):
        raise CheckpointError(f"{path}: the weights are not transformers VideoMAE weights")
    kind = _kind(config, list(hf_state))
    try:
        name, kwargs, notes = from_hf_config(config, kind)
        state = convert_hf_state_dict(hf_state, backbone_prefix="encoder." if kind == "pretraining" else "")
        name, kwargs = check_export_config(
            path / CONFIG_FILE, {"name": name, **kwargs}, state, what="config.json -> model_config"
        )
        names = hf_label_names(config) if kind == "classifier" else None
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    if kind == "pretraining" or kwargs.get("use_mean_pooling") and kind == "classifier":
        notes.append(EPS_NOTE)
    return HFFolder(path, kind, name, kwargs, state, names, config, notes)


def _read_image_folder(path: Path, config: dict[str, Any], hf_state: dict[str, torch.Tensor]) -> HFFolder:
    """:func:`read_hf_folder` for ViTMAE / ViT folders: fixed position tables dropped (our models build them), a
    classifier's learned one kept (``use_learnable_pos_emb``)."""
    kind = image_hf_kind(config, list(hf_state))
    try:
        name, kwargs, notes = from_hf_image_config(config, kind)
        state, more = convert_mae_state_dict(hf_state)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    if kind != "pretraining":
        state = {k.removeprefix("encoder."): v for k, v in state.items()}
    for key in [k for k in state if k.endswith("pos_embed")]:
        if is_fixed_table(state[key]):
            del state[key]
        elif kind == "pretraining":
            raise CheckpointError(f"{path}: {key} is not MAE's fixed sin-cos table; our image MAE builds that table")
        else:
            kwargs["use_learnable_pos_emb"] = True
    try:
        name, kwargs = check_export_config(
            path / CONFIG_FILE, {"name": name, **kwargs}, state, what="config.json -> model_config"
        )
        names = hf_label_names(config) if kind == "classifier" else None
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    return HFFolder(path, kind, name, kwargs, state, names, config, notes + more)


def load_hf_folder(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, HFFolder]:
    """Build the model a ``transformers`` folder describes and load its weights (all of them) -> (eval model, folder).

    Raises:
        CheckpointError: see :func:`read_hf_folder`.
    """
    folder = read_hf_folder(path)
    model = create_model(folder.model_name, **folder.model_kwargs)
    model.load_state_dict(folder.state, strict=True)
    return model.to(device).eval(), folder


_TRUNK_ARGS = ("img_size", "patch_size", "in_chans", "all_frames", "tubelet_size", "mlp_ratio", "qkv_bias")
_ENCODER_ARGS = {"embed_dim": "encoder_embed_dim", "depth": "encoder_depth", "num_heads": "encoder_num_heads"}


def classifier_trunk(source: str | Path | None) -> tuple[str, dict[str, Any]] | None:
    """For fine-tuning from a ``transformers`` folder: ``(registered name, the classifier's trunk sizes)`` from its
    ``config.json`` (any kind of folder), or ``None`` when ``source`` is not such a folder. The head, pooling and
    regularisation stay the run's to choose.

    Raises:
        CheckpointError: see :func:`read_hf_folder`.
    """
    if source is None or not is_hf_folder(source):
        return None
    folder = read_hf_folder(source)
    kwargs = folder.model_kwargs
    trunk = {k: kwargs[k] for k in _TRUNK_ARGS}
    trunk |= {ours: kwargs.get(pretraining, kwargs.get(ours)) for ours, pretraining in _ENCODER_ARGS.items()}
    if is_image_hf_config(folder.config):
        return registered_image_name(trunk["embed_dim"], False, trunk["patch_size"]), trunk
    return registered_name(trunk["embed_dim"], pretraining=False), trunk


def write_hf_folder(
    model: nn.Module, out: str | Path, label_names: Sequence[str] | None = None, norm_pix_loss: bool = True
) -> Path:
    """Write ``model`` as a ``save_pretrained`` folder: ``config.json`` and ``model.safetensors``.

    Args:
        model: one of our pretraining models or classifiers (built by ``create_model``).
        out: the folder (created; its ``config.json`` and weights are replaced).
        label_names: a classifier's class names (``id2label``); default ``LABEL_<i>`` as ``transformers``.
        norm_pix_loss: a pretraining model's target normalisation.

    Raises:
        NotExpressibleError: ``transformers`` cannot express the model (nothing is written).
        ValueError: ``out`` is a file.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder; a transformers export is a folder")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if isinstance(model, ImageMAE | ImageVisionTransformer):
        config = to_hf_image_config(model.model_config, label_names, norm_pix_loss)
        tensors = to_hf_vit_state_dict(to_mae_release_state_dict(state, _fixed_tables(model)))
    else:
        config = to_hf_config(model.model_config, label_names, norm_pix_loss)
        tensors = to_hf_state_dict(state, HF_BACKBONE_PREFIX)
    config["dtype"] = str(next(iter(state.values())).dtype).removeprefix("torch.")
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / HF_WEIGHT_FILES[0], lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return out


def _fixed_tables(model: nn.Module) -> dict[str, torch.Tensor]:
    """The fixed position tables of an image model in the release's names (``transformers`` stores them)."""
    if isinstance(model, ImageMAE):
        return {
            "pos_embed": model.encoder.pos_embed.detach().cpu(),
            "decoder_pos_embed": model.pos_embed.detach().cpu(),
        }
    return {"pos_embed": model.pos_embed.detach().cpu()}
