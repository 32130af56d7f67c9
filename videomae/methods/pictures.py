"""Reconstruction pictures during pretraining: fixed clips under fixed masks, one PNG per picture step
(:mod:`videomae.evaluation.pictures` draws them), with the reconstruction error against the flat baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from videomae.config import MaskConfig
from videomae.engine import dist
from videomae.engine.ds_engine import TrainingEngine
from videomae.engine.logging_utils import Picture
from videomae.engine.loop import compute_dtype
from videomae.evaluation.pictures import reconstruction_grid, save_reconstruction
from videomae.masking import MaskGenerator
from videomae.objectives import reconstruction_errors

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
    def save(self, engine: TrainingEngine, step: int) -> dict[str, Any]:
        """Reconstruct with the engine's current weights and write ``step_{step:08d}.png`` (collective).

        Returns:
            The figures for ``metrics.jsonl``, the same keys on every rank: ``recon_mse`` and
            ``recon_baseline_mse`` (:func:`videomae.objectives.reconstruction_errors`), and on rank 0
            ``recon_picture``, a :class:`~videomae.engine.logging_utils.Picture` that
            :class:`~videomae.engine.logging_utils.MetricsWriter` sends to TensorBoard and wandb.
        """
        # Every rank runs the forward (ZeRO-3 gathers parameters collectively) and scores it (a few clips on the
        # host: cheap), so every rank returns the same figures; rank 0 draws and writes the picture.
        device = engine.device
        engine.eval()
        pred = engine(self.videos.to(device, compute_dtype(engine)), self.mask.to(device), None)
        engine.train()
        pred = pred.float().cpu()
        if not dist.is_main():
            return reconstruction_errors(
                pred, self.videos, self.mask, None, self.patch_size, self.tubelet_size, self.normalize_target
            )
        picture = reconstruction_grid(
            self.videos, self.mask, None, pred, self.patch_size, self.tubelet_size,
            normalize_target=self.normalize_target,
        )  # fmt: skip
        name = f"step_{step:08d}.png"
        save_reconstruction(self.out / name, picture.image)
        return {**picture.metrics(), "recon_picture": Picture(picture.image.numpy(), f"{self.out.name}/{name}")}
