"""The MAE objective (He et al.): MSE on the hidden patches' pixels, each patch normalised on its own.

MAE's target differs from VideoMAE's (:mod:`videomae.objectives.masked_pixels`) in two ways, both kept here so the
loss equals the release's and ``transformers``' ViTMAE: the pixels are the model's input as given (ImageNet-
normalised, not brought back to 0..1), and ``norm_pix_loss`` standardises each patch over all its values at once
(``p·p·C``, channels together; unbiased variance, ``eps`` added to the variance), not per channel.
"""

from __future__ import annotations

import torch
from torch import nn

from videomae.objectives.pixels import patchify

__all__ = ["MAEPixelLoss", "mae_pixel_targets"]


def mae_pixel_targets(images: torch.Tensor, patch_size: int, normalize: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """Targets ``[B, N, p·p·C]`` (laid out ``(p, p, c)``, channel last, as the release's ``patchify``) of images
    ``[B, C, H, W]`` or one-frame clips ``[B, C, 1, H, W]``; float32 whatever the input precision."""
    clips = images.unsqueeze(2) if images.ndim == 4 else images  # (B, C, 1, H, W)
    patches = patchify(clips.float(), patch_size, 1)  # (B, N, p*p*C)
    if not normalize:
        return patches
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)  # unbiased, as torch's default in the release
    return (patches - mean) / (var + eps).sqrt()


class MAEPixelLoss(nn.Module):
    """Mean over the hidden patches of the per-patch mean squared error.

    Args:
        patch_size: patch side ``p``.
        normalize_target: the release's ``norm_pix_loss`` (its published setting) or the input pixels as given.
    """

    def __init__(self, patch_size: int, normalize_target: bool = True) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.normalize_target = normalize_target

    def forward(self, pred: torch.Tensor, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Loss of predictions ``pred`` ``[B, N_masked, p·p·C]`` (hidden patches in token order) for ``images`` under
        ``mask`` ``[B, N]`` (True = hidden). Returns a float32 scalar."""
        with torch.no_grad():
            targets = mae_pixel_targets(images, self.patch_size, self.normalize_target)
        if pred.shape[0] != mask.shape[0] or pred.shape[-1] != targets.shape[-1]:
            raise ValueError(f"predictions {tuple(pred.shape)} do not match targets {tuple(targets.shape)}")
        # The hidden tokens in token order, by a stable sort rather than boolean indexing (no host sync).
        hidden = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)[:, : pred.shape[1]]  # (B, N_masked)
        targets = torch.gather(targets, 1, hidden[..., None].expand(-1, -1, targets.shape[-1]))  # (B, N_masked, P)
        return (pred.float() - targets).pow(2).mean()
