"""Position tables: VideoMAE's fixed 1-D sinusoid table, MAE's fixed 2-D sin-cos table, and resampling a table to
another token grid."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

__all__ = ["guess_grid", "interpolate_pos_table", "is_fixed_table", "sincos_2d_table", "sinusoid_table"]


def sinusoid_table(num_positions: int, dim: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The fixed sinusoid table of the original VideoMAE, over the flattened ``(t, h, w)`` token index.

    ``table[n, j] = sin(n / 10000^(2⌊j/2⌋/dim))`` for even ``j`` and ``cos(...)`` for odd ``j``; computed in
    float64 (as the release's NumPy code) and returned as float32 ``[1, num_positions, dim]`` on ``device``
    (default: the current default device, so a model built under ``torch.device("meta")`` stays on ``meta``).
    """
    position = torch.arange(num_positions, dtype=torch.float64, device=device)[:, None]  # (N, 1)
    exponent = 2 * torch.div(torch.arange(dim, device=device), 2, rounding_mode="floor") / dim  # (D,)
    angle = position / torch.pow(torch.tensor(10000.0, dtype=torch.float64, device=device), exponent)  # (N, D)
    table = torch.empty_like(angle)
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table.float().unsqueeze(0)  # (1, N, D)


def _sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """``[sin(p·ω) | cos(p·ω)]`` with ``ω_i = 10000^(-i / (dim/2))``: ``positions`` (M,) float64 -> (M, dim)."""
    omega = 1.0 / 10000.0 ** (torch.arange(dim // 2, dtype=torch.float64, device=positions.device) / (dim / 2))
    angle = positions[:, None] * omega[None, :]  # (M, dim/2)
    return torch.cat([angle.sin(), angle.cos()], dim=1)


def sincos_2d_table(
    height: int, width: int, dim: int, num_prefix_tokens: int = 1, device: torch.device | str | None = None
) -> torch.Tensor:
    """The fixed 2-D sin-cos table of the MAE release over a ``height x width`` patch grid (row-major tokens).

    The first half of the channels encodes the token's column, the second half its row (the release builds the grid
    with ``meshgrid(w, h)``; ``transformers`` keeps that order for the released weights), each half
    ``[sin | cos]`` of the 1-D table. ``num_prefix_tokens`` zero rows lead (the class token's position is zero).
    Computed in float64, returned as float32 ``[1, num_prefix_tokens + height * width, dim]``.

    Raises:
        ValueError: ``dim`` is not a multiple of 4.
    """
    if dim % 4:
        raise ValueError(f"a 2-D sin-cos position table needs a width divisible by 4, got {dim}")
    rows = torch.arange(height, dtype=torch.float64, device=device).repeat_interleave(width)  # (H*W,) h of each token
    cols = torch.arange(width, dtype=torch.float64, device=device).repeat(height)  # (H*W,) w of each token
    table = torch.cat([_sincos_1d(cols, dim // 2), _sincos_1d(rows, dim // 2)], dim=1)  # (H*W, D)
    prefix = torch.zeros(num_prefix_tokens, dim, dtype=torch.float64, device=device)
    return torch.cat([prefix, table]).float().unsqueeze(0)  # (1, P + H*W, D)


def is_fixed_table(table: torch.Tensor, atol: float = 1e-4) -> bool:
    """Whether ``table`` ``[1, N, D]`` is one of the fixed tables our models build themselves (so a checkpoint that
    stores it carries no information): the 1-D sinusoid over ``N`` tokens, or a square 2-D sin-cos table with no or
    one leading zero row (MAE's class token)."""
    if table.ndim != 3 or table.shape[0] != 1:
        return False
    num, dim = table.shape[1], table.shape[2]
    table = table.detach().float().cpu()
    if torch.allclose(table, sinusoid_table(num, dim, device="cpu"), atol=atol):
        return True
    for prefix in (0, 1):
        side = math.isqrt(num - prefix)
        if dim % 4 == 0 and side * side == num - prefix:
            if torch.allclose(table, sincos_2d_table(side, side, dim, prefix, device="cpu"), atol=atol):
                return True
    return False


def interpolate_pos_table(
    table: torch.Tensor,
    old_grid: tuple[int, int, int],
    new_grid: tuple[int, int, int],
    num_extra_tokens: int = 0,
    mode: str = "trilinear",
) -> torch.Tensor:
    """Resample a position table laid out over ``old_grid = (T', H', W')`` to ``new_grid``.

    Interpolation is over the 3-D grid (``align_corners=False``), computed in float32 and returned in the
    table's dtype. Leading extra tokens (a class token) are kept unchanged.

    Args:
        table: ``[1, num_extra_tokens + T'·H'·W', D]``.
        old_grid: the grid the table was laid out for.
        new_grid: the target grid.
        num_extra_tokens: leading tokens that are not on the grid.
        mode: ``"trilinear"`` or ``"nearest"`` (any 3-D mode of ``torch.nn.functional.interpolate``).

    Returns:
        ``[1, num_extra_tokens + prod(new_grid), D]``.
    """
    if table.ndim != 3 or table.shape[0] != 1:
        raise ValueError(f"position table must be [1, N, D], got {tuple(table.shape)}")
    if table.shape[1] != num_extra_tokens + math.prod(old_grid):
        raise ValueError(
            f"position table has {table.shape[1]} tokens, expected {num_extra_tokens} extra + grid {old_grid}"
        )
    extra, grid_tokens = table[:, :num_extra_tokens], table[:, num_extra_tokens:]
    if tuple(old_grid) == tuple(new_grid):
        return table.clone()
    t, h, w = old_grid
    volume = rearrange(grid_tokens.float(), "1 (t h w) d -> 1 d t h w", t=t, h=h, w=w)  # (1, D, T', H', W')
    volume = F.interpolate(volume, size=tuple(new_grid), mode=mode, align_corners=False if mode != "nearest" else None)
    resampled = rearrange(volume, "1 d t h w -> 1 (t h w) d").to(table.dtype)  # (1, N_new, D)
    return torch.cat([extra, resampled], dim=1)


def guess_grid(num_tokens: int, like: tuple[int, int, int]) -> tuple[int, int, int] | None:
    """Guess the ``(T', H', W')`` grid of a table with ``num_tokens`` tokens, assuming square frames.

    Preference: the same ``T'`` as ``like``, then ``T' = 8`` (16 frames, tubelet 2: every VideoMAE release), then
    the same ``H' = W'`` as ``like``. Returns ``None`` when nothing fits, so the caller can ask for the grid explicitly.
    """
    candidates = []
    for t in range(1, num_tokens + 1):
        if num_tokens % t:
            continue
        side = math.isqrt(num_tokens // t)
        if side * side == num_tokens // t:
            candidates.append((t, side, side))
    for pick in (
        lambda g: g[0] == like[0],
        lambda g: g[0] == 8,
        lambda g: g[1] == like[1] and g[2] == like[2],
    ):
        chosen = [g for g in candidates if pick(g)]
        if len(chosen) == 1:
            return chosen[0]
    return None
