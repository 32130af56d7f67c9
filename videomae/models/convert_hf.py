"""Key conversion between Hugging Face ``transformers`` VideoMAE state dicts and the release's names, both ways.

Reading handles ``VideoMAEForPreTraining``, ``VideoMAEModel`` and ``VideoMAEForVideoClassification``, in both layouts
``transformers`` has used: separate ``query``/``key``/``value`` Linears with the q/v biases on ``query.bias`` /
``value.bias`` (current), or bias-free Linears plus ``attention.attention.q_bias`` / ``v_bias`` (older releases).
Its output uses the release's pretraining layout: backbone keys under ``encoder.`` (``encoder.patch_embed.proj``,
``encoder.blocks.N.*``, ``encoder.norm``), ``encoder_to_decoder``, ``mask_token``, ``decoder.*``, and the
classifier's ``fc_norm`` / ``head`` at top level.

Writing (:func:`to_hf_state_dict`) takes either of our layouts and gives the current ``transformers`` layout. Both
directions read the same rename tables below. Layer scale (``gamma_1`` / ``gamma_2``), which ``transformers``'
VideoMAE lacks, is folded into the Linear it scales (``attn.proj``, ``mlp.fc2``): the same function, exactly.
"""

from __future__ import annotations

import re

import torch

__all__ = [
    "HF_BACKBONE_PREFIX",
    "convert_hf_state_dict",
    "fold_layer_scale",
    "is_hf_state_dict",
    "to_hf_state_dict",
]

HF_BACKBONE_PREFIX = "videomae."
"""Where ``VideoMAEForPreTraining`` / ``VideoMAEForVideoClassification`` keep the trunk (``VideoMAEModel``: none)."""

# transformers name -> ours. Backbone keys: ours without the pretraining model's ``encoder.`` prefix.
_BACKBONE_RENAMES = {
    "embeddings.patch_embeddings.projection.": "patch_embed.proj.",
    "layernorm.": "norm.",
}
_TOP_RENAMES = {
    "fc_norm.": "fc_norm.",
    "classifier.": "head.",
    "encoder_to_decoder.": "encoder_to_decoder.",
    "mask_token": "mask_token",
    "decoder.norm.": "decoder.norm.",
    "decoder.head.": "decoder.head.",
}
_STACK_RENAMES = {"encoder.layer.": "encoder.blocks.", "decoder.decoder_layers.": "decoder.blocks."}
# Sub-module names inside one transformers VideoMAELayer -> the release's Block.
_LAYER_RENAMES = {
    "attention.output.dense.": "attn.proj.",
    "intermediate.dense.": "mlp.fc1.",
    "output.dense.": "mlp.fc2.",
    "layernorm_before.": "norm1.",
    "layernorm_after.": "norm2.",
}
# Read only: older transformers layouts and layer scale as related ViTs name it (BEiT, Data2Vec); writing folds
# layer scale into the weights and puts the q/v biases on the query/value Linears.
_LEGACY_LAYER_RENAMES = {
    "attention.attention.q_bias": "attn.q_bias",
    "attention.attention.v_bias": "attn.v_bias",
    "lambda_1": "gamma_1",
    "lambda_2": "gamma_2",
}
_HF_LAYER_KEY = re.compile(r"^(encoder\.layer\.|decoder\.decoder_layers\.)(\d+)\.(.+)$")
_OUR_BLOCK_KEY = re.compile(r"^(encoder\.blocks\.|decoder\.blocks\.)(\d+)\.(.+)$")
_QKV = ("query", "key", "value")
_QV_BIAS = {"attn.q_bias": "attention.attention.query.bias", "attn.v_bias": "attention.attention.value.bias"}
_OUR_BACKBONE = ("patch_embed.", "blocks.", "norm.", "pos_embed")  # the classifier's trunk keys
# Layer scale -> the Linear whose output it scales.
_LAYER_SCALE = {"gamma_1": "attn.proj", "gamma_2": "mlp.fc2"}


def is_hf_state_dict(state: dict[str, torch.Tensor]) -> bool:
    """Whether the keys look like a ``transformers`` VideoMAE state dict."""
    return any(
        k.startswith((HF_BACKBONE_PREFIX, "embeddings.patch_embeddings.", "encoder.layer.", "decoder.decoder_layers."))
        for k in state
    )


