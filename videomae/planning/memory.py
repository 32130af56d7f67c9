"""Analytic memory model of a VideoMAE pretraining step on one GPU: model states per ZeRO stage and activations.

Pure arithmetic on the model's constructor arguments (``model.model_config``) and token counts; no torch.

**Model states** (bytes per GPU) follow DeepSpeed's own estimators, ``estimate_zero2_model_states_mem_needs``
(``2P + 18P/W``: 16-bit weights, then 16-bit gradients + fp32 gradients + fp32 master weights + Adam's two fp32
moments partitioned over ``W`` GPUs) and ``estimate_zero3_model_states_mem_needs`` (``4·L + 18P/W``, ``L`` the
largest layer's parameters, gathered in 16 bits with its gradient). Split by stage:

============  ==================  ===========================  ==================
ZeRO stage    16-bit weights      gradients                    fp32 master + Adam
============  ==================  ===========================  ==================
0             2P                  2P (16-bit) + 4P (fp32)      12P
1             2P                  2P + 4P/W                    12P/W
2             2P                  (2 + 4)P/W                   12P/W
3             2P/W + 2L           4P/W + 2L                    12P/W
============  ==================  ===========================  ==================

Stage 2 and 3 are DeepSpeed's estimators exactly; stage 0 is the stage-2 estimator on one GPU (DeepSpeed's
16-bit optimizer keeps whole fp32 masters and fp32 gradients); stage 1 adds back the unpartitioned 16-bit
gradients. DeepSpeed's stage-3 estimate partitions 18 bytes per parameter, not 20: its 16-bit gradients are
reduce-scattered layer by layer as backward produces them, so they exist whole only for the layer at hand
(the ``2L``). fp32 training keeps 4-byte weights and gradients and no master copy (4 + 4 + 8 bytes per
parameter, partitioned by the same rule).

**Activations** (bytes per clip) are what autograd keeps for backward after one forward of the model and the
masked-pixel loss, counted on the tokens each part really processes: the encoder on the ``visible`` tokens, the
decoder on ``visible + decoded`` tokens. Per pre-norm block of ``n`` tokens, width ``D``, MLP width ``h`` and
``H`` heads, in elements of the compute dtype: block input and attention residual (the LayerNorm inputs, 2nD),
both LayerNorm outputs (2nD), the fused ``qkv`` output (3nD: q, k, v are views of it), the attention output
(nD: the fused kernels lay it out so the head merge is a view), ``fc1`` and GELU outputs (2nh); plus fp32
LayerNorm mean/rstd (2 x 2n) and the attention log-sum-exp (Hn). This is the saved set of the fused attention
kernels (CUDA flash / memory-efficient / cuDNN and CPU flash): no ``n x n`` attention matrix is kept. It
assumes the release's pretraining setting: no dropout, no stochastic depth, no layer scale, no cosine attention.
With ``with_cp`` (activation checkpointing of every block) a block keeps only its input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "ActivationBytes",
    "ModelStateBytes",
    "TokenCounts",
    "activation_bytes",
    "block_activation_bytes",
    "element_bytes",
    "input_bytes",
    "model_state_bytes",
    "transient_bytes",
]

_ELEMENT_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
_FP32 = 4


def element_bytes(precision: str) -> int:
    """Bytes per element of the compute dtype (``bf16``/``fp16``: 2, ``fp32``: 4)."""
    if precision not in _ELEMENT_BYTES:
        raise ValueError(f"precision must be one of {', '.join(_ELEMENT_BYTES)}, got {precision!r}")
    return _ELEMENT_BYTES[precision]


@dataclass(frozen=True)
class TokenCounts:
    """Tokens of one clip: the grid total, those the encoder sees and those the decoder predicts."""

    total: int
    visible: int
    decoded: int
    dual: bool
    """True when a decoder mask chose the decoded tokens (VideoMAE V2); False: every hidden token is decoded."""

    @property
    def decoder(self) -> int:
        """Tokens in the decoder's blocks: the visible ones plus a mask token per decoded one."""
        return self.visible + self.decoded


@dataclass(frozen=True)
class ActivationBytes:
    """Bytes saved for backward per clip, by part."""

    encoder: int
    """Patch-embedding input, encoder blocks and final norm."""
    decoder: int
    """Encoder-to-decoder projection input, decoder blocks, final norm and pixel-head input."""
    loss: int
    """The fp32 prediction error the squared loss keeps (and the dual-masking weights)."""

    @property
    def total(self) -> int:
        return self.encoder + self.decoder + self.loss


@dataclass(frozen=True)
class ModelStateBytes:
    """Bytes per GPU of weights, gradients and optimizer states."""

    params: int
    grads: int
    optimizer: int

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer


def _norm_bytes(tokens: int, width: int, elem: int, stat_tokens: int | None = None) -> int:
    """A LayerNorm's saved input plus its fp32 mean and rstd (on ``stat_tokens`` rows when the input is a slice)."""
    return elem * tokens * width + 2 * _FP32 * (tokens if stat_tokens is None else stat_tokens)


def block_activation_bytes(tokens: int, width: int, hidden: int, heads: int, elem: int) -> int:
    """Bytes one pre-norm transformer block saves for backward (see the module docstring for the list)."""
    norms = 2 * _norm_bytes(tokens, width, elem)  # block input and attention residual, with their stats
    linear_inputs = 2 * elem * tokens * width  # norm1 -> qkv, norm2 -> fc1
    attention = elem * tokens * 4 * width + _FP32 * heads * tokens  # q, k, v, output; log-sum-exp
    mlp = 2 * elem * tokens * hidden  # fc1 output (GELU input), GELU output (fc2 input)
    return norms + linear_inputs + attention + mlp


