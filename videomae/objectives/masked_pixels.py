"""The VideoMAE / VideoMAE V2 objective: MSE on normalised pixels of the tokens the model had to guess."""

from __future__ import annotations

import torch
from torch import nn

from videomae.masking import decoded_positions
from videomae.objectives.pixels import patch_pixel_targets

__all__ = ["MaskedPixelLoss", "decoded_positions"]


def _select(tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Gather ``tokens[b, n]`` where ``positions[b, n]``; every row selects the same count."""
    batch_size = tokens.shape[0]
    return tokens[positions].reshape(batch_size, -1, *tokens.shape[2:])  # (B, N_sel, ...)


class MaskedPixelLoss(nn.Module):
    """Mean squared error on the tokens hidden from the encoder **and** predicted by the decoder.

    Args:
        patch_size: spatial patch size ``p``.
        tubelet_size: temporal tubelet size.
        normalize_target: per-patch normalised pixels (default, as VideoMAE) or raw 0..1 pixels.
    """

    def __init__(self, patch_size: int, tubelet_size: int, normalize_target: bool = True) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.normalize_target = normalize_target

    def forward(
        self,
        pred: torch.Tensor,
        videos: torch.Tensor,
        mask: torch.Tensor,
        decode_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss for decoder output ``pred`` ``[B, N_dec, P]`` of normalised ``videos`` ``[B, C, T, H, W]``.

        ``mask`` is True where tokens were hidden from the encoder, ``decode_mask`` True where the decoder
        dropped them (``None``: it predicted exactly the hidden tokens). Returns a float32 scalar.
        """
        with torch.no_grad():
            targets = patch_pixel_targets(videos, self.patch_size, self.tubelet_size, self.normalize_target)
        predicted = decoded_positions(mask, decode_mask)
        targets = _select(targets, predicted)  # (B, N_dec, P)
        if pred.shape != targets.shape:
            raise ValueError(f"predictions {tuple(pred.shape)} do not match the decoded targets {tuple(targets.shape)}")
        per_token = (pred.float() - targets).pow(2).mean(dim=-1)  # (B, N_dec)
        if decode_mask is None:
            return per_token.mean()
        weight = _select(mask, predicted).float()  # (B, N_dec): 1 where the token was also hidden
        # Guarding the denominator keeps a batch whose kept tokens were all visible finite (loss 0).
        return (per_token * weight).sum() / weight.sum().clamp_min(1.0)
