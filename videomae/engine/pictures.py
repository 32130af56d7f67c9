"""Reconstruction pictures: original | masked input | reconstruction, a few frames of a few clips, as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from PIL import Image

from videomae.config import MaskConfig
from videomae.engine import dist
from videomae.engine.loop import MaskGenerator, compute_dtype
from videomae.objectives import denormalize, masked_input_pixels, predictions_to_pixels

__all__ = ["ReconstructionPictures", "reconstruction_grid", "save_reconstruction"]


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


class ReconstructionPictures:
    """Pictures of a fixed set of clips under fixed masks, so successive pictures show the progress.

    The decoder predicts every hidden token here (no decoder mask), so the whole hidden area is reconstructed.
    """

    def __init__(
        self, clips: list[torch.Tensor], model: Any, mask: MaskConfig, out: Path, normalize_target: bool = True
    ) -> None:
        clips = [c[0] if c.ndim == 5 else c for c in clips]  # first of the num_sample views
        self.videos = torch.stack(clips)  # (P, C, T, H, W)
        self.mask, _ = MaskGenerator(mask, model.grid_size, torch.device("cpu"), seed=12345)(len(clips))
        self.patch_size, self.tubelet_size = model.patch_size, model.tubelet_size
        self.out, self.normalize_target = Path(out), normalize_target

    @torch.no_grad()
    def save(self, engine: Any, step: int) -> None:
        """Reconstruct with the engine's current weights and write ``step_{step:08d}.png`` (collective)."""
        # Every rank runs the forward (ZeRO-3 gathers parameters collectively); rank 0 writes the file.
        device = engine.device
        engine.eval()
        pred = engine(self.videos.to(device, compute_dtype(engine)), self.mask.to(device), None)
        engine.train()
        if dist.is_main():
            image = reconstruction_grid(
                self.videos, self.mask, None, pred.float().cpu(), self.patch_size, self.tubelet_size,
                normalize_target=self.normalize_target,
            )  # fmt: skip
            save_reconstruction(self.out / f"step_{step:08d}.png", image)
