"""The video ViT trunk shared by the pretraining encoder and the classification model.

``patch_embed → + position table → (keep visible tokens) → blocks → norm``. Keys: ``patch_embed.proj``,
``blocks.N.*``, ``norm`` (and ``pos_embed`` only when it is learnable; the fixed table is a non-persistent
buffer, as in the release, so it is not in the state dict).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.utils.checkpoint as cp
from timm.layers import trunc_normal_
from torch import nn

from videomae.models.layers import PatchEmbed3D, gather_tokens, init_vit_module, make_blocks
from videomae.models.pos_embed import interpolate_pos_table, sinusoid_table

__all__ = ["VideoViT", "gather_tokens", "run_blocks"]


def run_blocks(
    blocks: nn.ModuleList, x: torch.Tensor, with_cp: bool, attn_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Apply ``blocks`` in turn, recomputing each in backward when ``with_cp`` (activation checkpointing);
    ``attn_mask``: see :meth:`~videomae.models.layers.Attention.forward`."""
    for block in blocks:
        if with_cp and torch.is_grad_enabled():
            x = cp.checkpoint(block, x, attn_mask, use_reentrant=False)
        else:
            x = block(x, attn_mask)
    return x


class VideoViT(nn.Module):
    """Patch embedding, position table, transformer blocks and final norm.

    Args:
        img_size: input height = width.
        patch_size: spatial patch side.
        in_chans: input channels.
        embed_dim: token width.
        depth: number of blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width over ``embed_dim``.
        qkv_bias: learn q/v biases.
        drop_rate: dropout after projections.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, rising linearly over the blocks to this rate.
        init_values: layer-scale initial value; ``None``/0 disables it.
        tubelet_size: frames per token.
        all_frames: input frames.
        use_learnable_pos_emb: learn the position table (``pos_embed`` parameter) instead of the fixed sinusoid.
        with_cp: activation checkpointing per block.
        cos_attn: cosine attention.
        final_norm: apply ``norm`` after the blocks (``False`` makes ``norm`` an identity).
        pos_table_grid: ``(T', H', W')`` the fixed table was laid out for in pretraining. When it differs from this
            model's grid, the fixed table is that grid's sinusoid table resampled (trilinear) to this grid, as
            VideoMAE V2 fine-tunes at other frame counts / resolutions; ``None`` builds the table for this grid.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        init_values: float | None = 0.0,
        tubelet_size: int = 2,
        all_frames: int = 16,
        use_learnable_pos_emb: bool = False,
        with_cp: bool = False,
        cos_attn: bool = False,
        final_norm: bool = True,
        pos_table_grid: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.with_cp = with_cp
        self.pos_table_grid = tuple(pos_table_grid) if pos_table_grid is not None else None
        self.patch_embed = PatchEmbed3D(img_size, patch_size, in_chans, embed_dim, all_frames, tubelet_size)
        if use_learnable_pos_emb:
            self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, embed_dim))
        else:
            self.register_buffer("pos_embed", self._fixed_table(), persistent=False)
        self.blocks = make_blocks(
            depth, embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate, init_values=init_values, cos_attn=cos_attn,
        )  # fmt: skip
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6) if final_norm else nn.Identity()

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """Token grid ``(T', H', W')``."""
        return self.patch_embed.grid_size

    def _fixed_table(self, device: torch.device | None = None) -> torch.Tensor:
        grid = self.grid_size
        if self.pos_table_grid is None or self.pos_table_grid == grid:
            return sinusoid_table(self.patch_embed.num_patches, self.embed_dim, device=device)
        source = sinusoid_table(math.prod(self.pos_table_grid), self.embed_dim, device=device)
        return interpolate_pos_table(source, self.pos_table_grid, grid)  # (1, N, D)

    def reset_pos_table(self) -> None:
        """Recompute the fixed table (needed after ``to_empty()``; ``init_weights`` re-draws a learnable one)."""
        if not isinstance(self.pos_embed, nn.Parameter):
            self.pos_embed = self._fixed_table(self.pos_embed.device)

    def init_weights(self, linear_init: str = "xavier") -> None:
        """Initialise as the release: ``xavier`` (pretraining) or ``trunc_normal`` std 0.02 (fine-tuning) Linears."""
        self.apply(functools.partial(self.init_module, linear_init=linear_init))
        self.reset_pos_table()

    def init_module(self, m: nn.Module, linear_init: str = "xavier") -> None:
        """Initialise the own parameters of ``m``, this model or one of its modules (``init_weights`` passes each
        to it through ``self.apply``, children first, so ZeRO-3's ``zero.Init`` can gather one module at a time)."""
        init_vit_module(m, linear_init)
        if m is self and isinstance(self.pos_embed, nn.Parameter):
            trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, videos: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Same as :meth:`forward_tokens`."""
        return self.forward_tokens(videos, mask)

    def forward_tokens(self, videos: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encode ``videos`` [B, C, T, H, W]; with ``mask`` [B, N] (True = hidden) only the visible tokens.

        Returns:
            ``[B, N_vis, D]`` normalised tokens in token order (``N_vis = N`` without a mask).
        """
        pos = self.pos_embed.to(dtype=videos.dtype)  # (1, N, D)
        if mask is None:
            x = self.patch_embed(videos) + pos  # (B, N, D)
        else:
            visible = ~mask
            pos = gather_tokens(pos.expand(videos.shape[0], -1, -1), visible)  # (B, N_vis, D)
            x = self.patch_embed(videos, keep=visible) + pos  # (B, N_vis, D)
        x = run_blocks(self.blocks, x, self.with_cp)
        return self.norm(x)