def _stack_bytes(tokens: int, width: int, depth: int, heads: int, mlp_ratio: float, elem: int, with_cp: bool) -> int:
    if with_cp:
        return depth * elem * tokens * width  # each checkpointed block keeps only its input
    return depth * block_activation_bytes(tokens, width, int(width * mlp_ratio), heads, elem)


def _patch_pixels(config: dict[str, Any]) -> int:
    return config.get("in_chans", 3) * config["tubelet_size"] * config["patch_size"] ** 2


def activation_bytes(config: dict[str, Any], tokens: TokenCounts, elem: int, with_cp: bool) -> ActivationBytes:
    """Bytes saved for backward by one clip's forward of the pretraining model and its loss.

    Args:
        config: the model's constructor arguments (``model.model_config``).
        tokens: token counts of one clip.
        elem: bytes per element of the compute dtype (:func:`element_bytes`).
        with_cp: activation checkpointing of every encoder and decoder block.
    """
    width, dec_width = config["encoder_embed_dim"], config["decoder_embed_dim"]
    mlp_ratio = config["mlp_ratio"]
    pixels = _patch_pixels(config)
    vis, dec = tokens.visible, tokens.decoder
    encoder = (
        elem * vis * pixels  # the gathered visible cubes, input of the patch projection
        + _stack_bytes(vis, width, config["encoder_depth"], config["encoder_num_heads"], mlp_ratio, elem, with_cp)
        + _norm_bytes(vis, width, elem)
    )
    decoder = (
        elem * vis * width  # encoder output after its norm, input of encoder_to_decoder
        + _stack_bytes(dec, dec_width, config["decoder_depth"], config["decoder_num_heads"], mlp_ratio, elem, with_cp)
        # the final norm reads a slice (the predicted tokens) of the last block's output and so keeps all of it
        + _norm_bytes(dec, dec_width, elem, stat_tokens=tokens.decoded)
        + elem * tokens.decoded * dec_width  # head input
    )
    loss = _FP32 * tokens.decoded * pixels + (_FP32 * tokens.decoded if tokens.dual else 0)
    return ActivationBytes(encoder=encoder, decoder=decoder, loss=loss)


def transient_bytes(config: dict[str, Any], tokens: TokenCounts, elem: int, with_cp: bool) -> int:
    """Short-lived bytes per clip on top of the saved activations at the step's memory peak.

    The larger of two moments:

    * the loss building its normalised-pixel targets for every token from fp32 copies of the clip: four
      clip-sized fp32 buffers, ``16·N·P`` bytes (the CPU peak measurement finds 3.75 of them at once);
    * backward through the largest block: with ``with_cp`` the recomputed block's activations plus their
      gradients, counted as two blocks (measured 1.65); without, the gradients of the block being
      differentiated while its own saved tensors are freed, counted as one block (measured below 0.8).
    """
    ratio = config["mlp_ratio"]
    width, dec_width = config["encoder_embed_dim"], config["decoder_embed_dim"]
    encoder = block_activation_bytes(tokens.visible, width, int(width * ratio), config["encoder_num_heads"], elem)
    decoder = block_activation_bytes(
        tokens.decoder, dec_width, int(dec_width * ratio), config["decoder_num_heads"], elem
    )
    targets = 4 * _FP32 * tokens.total * _patch_pixels(config)
    return max(targets, (2 if with_cp else 1) * max(encoder, decoder))


def input_bytes(config: dict[str, Any], tokens: TokenCounts, elem: int) -> int:
    """Bytes per clip of the input clip in the compute dtype."""
    return elem * tokens.total * _patch_pixels(config)


def model_state_bytes(
    num_params: int, largest_layer_params: int, zero_stage: int, world_size: int, precision: str = "bf16"
) -> ModelStateBytes:
    """Weights, gradients and Adam states per GPU under ``zero_stage`` on ``world_size`` GPUs (no offload).

    Mixed precision (``bf16``/``fp16``) follows DeepSpeed's estimators (module docstring); ``fp32`` keeps
    4-byte weights and gradients and Adam's two moments, no master copy.
    """
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage}")
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    elem = element_bytes(precision)
    mixed = elem == 2
    grad_master = (_FP32 if mixed else 0) * num_params  # fp32 gradients the mixed-precision optimizer steps on
    optimizer = (3 * _FP32 if mixed else 2 * _FP32) * num_params  # (fp32 master +) exp_avg + exp_avg_sq
    weights, grads = elem * num_params, elem * num_params
    world = world_size
    if zero_stage == 0:
        return ModelStateBytes(params=weights, grads=grads + grad_master, optimizer=optimizer)
    if zero_stage == 1:
        return ModelStateBytes(params=weights, grads=grads + grad_master // world, optimizer=optimizer // world)
    if zero_stage == 2:
        return ModelStateBytes(params=weights, grads=(grads + grad_master) // world, optimizer=optimizer // world)
    gathered = elem * largest_layer_params  # the layer being computed, whole, and its whole gradient
    partitioned_grads = grad_master if mixed else grads  # 16-bit gradients only per layer (module docstring)
    return ModelStateBytes(
        params=weights // world + gathered,
        grads=partitioned_grads // world + gathered,
        optimizer=optimizer // world,
    )
