"""The image ViT trunk of MAE: our video trunk on one-frame clips (tubelet 1) with a class token and the release's
fixed 2-D sin-cos position table (the class token's row is zero).

Images come as ``[B, C, H, W]`` or as one-frame clips ``[B, C, 1, H, W]`` (what the video data gives with
``data.num_frames=1``); tokens are ordered ``(h, w)``. Keys: ``cls_token``, ``patch_embed.proj`` (a ``Conv3d`` with
a 1-frame kernel: the release's ``Conv2d`` weight with a time axis of one), ``blocks.N.*``, ``norm``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from videomae.models.arguments import ModelArgumentError
from videomae.models.backbone import VideoViT
from videomae.models.pos_embed import interpolate_pos_table, sincos_2d_table

__all__ = ["ImageViT", "as_clips", "check_image_arguments"]


def as_clips(images: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` images as one-frame clips ``[B, C, 1, H, W]``; clips pass unchanged."""
    return images.unsqueeze(2) if images.ndim == 4 else images


def check_image_arguments(all_frames: Any, tubelet_size: Any) -> None:
    """An image model takes one frame per clip and one frame per token.

    Raises:
        ModelArgumentError: ``all_frames`` or ``tubelet_size`` is not 1 (named, so preflight can name the key).
    """
    for name, value in (("all_frames", all_frames), ("tubelet_size", tubelet_size)):
        if value != 1:
            raise ModelArgumentError(name, value, "1 (an image model takes one-frame clips, data.num_frames=1)")


class ImageViT(VideoViT):
    """Class token, patch embedding, fixed 2-D sin-cos table, transformer blocks and final norm.

    Takes :class:`~videomae.models.backbone.VideoViT`'s arguments (``all_frames`` and ``tubelet_size`` must be 1).
    A learnable table (``use_learnable_pos_emb``, as MAE fine-tuning trains it) starts from the sin-cos table.
    """

    num_prefix_tokens = 1

    def __init__(self, *, all_frames: int = 1, tubelet_size: int = 1, **kwargs: Any) -> None:
        check_image_arguments(all_frames, tubelet_size)
        super().__init__(all_frames=all_frames, tubelet_size=tubelet_size, **kwargs)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))

    def _fixed_table(self, device: torch.device | None = None) -> torch.Tensor:
        _, height, width = self.grid_size
        source = self.pos_table_grid
        if source is None or tuple(source) == self.grid_size:
            return sincos_2d_table(height, width, self.embed_dim, 1, device=device)  # (1, 1 + N, D)
        table = sincos_2d_table(source[1], source[2], self.embed_dim, 1, device=device)
        return interpolate_pos_table(table, source, self.grid_size, num_extra_tokens=1)  # (1, 1 + N, D)

    def init_module(self, m: nn.Module, linear_init: str = "xavier") -> None:
        """One module's own parameters (see :meth:`VideoViT.init_module`), plus as the MAE release: the class token
        N(0, 0.02), in pretraining (``xavier``) the patch projection xavier-uniform as a Linear, and a learnable
        table set to the sin-cos one."""
        super().init_module(m, linear_init)
        if m is self.patch_embed.proj and linear_init == "xavier":
            nn.init.xavier_uniform_(m.weight.view(m.weight.shape[0], -1))
        if m is self:
            nn.init.normal_(self.cls_token, std=0.02)
            if isinstance(self.pos_embed, nn.Parameter):
                with torch.no_grad():
                    self.pos_embed.copy_(self._fixed_table(self.pos_embed.device))

    def embed(self, videos: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[cls | visible patch tokens]`` with their positions -> ``[B, 1 + N_vis, D]``."""
        x = super().embed(as_clips(videos), mask)  # (B, N_vis, D)
        cls = (self.cls_token + self.pos_embed[:, :1]).to(x.dtype)  # (1, 1, D)
        return torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)
