"""A ``transformers`` VideoMAE ``config.json`` <-> our models' constructor arguments, both ways.

``transformers``' VideoMAE is the release's architecture with fewer options, so a model of ours is refused (with the
reason) when it uses what ``VideoMAEConfig`` has no field for: cosine attention, a learned position table, a
position table resampled from another grid, a classifier without a head. Layer scale is no refusal: it is folded
into the weights (:func:`~videomae.models.convert_hf.to_hf_state_dict`). One difference no field can remove:
``transformers`` builds ``fc_norm`` and the decoder's final norm with eps 1e-5 where the release uses 1e-6 (see
:data:`EPS_NOTE`). Reading, a ``config.json`` whose fields our models cannot follow (another activation, a decoder
MLP ratio unlike the encoder's, non-square frames) is refused the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from videomae.models.registry import variant_for_width

__all__ = [
    "EPS_NOTE",
    "HF_CLASSES",
    "NORM_EPS",
    "NotExpressibleError",
    "from_hf_config",
    "hf_field",
    "hf_label_names",
    "mlp_ratio_for",
    "registered_name",
    "to_hf_config",
]

HF_CLASSES = {
    "pretraining": "VideoMAEForPreTraining",
    "classifier": "VideoMAEForVideoClassification",
    "encoder": "VideoMAEModel",
}
"""Our kind of model -> the ``transformers`` class that holds it."""
NORM_EPS = 1e-6
"""LayerNorm eps of every norm in our models (the release's)."""
EPS_NOTE = (
    "transformers builds fc_norm and the decoder's final norm with LayerNorm eps 1e-5 (no config field sets it) where "
    "VideoMAE uses 1e-6; outputs differ by that alone, about 1e-5 (more where the normalised features vary little)"
)
# VideoMAEConfig's defaults, for fields a config.json leaves out (transformers fills them the same way).
_HF_DEFAULTS: dict[str, Any] = {
    "image_size": 224, "patch_size": 16, "num_channels": 3, "num_frames": 16, "tubelet_size": 2, "hidden_size": 768,
    "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "layer_norm_eps": 1e-12, "qv_bias": True,
    "use_mean_pooling": True, "decoder_num_attention_heads": 6, "decoder_hidden_size": 384,
    "decoder_num_hidden_layers": 4, "decoder_intermediate_size": 1536, "norm_pix_loss": True,
}  # fmt: skip
_GELU = ("gelu",)  # exact (erf) GELU, as nn.GELU()


class NotExpressibleError(ValueError):
    """A model (or config) the other side cannot represent; the message says what and why."""


def _trunk(config: dict[str, Any]) -> tuple[str, str, str]:
    """Our argument names of width, depth and heads for this model kind."""
    if "encoder_embed_dim" in config:
        return "encoder_embed_dim", "encoder_depth", "encoder_num_heads"
    return "embed_dim", "depth", "num_heads"


def _refusals(config: dict[str, Any]) -> list[str]:
    """What of ``config`` (our constructor arguments) ``VideoMAEConfig`` cannot express."""
    problems = []
    if config.get("cos_attn"):
        problems.append(
            "cosine attention (cos_attn=True): transformers' VideoMAE has only scaled dot-product attention"
        )
    if config.get("use_learnable_pos_emb"):
        problems.append(
            "a learned position table (use_learnable_pos_emb=True): transformers' VideoMAE adds the fixed sinusoid one"
        )
    grid = (config["all_frames"] // config["tubelet_size"],) + (config["img_size"] // config["patch_size"],) * 2
    if config.get("pos_table_grid") is not None and tuple(config["pos_table_grid"]) != grid:
        problems.append(
            f"a position table resampled from grid {tuple(config['pos_table_grid'])} to {grid} (pos_table_grid): "
            "transformers' VideoMAE builds the sinusoid table of its own grid"
        )
    if "num_classes" in config and config["num_classes"] < 1:
        problems.append("a classifier without a head (num_classes=0): VideoMAEModel has no fc_norm to hold its pooling")
    return problems


def to_hf_config(
    model_config: dict[str, Any], label_names: Sequence[str] | None = None, norm_pix_loss: bool = True
) -> dict[str, Any]:
    """The ``config.json`` of ``transformers``' VideoMAE for one of our models.

    Args:
        model_config: the model's ``model_config`` (constructor arguments).
        label_names: a classifier's class names by id (``id2label`` / ``label2id``); default ``LABEL_<i>``.
        norm_pix_loss: a pretraining model's target normalisation (``loss.normalize_target`` of its run).

    Raises:
        NotExpressibleError: the model uses what ``VideoMAEConfig`` has no field for (every such thing is named).
    """
    problems = _refusals(model_config)
    if problems:
        raise NotExpressibleError("transformers' VideoMAE cannot express this model: " + "; ".join(problems))
    width_key, depth_key, heads_key = _trunk(model_config)
    width, ratio = model_config[width_key], model_config["mlp_ratio"]
    out: dict[str, Any] = {
        "model_type": "videomae",
        "image_size": model_config["img_size"],
        "patch_size": model_config["patch_size"],
        "num_channels": model_config["in_chans"],
        "num_frames": model_config["all_frames"],
        "tubelet_size": model_config["tubelet_size"],
        "hidden_size": width,
        "num_hidden_layers": model_config[depth_key],
        "num_attention_heads": model_config[heads_key],
        "intermediate_size": int(width * ratio),  # as the release's Block
        "hidden_act": "gelu",
        "hidden_dropout_prob": model_config["drop_rate"],
        "attention_probs_dropout_prob": model_config["attn_drop_rate"],
        "initializer_range": 0.02,
        "layer_norm_eps": NORM_EPS,
        "qv_bias": bool(model_config["qkv_bias"]),
    }
    if width_key == "encoder_embed_dim":
        dec = model_config["decoder_embed_dim"]
        out |= {
            "architectures": [HF_CLASSES["pretraining"]],
            "use_mean_pooling": not model_config.get("final_norm", True),  # no final encoder norm in transformers
            "decoder_hidden_size": dec,
            "decoder_num_hidden_layers": model_config["decoder_depth"],
            "decoder_num_attention_heads": model_config["decoder_num_heads"],
            "decoder_intermediate_size": int(dec * ratio),
            "norm_pix_loss": bool(norm_pix_loss),
        }
        return out
    num_classes = model_config["num_classes"]
    names = list(label_names) if label_names is not None else [f"LABEL_{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a {num_classes}-class head")
    out |= {
        "architectures": [HF_CLASSES["classifier"]],
        "use_mean_pooling": bool(model_config["use_mean_pooling"]),
        "id2label": {str(i): name for i, name in enumerate(names)},
        "label2id": {name: i for i, name in enumerate(names)},
    }
    return out


def hf_label_names(config: dict[str, Any]) -> list[str] | None:
    """Class names by id from ``id2label`` (``None`` without one).

    Raises:
        ValueError: ``id2label`` is not a map of ids ``0..n-1`` to names.
    """
    table = config.get("id2label")
    if table is None:
        return None
    if not isinstance(table, dict) or sorted(table) != sorted(map(str, range(len(table)))):
        raise ValueError(f"config.json: id2label must map the ids 0..n-1 to names, got keys {sorted(table)[:5]}...")
    names = [table[str(i)] for i in range(len(table))]
    if not all(isinstance(n, str) for n in names):
        raise ValueError("config.json: id2label names must be strings")
    return names


def hf_field(config: dict[str, Any], key: str, kind: type, defaults: dict[str, Any] | None = None) -> Any:
    """A ``config.json`` field (or its default in ``defaults``: ``VideoMAEConfig``'s unless given), checked for type."""
    value = config.get(key, (_HF_DEFAULTS if defaults is None else defaults)[key])
    if kind is int and isinstance(value, list) and len(value) == 2 and value[0] == value[1]:
        value = value[0]  # [h, w] of square frames or patches
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise NotExpressibleError(f"config.json: {key}={value!r} is not a {kind.__name__} VideoMAE can use")
    return value  # ranges: the model's own argument check (videomae.models.arguments), on meta, before building


def mlp_ratio_for(hidden: int, intermediate: int) -> float:
    """A ratio our Blocks turn back into ``intermediate`` (``int(hidden * ratio)``, as the release)."""
    if hidden < 1 or intermediate < 1:
        raise NotExpressibleError(
            f"config.json: hidden_size={hidden}, intermediate_size={intermediate}: need sizes >= 1"
        )
    ratio = intermediate / hidden
    while int(hidden * ratio) < intermediate:  # float rounding just below: step up to the next float
        ratio = math.nextafter(ratio, math.inf)
    return ratio


def from_hf_config(config: dict[str, Any], kind: str) -> tuple[str, dict[str, Any], list[str]]:
    """Our model for a ``config.json`` -> ``(registered name, constructor arguments, notes)``.

    Args:
        config: the folder's ``config.json``.
        kind: ``pretraining``, ``classifier`` or ``encoder`` (a ``VideoMAEModel``: a classifier without a head).

    Raises:
        NotExpressibleError: a field our models cannot follow, or of the wrong type (named).
    """
    g = {
        k: hf_field(config, k, int) for k in ("image_size", "patch_size", "num_channels", "num_frames", "tubelet_size")
    }
    g |= {k: hf_field(config, k, int) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads")}
    if hf_field(config, "hidden_act", str) not in _GELU:
        raise NotExpressibleError(f"config.json: hidden_act={config['hidden_act']!r}; VideoMAE's MLP uses exact GELU")
    width = g["hidden_size"]
    ratio = mlp_ratio_for(width, hf_field(config, "intermediate_size", int))
    mean_pooling = hf_field(config, "use_mean_pooling", bool)
    kwargs: dict[str, Any] = {
        "img_size": g["image_size"], "patch_size": g["patch_size"], "in_chans": g["num_channels"],
        "all_frames": g["num_frames"], "tubelet_size": g["tubelet_size"], "mlp_ratio": ratio,
        "qkv_bias": hf_field(config, "qv_bias", bool), "init_values": 0.0,
        "drop_rate": hf_field(config, "hidden_dropout_prob", float),
        "attn_drop_rate": hf_field(config, "attention_probs_dropout_prob", float),
    }  # fmt: skip
    notes = []
    eps = config.get("layer_norm_eps", _HF_DEFAULTS["layer_norm_eps"])
    if eps != NORM_EPS:
        notes.append(f"config.json layer_norm_eps={eps}; VideoMAE's norms use {NORM_EPS} (the release's)")
    if kind == "pretraining":
        dec = {k: hf_field(config, k, int) for k in ("decoder_hidden_size", "decoder_num_hidden_layers")}
        dec_heads = hf_field(config, "decoder_num_attention_heads", int)
        dec_mlp = hf_field(config, "decoder_intermediate_size", int)
        if int(dec["decoder_hidden_size"] * ratio) != dec_mlp:
            raise NotExpressibleError(
                f"config.json: decoder_intermediate_size={dec_mlp} is not the encoder's MLP ratio "
                f"({config.get('intermediate_size')}/{width}) times decoder_hidden_size; VideoMAE's decoder shares it"
            )
        kwargs |= {
            "encoder_embed_dim": width, "encoder_depth": g["num_hidden_layers"],
            "encoder_num_heads": g["num_attention_heads"], "decoder_embed_dim": dec["decoder_hidden_size"],
            "decoder_depth": dec["decoder_num_hidden_layers"], "decoder_num_heads": dec_heads,
            "final_norm": not mean_pooling,
        }  # fmt: skip
    else:
        names = hf_label_names(config) if kind == "classifier" else None
        num_classes = len(names) if names is not None else 0
        if kind == "classifier" and names is None:
            num_classes = hf_field(config, "num_labels", int) if "num_labels" in config else 2  # transformers' default
        kwargs |= {
            "embed_dim": width, "depth": g["num_hidden_layers"], "num_heads": g["num_attention_heads"],
            "num_classes": num_classes, "use_mean_pooling": mean_pooling,
        }  # fmt: skip
    return registered_name(width, kind == "pretraining"), kwargs, notes


def registered_name(width: int, pretraining: bool) -> str:
    """The registered variant of this width, else the base one (the sizes are passed as arguments anyway)."""
    fallback = "pretrain_videomae_base_patch16_224" if pretraining else "vit_base_patch16_224"
    return variant_for_width(width, pretraining) or fallback
