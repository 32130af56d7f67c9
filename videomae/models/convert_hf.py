"""Key conversion from Hugging Face ``transformers`` VideoMAE state dicts to the release's names.

Handles ``VideoMAEForPreTraining``, ``VideoMAEModel`` and ``VideoMAEForVideoClassification``, in both layouts
``transformers`` has used: separate ``query``/``key``/``value`` Linears with the q/v biases on ``query.bias`` /
``value.bias`` (current), or bias-free Linears plus ``attention.attention.q_bias`` / ``v_bias`` (older releases).
The output uses the release's pretraining layout: backbone keys under ``encoder.`` (``encoder.patch_embed.proj``,
``encoder.blocks.N.*``, ``encoder.norm``), ``encoder_to_decoder``, ``mask_token``, ``decoder.*``, and the
classifier's ``fc_norm`` / ``head`` at top level.
"""

from __future__ import annotations

import re

import torch

__all__ = ["convert_hf_state_dict", "is_hf_state_dict"]

# Sub-module names inside one transformers VideoMAELayer -> the release's Block.
_LAYER_RENAMES = {
    "attention.output.dense.": "attn.proj.",
    "intermediate.dense.": "mlp.fc1.",
    "output.dense.": "mlp.fc2.",
    "layernorm_before.": "norm1.",
    "layernorm_after.": "norm2.",
    "attention.attention.q_bias": "attn.q_bias",
    "attention.attention.v_bias": "attn.v_bias",
    "lambda_1": "gamma_1",  # layer scale, as transformers names it in related ViTs (BEiT, Data2Vec)
    "lambda_2": "gamma_2",
}
_TOP_RENAMES = {
    "embeddings.patch_embeddings.projection.": "encoder.patch_embed.proj.",
    "layernorm.": "encoder.norm.",
    "fc_norm.": "fc_norm.",
    "classifier.": "head.",
    "encoder_to_decoder.": "encoder_to_decoder.",
    "mask_token": "mask_token",
    "decoder.norm.": "decoder.norm.",
    "decoder.head.": "decoder.head.",
}
_LAYER_KEY = re.compile(r"^(encoder\.layer|decoder\.decoder_layers)\.(\d+)\.(.+)$")


def is_hf_state_dict(state: dict[str, torch.Tensor]) -> bool:
    """Whether the keys look like a ``transformers`` VideoMAE state dict."""
    return any(
        k.startswith(("videomae.", "embeddings.patch_embeddings.", "encoder.layer.", "decoder.decoder_layers."))
        for k in state
    )


def convert_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a ``transformers`` VideoMAE state dict to the release's key names.

    ``query``/``key``/``value`` weights are concatenated into ``attn.qkv.weight``; ``query.bias`` and
    ``value.bias`` become ``attn.q_bias`` / ``attn.v_bias``.

    Raises:
        ValueError: a key with no counterpart (naming it), a non-zero key bias (the release's attention has none),
            or a layer with only some of query/key/value.
    """
    out: dict[str, torch.Tensor] = {}
    qkv_parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        name = key.removeprefix("videomae.")
        match = _LAYER_KEY.match(name)
        if match:
            stack, index, rest = match.groups()
            block = f"{'encoder' if stack == 'encoder.layer' else 'decoder'}.blocks.{index}."
            part = re.match(r"^attention\.attention\.(query|key|value)\.(weight|bias)$", rest)
            if part:
                qkv_parts.setdefault(block, {})[f"{part.group(1)}.{part.group(2)}"] = value
                continue
            out[block + _rename(rest, _LAYER_RENAMES, key)] = value
        else:
            out[_rename(name, _TOP_RENAMES, key)] = value
    for block, parts in qkv_parts.items():
        missing = [p for p in ("query.weight", "key.weight", "value.weight") if p not in parts]
        if missing:
            raise ValueError(f"transformers checkpoint: layer {block!r} lacks attention {missing}")
        out[block + "attn.qkv.weight"] = torch.cat([parts["query.weight"], parts["key.weight"], parts["value.weight"]])
        key_bias = parts.get("key.bias")
        if key_bias is not None and bool(key_bias.abs().max() > 0):
            raise ValueError(f"transformers checkpoint: layer {block!r} has a non-zero key bias, which VideoMAE lacks")
        if "query.bias" in parts:
            out[block + "attn.q_bias"] = parts["query.bias"]
        if "value.bias" in parts:
            out[block + "attn.v_bias"] = parts["value.bias"]
    return out


def _rename(name: str, table: dict[str, str], original_key: str) -> str:
    for old, new in table.items():
        if name.startswith(old):
            return new + name[len(old) :]
    raise ValueError(f"transformers checkpoint: no VideoMAE counterpart for key {original_key!r}")
