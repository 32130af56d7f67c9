"""A ``transformers`` ViTMAE / ViT ``config.json`` <-> our image models' constructor arguments, both ways.

``ViTMAEForPreTraining`` and ``ViTMAEModel`` hold :class:`~videomae.models.image_mae.ImageMAE` (and its encoder),
``ViTForImageClassification`` the image classifier with ``use_mean_pooling=False`` (final norm, class token, head).
Refused with the reason, before anything is written: cosine attention, and a classifier that pools the patch tokens
into ``fc_norm`` (MAE's fine-tuning default), which ``ViTForImageClassification`` has no place for. Every norm is
written with eps 1e-6 (``layer_norm_eps`` sets them all in these classes), so outputs match to float precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from videomae.models.hf_config import NORM_EPS, NotExpressibleError, hf_field, hf_label_names, mlp_ratio_for
from videomae.models.registry import variant_for_width

__all__ = [
    "HF_IMAGE_CLASSES",
    "from_hf_image_config",
    "image_hf_kind",
    "is_image_hf_config",
    "registered_image_name",
    "to_hf_image_config",
]

HF_IMAGE_CLASSES = {
    "pretraining": "ViTMAEForPreTraining",
    "classifier": "ViTForImageClassification",
    "encoder": "ViTMAEModel",
}
"""Our kind of image model -> the ``transformers`` class that holds it."""
_MODEL_TYPES = {"pretraining": "vit_mae", "classifier": "vit", "encoder": "vit_mae"}
_READ_CLASSES = {**{cls: kind for kind, cls in HF_IMAGE_CLASSES.items()}, "ViTModel": "encoder"}
# ViTMAEConfig's / ViTConfig's defaults, for fields a config.json leaves out.
_DEFAULTS: dict[str, Any] = {
    "image_size": 224, "patch_size": 16, "num_channels": 3, "hidden_size": 768, "num_hidden_layers": 12,
    "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0, "layer_norm_eps": 1e-12, "qkv_bias": True, "decoder_hidden_size": 512,
    "decoder_num_hidden_layers": 8, "decoder_num_attention_heads": 16, "decoder_intermediate_size": 2048,
    "norm_pix_loss": False,
}  # fmt: skip


def is_image_hf_config(config: dict[str, Any]) -> bool:
    """Whether a ``config.json`` is ``transformers``' ViTMAE or ViT."""
    return config.get("model_type") in ("vit_mae", "vit")


def image_hf_kind(config: dict[str, Any], hf_keys: Sequence[str]) -> str:
    """``pretraining``, ``classifier`` or ``encoder``: from ``architectures``, else from what the weights hold."""
    for cls in config.get("architectures") or []:
        if cls in _READ_CLASSES:
            return _READ_CLASSES[cls]
    if any(k.startswith("decoder.") for k in hf_keys):
        return "pretraining"
    return "classifier" if any(k.startswith("classifier.") for k in hf_keys) else "encoder"


def registered_image_name(width: int, pretraining: bool, patch_size: int | None = None) -> str:
    """The registered image variant of this width (and patch, where the width has several), else the base one (the
    sizes are passed as arguments anyway)."""
    fallback = "pretrain_mae_base_patch16_224" if pretraining else "vit_image_base_patch16_224"
    return variant_for_width(width, pretraining, image=True, patch_size=patch_size) or fallback


