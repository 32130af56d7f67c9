"""ViT building blocks for video: tubelet patch embedding, attention, MLP, transformer block.

Parameter names follow the original VideoMAE / VideoMAE V2 release (``patch_embed.proj``, ``attn.qkv``,
``attn.q_bias``, ``attn.v_bias``, ``attn.scale``, ``mlp.fc1``, ``gamma_1``, ...), so its checkpoints load
without renaming.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import DropPath, trunc_normal_
from torch import nn

from videomae.models.arguments import check_model_arguments

__all__ = [
    "Attention",
    "Block",
    "Mlp",
    "PatchEmbed3D",
    "gather_tokens",
    "init_vit_module",
    "init_vit_weights",
    "make_blocks",
    "set_fused_attention",
]

# Cosine attention: the learnable per-head logit scale is clamped at log(100), as in Swin V2 / VideoMAE V2.
_MAX_LOGIT_SCALE = math.log(100.0)


def gather_tokens(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Tokens of ``x`` [B, N, D] where ``keep`` [B, N] is True, in token order -> [B, n, D].

    Raises:
        ValueError: when ``keep`` has the wrong shape or keeps a different count per sample.
    """
    if keep.dtype != torch.bool or keep.shape != x.shape[:2]:
        raise ValueError(
            f"mask must be a bool tensor of shape {tuple(x.shape[:2])}, got {keep.dtype} {tuple(keep.shape)}"
        )
    counts = keep.sum(dim=1)
    if counts.numel() and bool(counts.min() != counts.max()):
        raise ValueError(f"every sample must keep the same number of tokens, got counts {counts.tolist()}")
    return x[keep].reshape(x.shape[0], -1, x.shape[2])  # (B, n, D)


class PatchEmbed3D(nn.Module):
    """Cut a clip into ``tubelet × patch × patch`` cubes and project each to ``embed_dim``.

    Args:
        img_size: input height and width (square).
        patch_size: spatial patch side.
        in_chans: input channels.
        embed_dim: token width.
        num_frames: input frames.
        tubelet_size: frames per token.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        num_frames: int = 16,
        tubelet_size: int = 2,
    ) -> None:
        super().__init__()
        sizes = {"img_size": img_size, "patch_size": patch_size, "all_frames": num_frames, "tubelet_size": tubelet_size}
        check_model_arguments(sizes)  # the model's names: num_frames is its all_frames
        self.img_size = img_size
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.in_chans = in_chans
        self.num_frames = num_frames
        self.grid_size = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        self.num_patches = math.prod(self.grid_size)
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, videos: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Embed ``videos`` [B, C, T, H, W] -> [B, N, D]; with ``keep`` [B, N] only the kept tokens -> [B, n, D].

        Kernel and stride are equal, so the convolution is one matrix product per token; with ``keep`` the
        product runs on the kept cubes only (the encoder's visible 5-10%) instead of on the whole clip, which
        the original computes and then mostly discards.
        """
        expected = (self.in_chans, self.num_frames, self.img_size, self.img_size)
        if videos.ndim != 5 or tuple(videos.shape[1:]) != expected:
            raise ValueError(
                f"expected videos [B, C, T, H, W] with (C, T, H, W) = {expected}, got {tuple(videos.shape)}"
            )
        if keep is None:
            x = self.proj(videos)  # (B, D, T', H', W')
            return rearrange(x, "b d t h w -> b (t h w) d")  # (B, N, D)
        cubes = rearrange(
            videos, "b c (t p0) (h p1) (w p2) -> b (t h w) (c p0 p1 p2)",
            p0=self.tubelet_size, p1=self.patch_size, p2=self.patch_size,
        )  # fmt: skip
        cubes = gather_tokens(cubes, keep)  # (B, n, C*t*p*p), laid out like the Conv3d weight
        return F.linear(cubes, self.proj.weight.flatten(1), self.proj.bias)  # (B, n, D)


