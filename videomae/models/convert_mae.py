"""Key conversion for image MAE weights: the MAE release's layout and ``transformers``' ViTMAE / ViT, to ours and back.

Reading goes ``transformers`` -> release -> ours, so one table per step:

* ``transformers`` (``ViTMAEForPreTraining``, ``ViTMAEModel``, ``ViTForImageClassification``; the hub's names
  ``encoder.layer.N.attention.attention.query``, the in-memory names of transformers 5 ``layers.N.attention.q_proj``
  and the decoder names its ``save_pretrained`` writes, ``decoder.decoder_encoder.layer.N``) -> the release's names
  (``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.N.attn.qkv``, ``norm``, ``decoder_embed``,
  ``mask_token``, ``decoder_pos_embed``, ``decoder_blocks.N``, ``decoder_norm``, ``decoder_pred``; ``fc_norm``,
  ``head`` of its fine-tuned models); query/key/value are concatenated into ``qkv``.
* release -> ours (:mod:`videomae.models.image_mae`): the trunk under ``encoder.``, ``decoder_embed`` ->
  ``encoder_to_decoder``, the decoder's table -> ``pos_embed``, ``decoder_*`` -> ``decoder.*``; the ``Conv2d``
  patch weight gains a time axis of one; ``qkv.bias`` splits into ``q_bias`` / ``v_bias`` and the key bias is dropped:
  it adds ``q·b_k`` to every logit of a query alike, which the softmax removes, so the function is the same.

Writing (:func:`to_mae_release_state_dict`, :func:`to_hf_vit_state_dict`) reverses both steps, with a zero key bias,
the fixed tables the release and ``transformers`` store, and layer scale folded into the Linear it scales.
"""

from __future__ import annotations

import re

import torch

from videomae.models.convert_hf import fold_layer_scale

__all__ = [
    "convert_mae_state_dict",
    "mae_layout",
    "to_hf_vit_state_dict",
    "to_mae_release_state_dict",
]

HF_VIT_PREFIX = "vit."
"""Where ``ViTMAEForPreTraining`` / ``ViTForImageClassification`` keep the trunk (``ViTMAEModel``: none)."""

# transformers -> release, outside the layer stacks (hub names; transformers 5 keeps them outside the layers).
_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.": "patch_embed.proj.",
    "layernorm.": "norm.",
    "decoder.decoder_embed.": "decoder_embed.",
    "decoder.mask_token": "mask_token",
    "decoder.decoder_pos_embed": "decoder_pos_embed",
    "decoder.decoder_norm.": "decoder_norm.",
    "decoder.decoder_pred.": "decoder_pred.",
    "classifier.": "head.",
}
_HF_STACK = re.compile(
    r"^(encoder\.layer|layers|decoder\.decoder_layers|decoder\.decoder_encoder\.layer)\.(\d+)\.(.+)$"
)
_HF_QKV = re.compile(r"^attention\.(?:attention\.(query|key|value)|(q|k|v)_proj)\.(weight|bias)$")
# Inside one layer (first match wins: ``attention.output.dense`` before ``output.dense``); hub names first.
_HF_LAYER = {
    "attention.output.dense.": "attn.proj.",
    "intermediate.dense.": "mlp.fc1.",
    "output.dense.": "mlp.fc2.",
    "layernorm_before.": "norm1.",
    "layernorm_after.": "norm2.",
    "attention.o_proj.": "attn.proj.",
    "mlp.fc1.": "mlp.fc1.",
    "mlp.fc2.": "mlp.fc2.",
}
_HF_WRITE_LAYER = dict(list(_HF_LAYER.items())[:5])  # the hub names, which every transformers version reads
_QKV_NAMES = {"q": "query", "k": "key", "v": "value"}
# release -> ours (prefixes); the trunk keys go under ``encoder.``.
_RELEASE_TRUNK = ("cls_token", "pos_embed", "patch_embed.", "blocks.", "norm.")
_RELEASE_TO_OURS = {
    "decoder_embed.": "encoder_to_decoder.",
    "decoder_pos_embed": "pos_embed",
    "decoder_blocks.": "decoder.blocks.",
    "decoder_norm.": "decoder.norm.",
    "decoder_pred.": "decoder.head.",
}


def mae_layout(state: dict[str, torch.Tensor]) -> str | None:
    """``"transformers"`` for ``transformers`` ViT / ViTMAE keys, ``"mae"`` for the MAE release's, else ``None``
    (ours, whose attention has ``q_bias``, or another model)."""
    if any(k.endswith("embeddings.cls_token") for k in state):
        return "transformers"
    release_keys = ("cls_token", "decoder_embed.weight", "decoder_pred.weight")
    if any(k in state for k in release_keys) and not any(k.endswith(".q_bias") for k in state):
        return "mae"
    return None


