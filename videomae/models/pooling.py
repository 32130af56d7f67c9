"""Pooling heads that turn a vision tower's tokens into one feature per clip, for the contrastive loss.

``gap``: global average pooling (then the tower's ``fc_norm``, exactly the classifier's ``forward_features``).
``map``: multi-head attention pooling, one learned query cross-attends to the tokens, then a residual MLP (as the
MAP head of Zhai et al., used by SigLIP). ``max``: a per-token two-layer MLP, then the element-wise maximum over
tokens: the max-style pooling MAE-CLIP compares with the other two (our reading of Weers et al.; the MLP gives
the maximum non-linear features to pick from rather than the raw, normalised tokens).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from videomae.models.layers import Mlp

__all__ = ["POOLINGS", "AttentionPool", "MaxPool", "MeanPool", "build_pooling"]

POOLINGS = ("gap", "map", "max")
PoolingKind = Literal["gap", "map", "max"]


class MeanPool(nn.Module):
    """Mean over tokens: ``[B, N, D] -> [B, D]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


class AttentionPool(nn.Module):
    """One learned query attends to the tokens; ``out = a + MLP(LN(a))`` with ``a`` the attended query.

    Args:
        dim: token width.
        num_heads: attention heads (must divide ``dim``).
        mlp_ratio: hidden width of the MLP over ``dim``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"pooling: width {dim} is not divisible by {num_heads} heads")
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def init_module(self, m: nn.Module) -> None:
        """The query as the release's tokens: N(0, 0.02) (children are set by the model's initialiser)."""
        if m is self:
            nn.init.normal_(self.query, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.query.to(x.dtype).expand(x.shape[0], -1, -1)  # (B, 1, D)
        a = self.attn(q, x, x, need_weights=False)[0]  # (B, 1, D)
        return (a + self.mlp(self.norm(a)))[:, 0]  # (B, D)


class MaxPool(nn.Module):
    """Per-token MLP, then the maximum of each feature over the tokens: ``[B, N, D] -> [B, D]``."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x).amax(dim=1)


def build_pooling(kind: PoolingKind, dim: int, num_heads: int) -> nn.Module:
    """The pooling head ``kind`` (one of :data:`POOLINGS`) for tokens of width ``dim``."""
    if kind == "gap":
        return MeanPool()
    if kind == "map":
        return AttentionPool(dim, num_heads)
    if kind == "max":
        return MaxPool(dim)
    raise ValueError(f"pooling {kind!r}: choose one of {', '.join(POOLINGS)}")
