"""Analytic FLOP counts of a pretraining step, for throughput and model FLOPs utilisation (MFU).

Counts only matrix multiplications (2 FLOPs per multiply-add), on the tokens each part really processes:
the patch embedding and the encoder on the visible tokens, the decoder on the visible tokens plus the tokens it
predicts. Norms, softmax and
element-wise ops are left out, as in the usual MFU convention; a backward pass costs twice the forward.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PretrainFlops", "pretrain_flops", "transformer_forward_flops"]


def transformer_forward_flops(tokens: int, width: int, depth: int, mlp_ratio: float) -> int:
    """Forward FLOPs of ``depth`` pre-norm ViT blocks on a sequence of ``tokens`` tokens of ``width``."""
    hidden = int(width * mlp_ratio)
    projections = 2 * tokens * width * (3 * width + width)  # qkv + output projection
    attention = 2 * 2 * tokens * tokens * width  # q @ k^T and attn @ v over all heads
    mlp = 2 * 2 * tokens * width * hidden
    return depth * (projections + attention + mlp)


@dataclass(frozen=True)
class PretrainFlops:
    """Forward FLOPs of one clip, split by part; ``train_step`` is forward plus backward (x3)."""

    patch_embed: int
    encoder: int
    decoder: int

    @property
    def forward(self) -> int:
        return self.patch_embed + self.encoder + self.decoder

    @property
    def train_step(self) -> int:
        return 3 * self.forward


def pretrain_flops(model_config: dict, num_visible: int, num_decoded: int) -> PretrainFlops:
    """FLOPs of a VideoMAE pretraining forward for one clip.

    Args:
        model_config: the model's constructor arguments (``model.model_config``): ``encoder_embed_dim``,
            ``encoder_depth``, ``decoder_embed_dim``, ``decoder_depth``, ``mlp_ratio``, ``patch_size``,
            ``tubelet_size`` and optionally ``in_chans`` (3).
        num_visible: tokens the encoder sees.
        num_decoded: tokens the decoder predicts (its output count ``N_dec``).
    """
    width = model_config["encoder_embed_dim"]
    decoder_width = model_config["decoder_embed_dim"]
    mlp_ratio = model_config["mlp_ratio"]
    patch_pixels = model_config.get("in_chans", 3) * model_config["tubelet_size"] * model_config["patch_size"] ** 2
    patch_embed = 2 * num_visible * patch_pixels * width  # only visible cubes are embedded
    encoder = transformer_forward_flops(num_visible, width, model_config["encoder_depth"], mlp_ratio)
    decoder_tokens = num_visible + num_decoded
    decoder = (
        2 * num_visible * width * decoder_width  # encoder_to_decoder
        + transformer_forward_flops(decoder_tokens, decoder_width, model_config["decoder_depth"], mlp_ratio)
        + 2 * num_decoded * decoder_width * patch_pixels  # pixel head
    )
    return PretrainFlops(patch_embed=patch_embed, encoder=encoder, decoder=decoder)