def convert_mae_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A release or ``transformers`` image MAE / ViT state dict in our pretraining layout -> ``(state, notes)``.

    Raises:
        ValueError: a key with no counterpart, or a layer with only some of query/key/value (named).
    """
    if mae_layout(state) == "transformers":
        state = _hf_to_release(state)
    out: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    for key, value in state.items():
        name = "encoder." + key if key.startswith(_RELEASE_TRUNK) else _rename(key, _RELEASE_TO_OURS, key, keep=True)
        if name.endswith("patch_embed.proj.weight") and value.ndim == 4:
            value = value.unsqueeze(2)  # Conv2d (D, C, p, p) -> Conv3d (D, C, 1, p, p)
        if name.endswith("attn.qkv.bias"):
            block = name.removesuffix("qkv.bias")
            q_bias, k_bias, v_bias = value.chunk(3)
            out[block + "q_bias"], out[block + "v_bias"] = q_bias, v_bias
            if bool(k_bias.abs().max() > 0) and not notes:
                notes.append("attention key biases dropped: they shift every logit of a query alike (same outputs)")
            continue
        out[name] = value
    return out, notes


def _hf_to_release(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        name = key.removeprefix(HF_VIT_PREFIX)
        match = _HF_STACK.match(name)
        if not match:
            if name.startswith("pooler."):  # ViTModel's tanh pooler: no part of MAE
                continue
            out[_rename(name, _HF_TOP, key)] = value
            continue
        stack, index, rest = match.groups()
        block = f"{'decoder_blocks' if stack.startswith('decoder') else 'blocks'}.{index}."
        part = _HF_QKV.match(rest)
        if part:
            which = part.group(1) or _QKV_NAMES[part.group(2)]
            qkv.setdefault(block, {})[f"{which}.{part.group(3)}"] = value
        else:
            out[block + _rename(rest, _HF_LAYER, key)] = value
    for block, parts in qkv.items():
        for leaf in ("weight", "bias"):
            found = [parts.get(f"{p}.{leaf}") for p in ("query", "key", "value")]
            if all(t is None for t in found) and leaf == "bias":
                continue
            if any(t is None for t in found):
                raise ValueError(f"transformers checkpoint: layer {block!r} lacks some of query/key/value {leaf}")
            out[f"{block}attn.qkv.{leaf}"] = torch.cat(found)
    return out


def to_mae_release_state_dict(
    state: dict[str, torch.Tensor], tables: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Our image MAE / image classifier state dict in the release's names (``tables``: the fixed position tables to
    store, e.g. ``{"pos_embed": ..., "decoder_pos_embed": ...}``, as the release's checkpoints hold them)."""
    inverse = {v: k for k, v in _RELEASE_TO_OURS.items() if k != "decoder_pos_embed"}
    out: dict[str, torch.Tensor] = dict(tables or {})
    for key, value in fold_layer_scale(state).items():
        name = _rename(key.removeprefix("encoder."), inverse, key, keep=True)
        if name.endswith("patch_embed.proj.weight"):
            value = value.squeeze(2)  # Conv3d (D, C, 1, p, p) -> Conv2d (D, C, p, p)
        if name.endswith("attn.q_bias"):
            block = name.removesuffix("q_bias")
            v_bias = state[key.removesuffix("q_bias") + "v_bias"]
            out[block + "qkv.bias"] = torch.cat([value, torch.zeros_like(value), v_bias])
            continue
        if not name.endswith("attn.v_bias"):
            out[name] = value
    return out


def to_hf_vit_state_dict(release: dict[str, torch.Tensor], prefix: str = HF_VIT_PREFIX) -> dict[str, torch.Tensor]:
    """A release-layout state dict in ``transformers``' hub names (ViTMAE / ViT; ``prefix`` ``"vit."`` for
    ``ViTMAEForPreTraining`` / ``ViTForImageClassification``, ``""`` for ``ViTMAEModel``)."""
    top = {v: k for k, v in _HF_TOP.items()}
    layer = {v: k for k, v in _HF_WRITE_LAYER.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in release.items():
        match = re.match(r"^(blocks|decoder_blocks)\.(\d+)\.(.+)$", key)
        if match is None:
            name = _rename(key, top, key)
            out[name if name.startswith(("decoder.", "classifier.")) else prefix + name] = value
            continue
        stack, index, rest = match.groups()
        base = f"{prefix}encoder.layer.{index}." if stack == "blocks" else f"decoder.decoder_layers.{index}."
        if rest.startswith("attn.qkv."):
            for part, tensor in zip(("query", "key", "value"), value.chunk(3)):
                out[f"{base}attention.attention.{part}.{rest.rsplit('.', 1)[1]}"] = tensor
        else:
            out[base + _rename(rest, layer, key)] = value
    return out


def _rename(name: str, table: dict[str, str], original_key: str, keep: bool = False) -> str:
    for old, new in table.items():
        if name.startswith(old):
            return new + name[len(old) :]
    if keep:
        return name
    raise ValueError(f"no image MAE counterpart for key {original_key!r}")
