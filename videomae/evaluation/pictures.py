"""Reconstruction pictures: original | masked input | reconstruction, a few frames of a few clips, as PNG."""

from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange
from PIL import Image

from videomae.objectives import denormalize, masked_input_pixels, predictions_to_pixels

__all__ = ["reconstruction_grid", "save_reconstruction"]


def reconstruction_grid(
    videos: torch.Tensor,
    mask: torch.Tensor,
    decode_mask: torch.Tensor | None,
    pred: torch.Tensor,
    patch_size: int,
    tubelet_size: int,
    num_frames: int = 4,
    normalize_target: bool = True,
) -> torch.Tensor:
    """Picture rows per clip: original, masked input, reconstruction; ``num_frames`` evenly spaced frames each.

    Args:
        videos: normalised clips ``[B, C, T, H, W]``; ``mask``/``decode_mask`` ``[B, N]``; ``pred`` ``[B, N_dec, D]``.

    Returns:
        uint8 image ``[3 * B * H, num_frames * W, C]``.
    """
    original = denormalize(videos.float()).clamp(0, 1)
    masked = masked_input_pixels(videos, mask, patch_size, tubelet_size)
    recon = predictions_to_pixels(pred, videos, mask, decode_mask, patch_size, tubelet_size, normalize_target)
    frames = torch.linspace(0, videos.shape[2] - 1, min(num_frames, videos.shape[2])).round().long()
    rows = torch.stack([original, masked, recon], dim=1)[:, :, :, frames]  # (B, 3, C, F, H, W)
    image = rearrange(rows, "b r c f h w -> (b r h) (f w) c")
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def save_reconstruction(path: str | Path, image: torch.Tensor) -> None:
    """Write a uint8 ``[H, W, C]`` image as PNG (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.cpu().numpy()).save(path)