class Attention(nn.Module):
    """Multi-head self-attention with the release's q/v bias and optional cosine attention.

    The projection is one bias-free ``qkv`` Linear plus separate ``q_bias`` / ``v_bias`` parameters; the key
    bias is fixed at zero (a key bias only shifts every logit of a query by the same amount, so it is redundant).

    Args:
        dim: token width.
        num_heads: attention heads.
        qkv_bias: learn ``q_bias`` and ``v_bias``.
        attn_drop: dropout on attention weights.
        proj_drop: dropout after the output projection.
        cos_attn: cosine attention with a learnable per-head logit scale (``scale``, log-space, clamped at log 100).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        cos_attn: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.cos_attn = cos_attn
        # True: torch's scaled_dot_product_attention (fused kernels); False: the plain-math reference path.
        self.fused = True
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = None
            self.v_bias = None
        if cos_attn:
            self.scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        else:
            self.scale = self.head_dim**-0.5
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def reset_parameters(self) -> None:
        """Zero q/v biases; cosine-attention logit scale back to log(10) (the Linears are set by the model)."""
        with torch.no_grad():
            if self.q_bias is not None:
                self.q_bias.zero_()
                self.v_bias.zero_()
            if self.cos_attn:
                self.scale.fill_(math.log(10.0))

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bias = None
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias)  # (B, N, 3 D)
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=self.num_heads)  # 3 x (B, H, N, d)
        return q, k, v

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend over ``x`` [B, N, D]; ``attn_mask`` bool, broadcastable to [B, H, N, N], True = may attend (e.g.
        a causal text tower's mask); ``None``: every token attends to every token."""
        q, k, v = self._qkv(x)
        if self.cos_attn:
            # Fold the per-head logit scale into the unit-norm queries so the fused kernel can take scale=1.
            logit_scale = torch.clamp(self.scale, max=_MAX_LOGIT_SCALE).exp()  # (H, 1, 1)
            q = F.normalize(q, dim=-1) * logit_scale
            k = F.normalize(k, dim=-1)
            scale = 1.0
        else:
            scale = self.scale
        dropout = self.attn_drop if self.training else 0.0
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout, scale=scale)
        else:
            attn = (q * scale) @ k.transpose(-2, -1)  # (B, H, N, N)
            if attn_mask is not None:
                attn = attn.masked_fill(~attn_mask, float("-inf"))
            attn = F.dropout(attn.softmax(dim=-1), p=dropout, training=self.training)
            out = attn @ v
        out = rearrange(out, "b h n d -> b n (h d)")  # (B, N, D)
        return self.proj_drop(self.proj(out))


class Mlp(nn.Module):
    """Two-layer perceptron ``fc1 → GELU → fc2`` with dropout."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block with optional layer scale (``gamma_1``, ``gamma_2`` when ``init_values > 0``).

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width over ``dim`` (hidden = ``int(dim * mlp_ratio)``, as the release).
        qkv_bias: learn q/v biases.
        drop: dropout after projections.
        attn_drop: dropout on attention weights.
        drop_path: stochastic-depth rate of this block.
        init_values: initial layer-scale value; ``None`` or 0 disables layer scale.
        norm_eps: LayerNorm epsilon (1e-6 in the release).
        cos_attn: cosine attention.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        init_values: float | None = None,
        norm_eps: float = 1e-6,
        cos_attn: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop, cos_attn)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.init_values = init_values
        if init_values:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(init_values)))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(init_values)))
        else:
            self.gamma_1 = None
            self.gamma_2 = None

    def reset_parameters(self) -> None:
        """Layer scale back to ``init_values``."""
        if self.gamma_1 is not None:
            with torch.no_grad():
                self.gamma_1.fill_(float(self.init_values))
                self.gamma_2.fill_(float(self.init_values))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """One block on ``x`` [B, N, D]; ``attn_mask`` as :meth:`Attention.forward`."""
        if self.gamma_1 is None:
            x = x + self.drop_path(self.attn(self.norm1(x), attn_mask))
            return x + self.drop_path(self.mlp(self.norm2(x)))
        x = x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x), attn_mask))
        return x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))


def make_blocks(
    depth: int,
    dim: int,
    num_heads: int,
    *,
    mlp_ratio: float = 4.0,
    qkv_bias: bool = True,
    drop_rate: float = 0.0,
    attn_drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    init_values: float | None = None,
    cos_attn: bool = False,
) -> nn.ModuleList:
    """``depth`` blocks whose stochastic-depth rate rises linearly from 0 to ``drop_path_rate`` (as the release)."""
    rates = [i * drop_path_rate / max(depth - 1, 1) for i in range(depth)]
    return nn.ModuleList(
        Block(dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, rate, init_values, 1e-6, cos_attn)
        for rate in rates
    )


def init_vit_weights(module: nn.Module, linear_init: str = "xavier") -> None:
    """Initialise every sub-module as the release: Linears ``xavier`` (pretraining) or ``trunc_normal`` std 0.02
    (fine-tuning) with zero bias, unit LayerNorms, PyTorch's default for the patch Conv3d, zero q/v biases and
    layer scale at ``init_values``. Also fills memory left uninitialised by ``to_empty()``.

    Goes through ``module.apply`` (children before parents; the leaves, which draw the random numbers, in the same
    order as ``module.modules()``), so a wrapper of ``nn.Module.apply`` sees each module's own parameters: DeepSpeed's
    ``zero.Init`` gathers a partitioned module there while it is initialised.
    """
    module.apply(functools.partial(init_vit_module, linear_init=linear_init))


def init_vit_module(m: nn.Module, linear_init: str = "xavier") -> None:
    """Initialise ``m``'s own parameters (not its children's) as :func:`init_vit_weights` does."""
    if linear_init not in ("xavier", "trunc_normal"):
        raise ValueError(f"linear_init must be 'xavier' or 'trunc_normal', got {linear_init!r}")
    if isinstance(m, nn.Linear):
        if linear_init == "xavier":
            nn.init.xavier_uniform_(m.weight)
        else:
            trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.Conv3d, Attention, Block)):
        m.reset_parameters()


def set_fused_attention(model: nn.Module, enabled: bool = True) -> None:
    """Switch every :class:`Attention` in ``model`` between SDPA (``True``) and the plain-math path (``False``)."""
    for module in model.modules():
        if isinstance(module, Attention):
            module.fused = enabled