def convert_hf_state_dict(state: dict[str, torch.Tensor], backbone_prefix: str = "encoder.") -> dict[str, torch.Tensor]:
    """Rename a ``transformers`` VideoMAE state dict to the release's key names.

    ``query``/``key``/``value`` weights are concatenated into ``attn.qkv.weight``; ``query.bias`` and
    ``value.bias`` become ``attn.q_bias`` / ``attn.v_bias``. ``backbone_prefix``: ``"encoder."`` gives the
    pretraining model's layout, ``""`` the classifier's.

    Raises:
        ValueError: a key with no counterpart (naming it), a non-zero key bias (the release's attention has none),
            or a layer with only some of query/key/value.
    """
    out: dict[str, torch.Tensor] = {}
    qkv_parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        name = key.removeprefix(HF_BACKBONE_PREFIX)
        match = _HF_LAYER_KEY.match(name)
        if match:
            stack, index, rest = match.groups()
            block = f"{_STACK_RENAMES[stack]}{index}."
            if stack == "encoder.layer.":
                block = backbone_prefix + block.removeprefix("encoder.")
            part = re.match(r"^attention\.attention\.(query|key|value)\.(weight|bias)$", rest)
            if part:
                qkv_parts.setdefault(block, {})[f"{part.group(1)}.{part.group(2)}"] = value
                continue
            out[block + _rename(rest, _LAYER_RENAMES | _LEGACY_LAYER_RENAMES, key)] = value
        elif name.startswith(tuple(_BACKBONE_RENAMES)):
            out[backbone_prefix + _rename(name, _BACKBONE_RENAMES, key)] = value
        else:
            out[_rename(name, _TOP_RENAMES, key)] = value
    for block, parts in qkv_parts.items():
        missing = [f"{p}.weight" for p in _QKV if f"{p}.weight" not in parts]
        if missing:
            raise ValueError(f"transformers checkpoint: layer {block!r} lacks attention {missing}")
        out[block + "attn.qkv.weight"] = torch.cat([parts[f"{p}.weight"] for p in _QKV])
        key_bias = parts.get("key.bias")
        if key_bias is not None and bool(key_bias.abs().max() > 0):
            raise ValueError(f"transformers checkpoint: layer {block!r} has a non-zero key bias, which VideoMAE lacks")
        if "query.bias" in parts:
            out[block + "attn.q_bias"] = parts["query.bias"]
        if "value.bias" in parts:
            out[block + "attn.v_bias"] = parts["value.bias"]
    return out


def to_hf_state_dict(
    state: dict[str, torch.Tensor], backbone_prefix: str = HF_BACKBONE_PREFIX
) -> dict[str, torch.Tensor]:
    """Rename our state dict (pretraining or classifier layout) to the current ``transformers`` VideoMAE names.

    Args:
        state: our model's state dict (``encoder.*`` + decoder, or the classifier's keys).
        backbone_prefix: ``"videomae."`` for ``VideoMAEForPreTraining`` / ``VideoMAEForVideoClassification``,
            ``""`` for ``VideoMAEModel``.

    Raises:
        ValueError: a key ``transformers`` has no place for (naming it), e.g. a learned position table.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in fold_layer_scale(state).items():
        name = "encoder." + key if key.startswith(_OUR_BACKBONE) else key  # one layout: the pretraining model's
        match = _OUR_BLOCK_KEY.match(name)
        if match:
            stack, index, rest = match.groups()
            layer = f"{backbone_prefix if stack == 'encoder.blocks.' else ''}{_inverse(_STACK_RENAMES)[stack]}{index}."
            if rest == "attn.qkv.weight":
                for part, weight in zip(_QKV, value.chunk(3)):  # (3 D, D) -> 3 x (D, D)
                    out[f"{layer}attention.attention.{part}.weight"] = weight
            elif rest in _QV_BIAS:
                out[layer + _QV_BIAS[rest]] = value
            else:
                out[layer + _rename(rest, _inverse(_LAYER_RENAMES), key)] = value
        elif name.startswith("encoder."):
            out[backbone_prefix + _rename(name.removeprefix("encoder."), _inverse(_BACKBONE_RENAMES), key)] = value
        else:
            out[_rename(name, _inverse(_TOP_RENAMES), key)] = value
    return out


def fold_layer_scale(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``gamma * Linear(x) = Linear'(x)`` with the Linear's output rows scaled by ``gamma``; gammas removed."""
    out = {k: v for k, v in state.items() if k.rsplit(".", 1)[-1] not in _LAYER_SCALE}
    for key, gamma in state.items():
        block, _, leaf = key.rpartition(".")
        if leaf not in _LAYER_SCALE:
            continue
        linear = f"{block}.{_LAYER_SCALE[leaf]}"
        out[f"{linear}.weight"] = state[f"{linear}.weight"] * gamma[:, None]  # (out, in) rows scaled
        out[f"{linear}.bias"] = state[f"{linear}.bias"] * gamma
    return out


def _inverse(table: dict[str, str]) -> dict[str, str]:
    return {new: old for old, new in table.items()}


def _rename(name: str, table: dict[str, str], original_key: str) -> str:
    for old, new in table.items():
        if name.startswith(old):
            return new + name[len(old) :]
    raise ValueError(f"no transformers VideoMAE counterpart for key {original_key!r}")
