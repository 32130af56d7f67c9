"""Reconstruction pictures: labelled rows of a few frames of a few clips, their errors, and PNG files.

Rows per clip, each named in a label column on the left:

* ``original`` and ``visible input`` (what the encoder saw; hidden tubes grey), in pixels;
* with normalised targets (the default): ``target, normalised`` (each patch standardised per channel, as the loss
  sees it), ``reconstruction, normalised`` and ``error`` (``|reconstruction - target|``), drawn as
  ``0.5 + value / 4`` and ``|error| / 4``: one std of a patch is a quarter of the grey range. No patch's own mean
  or std, which the model never sees, is used to draw its prediction
  (:mod:`videomae.objectives.reconstruction` says why);
* with pixel targets: ``reconstruction`` and ``error`` in 0..1 pixels.

The errors are those of :func:`videomae.objectives.reconstruction_errors`: the MSE, in the space shown, over the
hidden tokens, of the reconstruction (``recon_mse``) and of the flat baseline (``recon_baseline_mse``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image, ImageDraw, ImageFont

from videomae.objectives import (
    denormalize,
    masked_input_pixels,
    reconstruction_errors,
    target_space_reconstruction,
    unpatchify,
)

__all__ = ["LABEL_WIDTH", "ReconstructionPicture", "reconstruction_grid", "row_labels", "save_reconstruction"]

LABEL_WIDTH = 90  # pixels; "reconstruction" takes 68 with Pillow's FreeType default font, 84 with its bitmap one
_NORMALISED_SCALE = 4.0  # normalised values are drawn as 0.5 + value / 4


@dataclass
class ReconstructionPicture:
    """A labelled picture and the errors of what it shows."""

    image: torch.Tensor
    """uint8 ``[rows * B * H, LABEL_WIDTH + frames * W, 3]``."""
    recon_mse: float
    """MSE of the reconstruction over the hidden tokens, in the space shown."""
    recon_baseline_mse: float
    """The same for the flat baseline (each hidden patch the mean colour of the visible ones around it)."""

    def metrics(self) -> dict[str, float]:
        """``{"recon_mse": ..., "recon_baseline_mse": ...}`` as ``metrics.jsonl`` records them."""
        return {"recon_mse": self.recon_mse, "recon_baseline_mse": self.recon_baseline_mse}


def row_labels(normalize_target: bool = True) -> list[str]:
    """The rows of one clip, top to bottom (a line break where a label takes two lines)."""
    if normalize_target:
        return ["original", "visible input", "target\nnormalised", "reconstruction\nnormalised", "error"]
    return ["original", "visible input", "reconstruction", "error"]


def reconstruction_grid(
    videos: torch.Tensor,
    mask: torch.Tensor,
    decode_mask: torch.Tensor | None,
    pred: torch.Tensor,
    patch_size: int,
    tubelet_size: int,
    num_frames: int = 4,
    normalize_target: bool = True,
) -> ReconstructionPicture:
    """The labelled rows of :func:`row_labels` for each clip, ``num_frames`` evenly spaced frames each.

    Args:
        videos: normalised clips ``[B, C, T, H, W]``; ``mask``/``decode_mask`` ``[B, N]``; ``pred`` ``[B, N_dec, D]``.
        num_frames: frames shown per row.
        normalize_target: the model predicts per-patch normalised pixels.
    """
    videos, pred = videos.float(), pred.detach().float()
    target, shown, scored = target_space_reconstruction(
        pred, videos, mask, decode_mask, patch_size, tubelet_size, normalize_target
    )
    error = (shown - target).abs() * _video_mask(scored, videos, patch_size, tubelet_size)
    if normalize_target:
        drawn = [0.5 + target / _NORMALISED_SCALE, 0.5 + shown / _NORMALISED_SCALE, error / _NORMALISED_SCALE]
    else:
        drawn = [shown, error]
    original = denormalize(videos)
    rows = [original, masked_input_pixels(videos, mask, patch_size, tubelet_size), *drawn]
    frames = torch.linspace(0, videos.shape[2] - 1, min(num_frames, videos.shape[2])).round().long()
    stacked = torch.stack(rows, dim=1)[:, :, :, frames].clamp(0, 1)  # (B, R, C, F, H, W)
    pixels = rearrange(stacked, "b r c f h w -> (b r h) (f w) c")
    image = _with_labels((pixels * 255).round().to(torch.uint8), row_labels(normalize_target), videos.shape[-2])
    errors = reconstruction_errors(pred, videos, mask, decode_mask, patch_size, tubelet_size, normalize_target)
    return ReconstructionPicture(image, **errors)


def save_reconstruction(path: str | Path, image: torch.Tensor) -> None:
    """Write a uint8 ``[H, W, C]`` image as PNG (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.cpu().numpy()).save(path)


def _video_mask(tokens: torch.Tensor, videos: torch.Tensor, patch_size: int, tubelet_size: int) -> torch.Tensor:
    """A bool ``[B, N]`` token mask as a 0/1 float video shaped like ``videos``."""
    _, channels, frames, height, width = videos.shape
    grid = (frames // tubelet_size, height // patch_size, width // patch_size)
    values = tokens.float()[..., None].expand(-1, -1, tubelet_size * patch_size * patch_size * channels)
    return unpatchify(values, grid, patch_size, tubelet_size, channels)


def _with_labels(image: torch.Tensor, labels: list[str], row_height: int) -> torch.Tensor:
    """``image`` with a white column of ``LABEL_WIDTH`` on the left naming each row (``labels`` repeat per clip)."""
    canvas = Image.new("RGB", (LABEL_WIDTH + image.shape[1], image.shape[0]), "white")
    canvas.paste(Image.fromarray(image.cpu().numpy()), (LABEL_WIDTH, 0))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for row in range(image.shape[0] // row_height):
        draw.multiline_text((3, row * row_height + 2), labels[row % len(labels)], fill="black", font=font, spacing=1)
    return torch.from_numpy(np.asarray(canvas).copy())
