"""Pixel patches: cut videos into per-token pixel vectors and back, and the normalised-pixel target."""

from __future__ import annotations

import torch
from einops import rearrange
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

__all__ = ["denormalize", "patchify", "patch_pixel_targets", "unpatchify"]

_PATCH_PATTERN = "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c"


def denormalize(
    videos: torch.Tensor,
    mean: tuple[float, ...] = IMAGENET_DEFAULT_MEAN,
    std: tuple[float, ...] = IMAGENET_DEFAULT_STD,
) -> torch.Tensor:
    """Undo the input normalisation of ``[B, C, T, H, W]`` videos, giving pixels in 0..1."""
    shape = (1, -1, 1, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=videos.dtype, device=videos.device).view(shape)
    std_t = torch.as_tensor(std, dtype=videos.dtype, device=videos.device).view(shape)
    return videos * std_t + mean_t


def patchify(videos: torch.Tensor, patch_size: int, tubelet_size: int) -> torch.Tensor:
    """Cut ``[B, C, T, H, W]`` videos into token pixel vectors ``[B, N, tubelet * p * p * C]``.

    Tokens are ordered ``(t, h, w)`` and each vector is laid out ``(p0, p1, p2, c)``, channel last, as the
    targets of the original VideoMAE, so its decoder heads predict in the same order.
    """
    patches = rearrange(videos, _PATCH_PATTERN, p0=tubelet_size, p1=patch_size, p2=patch_size)  # (B, N, P, C)
    return rearrange(patches, "b n p c -> b n (p c)")


def unpatchify(
    patches: torch.Tensor, grid: tuple[int, int, int], patch_size: int, tubelet_size: int, channels: int = 3
) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``[B, N, tubelet * p * p * C]`` back to ``[B, C, T, H, W]``."""
    steps, height, width = grid
    return rearrange(
        patches,
        "b (t h w) (p0 p1 p2 c) -> b c (t p0) (h p1) (w p2)",
        t=steps,
        h=height,
        w=width,
        p0=tubelet_size,
        p1=patch_size,
        p2=patch_size,
        c=channels,
    )


def patch_pixel_targets(
    videos: torch.Tensor,
    patch_size: int,
    tubelet_size: int,
    normalize: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Reconstruction targets ``[B, N, tubelet * p * p * C]`` for ImageNet-normalised ``[B, C, T, H, W]`` videos.

    The videos are first brought back to 0..1 pixels. With ``normalize`` each token's pixels are standardised
    per channel over the token's ``tubelet * p * p`` values (mean, unbiased variance, ``eps`` added to the
    standard deviation), the VideoMAE "normalised pixel" target; otherwise the raw 0..1 pixels are returned.
    Computed in float32 whatever the input precision.
    """
    pixels = denormalize(videos.float())
    patches = rearrange(pixels, _PATCH_PATTERN, p0=tubelet_size, p1=patch_size, p2=patch_size)  # (B, N, P, C)
    if normalize:
        mean = patches.mean(dim=-2, keepdim=True)
        std = patches.var(dim=-2, unbiased=True, keepdim=True).sqrt()
        patches = (patches - mean) / (std + eps)
    return rearrange(patches, "b n p c -> b n (p c)")
