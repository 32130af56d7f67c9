"""Reconstruction pictures during pretraining: fixed clips under fixed masks, one PNG per picture step
(:mod:`videomae.evaluation.pictures` draws them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from videomae.config import MaskConfig
from videomae.engine import dist
from videomae.engine.ds_engine import TrainingEngine
from videomae.engine.loop import compute_dtype
from videomae.evaluation.pictures import reconstruction_grid, save_reconstruction
from videomae.masking import MaskGenerator

__all__ = ["ReconstructionPictures"]


class ReconstructionPictures:
    """Pictures of a fixed set of clips under fixed masks, so successive pictures show the progress.

    The decoder predicts every hidden token here (no decoder mask), so the whole hidden area is reconstructed.
    """

    def __init__(
        self, clips: list[torch.Tensor], model: Any, mask: MaskConfig, out: Path, normalize_target: bool = True
    ) -> None:
        clips = [c[0] if c.ndim == 5 else c for c in clips]  # first of the num_sample views
        self.videos = torch.stack(clips)  # (P, C, T, H, W)
        self.mask, _ = MaskGenerator.seeded(mask, model.grid_size, seed=12345)(len(clips))
        self.patch_size, self.tubelet_size = model.patch_size, model.tubelet_size
        self.out, self.normalize_target = Path(out), normalize_target

    @torch.no_grad()
    def save(self, engine: TrainingEngine, step: int) -> None:
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