def to_hf_image_config(
    model_config: dict[str, Any], label_names: Sequence[str] | None = None, norm_pix_loss: bool = True
) -> dict[str, Any]:
    """The ``config.json`` of ``ViTMAEForPreTraining`` (an image MAE) or ``ViTForImageClassification``.

    Raises:
        NotExpressibleError: the model uses what those classes cannot hold (every such thing is named).
    """
    pretraining = "encoder_embed_dim" in model_config
    problems = []
    if model_config.get("cos_attn"):
        problems.append("cosine attention (cos_attn=True): transformers' ViT has only scaled dot-product attention")
    if not pretraining and model_config.get("use_mean_pooling"):
        problems.append(
            "mean pooling of the patch tokens into fc_norm (use_mean_pooling=True): ViTForImageClassification "
            "classifies the class token after the final norm (use_mean_pooling=False)"
        )
    if not pretraining and model_config["num_classes"] < 1:
        problems.append("a classifier without a head (num_classes=0)")
    if problems:
        raise NotExpressibleError("transformers' ViT / ViTMAE cannot express this model: " + "; ".join(problems))
    prefix = "encoder_" if pretraining else ""
    width, ratio = model_config[f"{prefix}embed_dim"], model_config["mlp_ratio"]
    out: dict[str, Any] = {
        "model_type": _MODEL_TYPES["pretraining" if pretraining else "classifier"],
        "architectures": [HF_IMAGE_CLASSES["pretraining" if pretraining else "classifier"]],
        "image_size": model_config["img_size"],
        "patch_size": model_config["patch_size"],
        "num_channels": model_config["in_chans"],
        "hidden_size": width,
        "num_hidden_layers": model_config[f"{prefix}depth"],
        "num_attention_heads": model_config[f"{prefix}num_heads"],
        "intermediate_size": int(width * ratio),
        "hidden_act": "gelu",
        "hidden_dropout_prob": model_config["drop_rate"],
        "attention_probs_dropout_prob": model_config["attn_drop_rate"],
        "initializer_range": 0.02,
        "layer_norm_eps": NORM_EPS,
        "qkv_bias": bool(model_config["qkv_bias"]),
    }
    if pretraining:
        dec = model_config["decoder_embed_dim"]
        return out | {
            "decoder_hidden_size": dec, "decoder_num_hidden_layers": model_config["decoder_depth"],
            "decoder_num_attention_heads": model_config["decoder_num_heads"],
            "decoder_intermediate_size": int(dec * ratio), "mask_ratio": 0.75, "norm_pix_loss": bool(norm_pix_loss),
        }  # fmt: skip
    num_classes = model_config["num_classes"]
    names = list(label_names) if label_names is not None else [f"LABEL_{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a {num_classes}-class head")
    return out | {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def from_hf_image_config(config: dict[str, Any], kind: str) -> tuple[str, dict[str, Any], list[str]]:
    """Our image model for a ViTMAE / ViT ``config.json`` -> ``(registered name, constructor arguments, notes)``.

    Args:
        config: the folder's ``config.json``.
        kind: ``pretraining``, ``classifier`` or ``encoder`` (a classifier without a head).

    Raises:
        NotExpressibleError: a field our models cannot follow, or of the wrong type (named).
    """

    def field(key: str, kind_: type) -> Any:
        return hf_field(config, key, kind_, _DEFAULTS)

    if field("hidden_act", str) != "gelu":
        raise NotExpressibleError(f"config.json: hidden_act={config['hidden_act']!r}; our MLP uses exact GELU")
    width = field("hidden_size", int)
    ratio = mlp_ratio_for(width, field("intermediate_size", int))
    kwargs: dict[str, Any] = {
        "img_size": field("image_size", int), "patch_size": field("patch_size", int),
        "in_chans": field("num_channels", int), "all_frames": 1, "tubelet_size": 1, "mlp_ratio": ratio,
        "qkv_bias": field("qkv_bias", bool), "init_values": 0.0, "drop_rate": field("hidden_dropout_prob", float),
        "attn_drop_rate": field("attention_probs_dropout_prob", float),
    }  # fmt: skip
    depth, heads = field("num_hidden_layers", int), field("num_attention_heads", int)
    notes = []
    eps = config.get("layer_norm_eps", _DEFAULTS["layer_norm_eps"])
    if eps != NORM_EPS:
        notes.append(f"config.json layer_norm_eps={eps}; our norms use {NORM_EPS} (the MAE release's)")
    if kind == "pretraining":
        dec_width = field("decoder_hidden_size", int)
        if int(dec_width * ratio) != field("decoder_intermediate_size", int):
            raise NotExpressibleError(
                f"config.json: decoder_intermediate_size={config.get('decoder_intermediate_size')} is not the "
                "encoder's MLP ratio times decoder_hidden_size; our decoder shares it"
            )
        kwargs |= {
            "encoder_embed_dim": width, "encoder_depth": depth, "encoder_num_heads": heads,
            "decoder_embed_dim": dec_width, "decoder_depth": field("decoder_num_hidden_layers", int),
            "decoder_num_heads": field("decoder_num_attention_heads", int),
        }  # fmt: skip
        return registered_image_name(width, True, kwargs["patch_size"]), kwargs, notes
    names = hf_label_names({k: v for k, v in config.items() if k == "id2label"}) if kind == "classifier" else None
    kwargs |= {"embed_dim": width, "depth": depth, "num_heads": heads, "use_mean_pooling": False}
    kwargs["num_classes"] = len(names) if names is not None else 0
    return registered_image_name(width, False, kwargs["patch_size"]), kwargs, notes
