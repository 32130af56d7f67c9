"""Mask generators for masked video modelling.

Every generator is a pure function of ``(batch_size, grid, ratio, generator, device)`` and returns a boolean
tensor ``[B, N]`` with tokens ordered ``(t, h, w)`` over the token grid ``(T', H', W')``, where ``T'`` counts
tubelets. Masks are drawn for a whole batch at once, so the training step can make them on the accelerator
instead of per sample in data-loader workers.

Conventions (see DESIGN.md):
    * ``tube_mask`` / ``random_mask``: True = hidden from the encoder.
    * ``running_cell_mask``: True = dropped by the decoder (VideoMAE V2 dual masking).

Random numbers come from ``generator`` on the generator's own device and are then moved to ``device``; the
same seed therefore gives the same masks whatever device the masks end up on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from einops import repeat

if TYPE_CHECKING:
    from videomae.config import MaskConfig

Grid = tuple[int, int, int]

__all__ = [
    "Grid",
    "MaskGenerator",
    "Shuffle",
    "decoded_positions",
    "num_hidden",
    "random_mask",
    "random_shuffle",
    "running_cell_mask",
    "shuffle_from_noise",
    "tube_mask",
]


def _check_grid(grid: Grid) -> None:
    if len(grid) != 3 or any(int(size) < 1 for size in grid):
        raise ValueError(f"grid must be three positive sizes (T', H', W'), got {tuple(grid)}")


def num_hidden(num_tokens: int, ratio: float) -> int:
    """Number of tokens a mask of ``ratio`` hides out of ``num_tokens`` (rounded down, as the original).

    Raises:
        ValueError: if ``ratio`` is outside (0, 1) or hides no token / every token.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must be in the open interval (0, 1), got {ratio}")
    count = int(ratio * num_tokens)
    if count == 0 or count == num_tokens:
        raise ValueError(
            f"mask ratio {ratio} over {num_tokens} tokens hides {count} of them; "
            "choose a ratio that hides at least one token and keeps at least one"
        )
    return count


def _random_choice_mask(
    batch_size: int, num_tokens: int, count: int, generator: torch.Generator | None, device: torch.device | str | None
) -> torch.Tensor:
    """Bool ``[B, num_tokens]`` with exactly ``count`` True per row, drawn uniformly and independently per row."""
    noise_device = generator.device if generator is not None else device
    noise = torch.rand(batch_size, num_tokens, generator=generator, device=noise_device)  # (B, N)
    ranks = noise.argsort(dim=1).argsort(dim=1)  # rank of each token's noise within its row
    return (ranks < count).to(device)


def tube_mask(
    batch_size: int,
    grid: Grid,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Tube mask: one random spatial mask per sample, repeated over every tubelet step.

    Args:
        batch_size: number of samples ``B``.
        grid: token grid ``(T', H', W')``.
        ratio: fraction of the ``H' * W'`` spatial positions hidden (VideoMAE uses 0.9–0.95).
        generator: source of randomness; masks are reproducible from its seed.
        device: device of the returned tensor (default: the generator's, else CPU).

    Returns:
        Bool tensor ``[B, T' * H' * W']``, True = hidden from the encoder; every sample hides exactly
        ``T' * int(ratio * H' * W')`` tokens.
    """
    _check_grid(grid)
    steps, height, width = grid
    count = num_hidden(height * width, ratio)
    spatial = _random_choice_mask(batch_size, height * width, count, generator, device)  # (B, H'W')
    return repeat(spatial, "b hw -> b (t hw)", t=steps)


class Shuffle(NamedTuple):
    """The index arithmetic of MAE's random masking (``noise -> argsort -> ids_restore``), for a batch.

    Attributes:
        ids_keep: ``[B, N_keep]`` indices of the tokens the encoder sees, in shuffled order.
        ids_restore: ``[B, N]`` position of each token in the shuffled order (the inverse permutation: gathering the
            shuffled sequence with it restores token order).
        mask: bool ``[B, N]``, True = hidden from the encoder (the tokens past ``N_keep`` in shuffled order).
    """

    ids_keep: torch.Tensor
    ids_restore: torch.Tensor
    mask: torch.Tensor


def shuffle_from_noise(noise: torch.Tensor, ratio: float) -> Shuffle:
    """MAE's per-sample shuffle from ``noise`` ``[B, N]``: tokens sorted by ascending noise, the first ``N_keep``
    kept (as the release and ``transformers``' ViTMAE, which take the same ``noise``), ``N - N_keep =``
    :func:`num_hidden` hidden. The release keeps ``int(N * (1 - ratio))``: the same count whenever ``ratio * N`` is
    exact (0.75 on any grid of ``4k`` tokens, e.g. 14x14), else one token more may stay visible here.
    """
    num_tokens = noise.shape[1]
    num_keep = num_tokens - num_hidden(num_tokens, ratio)
    ids_shuffle = noise.argsort(dim=1)  # (B, N): token indices, ascending noise
    ids_restore = ids_shuffle.argsort(dim=1)  # (B, N): each token's place in the shuffled order
    return Shuffle(ids_shuffle[:, :num_keep], ids_restore, ids_restore >= num_keep)


def random_shuffle(
    batch_size: int,
    num_tokens: int,
    ratio: float = 0.75,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Shuffle:
    """MAE's random masking for a batch: uniform noise per token (drawn on the generator's device, then moved to
    ``device``), then :func:`shuffle_from_noise`."""
    noise_device = generator.device if generator is not None else device
    noise = torch.rand(batch_size, num_tokens, generator=generator, device=noise_device)  # (B, N)
    return shuffle_from_noise(noise.to(device), ratio)


def random_mask(
    batch_size: int,
    grid: Grid,
    ratio: float = 0.75,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-token random mask (image MAE): ``int(ratio * N)`` tokens hidden per sample, anywhere in the grid, drawn
    as MAE's shuffle (:func:`random_shuffle`).

    Returns:
        Bool tensor ``[B, N]``, True = hidden from the encoder.
    """
    _check_grid(grid)
    return random_shuffle(batch_size, grid[0] * grid[1] * grid[2], ratio, generator, device).mask


_CELL = 2  # running cells are 2x2 spatial windows, as in VideoMAE V2
_CELL_POSITIONS = _CELL * _CELL


def running_cell_mask(
    batch_size: int,
    grid: Grid,
    ratio: float = 0.5,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Running-cell decoder mask of VideoMAE V2.

    The spatial grid is tiled by 2x2 cells. Inside a cell the four positions, read in row-major order, take
    values from a cyclic queue ``[1] * k + [0] * (4 - k)`` (``k = 4 * ratio``, 1 = dropped) starting at a phase
    that advances by one at every tubelet step, so each position is kept at regular intervals and the pattern
    has period 4 in time. Each sample draws its starting phase uniformly from the four possible ones, which
    gives the same set of masks as the original's ``RunningCellMaskingGenerator``.

    Args:
        batch_size: number of samples ``B``.
        grid: token grid ``(T', H', W')``; ``H'`` and ``W'`` must be even.
        ratio: fraction dropped by the decoder, one of 0.25, 0.5, 0.75.
        generator: source of randomness for the per-sample phase.
        device: device of the returned tensor.

    Returns:
        Bool tensor ``[B, T' * H' * W']``, True = dropped by the decoder; exactly ``ratio * N`` per sample.
    """
    _check_grid(grid)
    steps, height, width = grid
    dropped_per_cell = ratio * _CELL_POSITIONS
    if not 0.0 < ratio < 1.0 or dropped_per_cell != int(dropped_per_cell):
        raise ValueError(f"running-cell ratio must be one of 0.25, 0.5, 0.75 (k/4 of a 2x2 cell), got {ratio}")
    if height % _CELL or width % _CELL:
        raise ValueError(f"running-cell mask needs an even spatial grid (H', W'), got ({height}, {width})")

    phase_device = generator.device if generator is not None else device
    phase = torch.randint(0, _CELL_POSITIONS, (batch_size,), generator=generator, device=phase_device).to(device)
    queue = torch.arange(_CELL_POSITIONS, device=device) < int(dropped_per_cell)  # (4,) True = dropped
    step = torch.arange(steps, device=device)
    position = torch.arange(_CELL_POSITIONS, device=device)
    index = (phase[:, None, None] + step[None, :, None] + position[None, None, :]) % _CELL_POSITIONS  # (B, T', 4)
    cells = queue[index]  # (B, T', 4)
    cells = cells.view(batch_size, steps, _CELL, _CELL)  # (B, T', 2, 2): cell rows, cell cols
    tiled = repeat(cells, "b t i j -> b t (gh i) (gw j)", gh=height // _CELL, gw=width // _CELL)  # (B, T', H', W')
    return tiled.flatten(1)


def decoded_positions(mask: torch.Tensor, decode_mask: torch.Tensor | None) -> torch.Tensor:
    """Bool ``[B, N]``: the tokens the decoder predicts, in the order of its output (token order).

    Without a decoder mask the decoder predicts exactly the tokens hidden from the encoder; with one (dual
    masking) it predicts every token the running-cell mask keeps.
    """
    return mask if decode_mask is None else ~decode_mask


class MaskGenerator:
    """Encoder and decoder masks for whole batches as ``cfg`` (a ``MaskConfig``) says, drawn from ``generator`` on
    its device (a dedicated generator, so its state can be checkpointed and restored exactly)."""

    def __init__(self, cfg: MaskConfig, grid: Grid, generator: torch.Generator) -> None:
        self.cfg, self.grid, self.generator = cfg, grid, generator

    @classmethod
    def seeded(cls, cfg: MaskConfig, grid: Grid, seed: int, device: torch.device | str = "cpu") -> MaskGenerator:
        """A generator of its own on ``device``, seeded with ``seed`` (fixed masks: pictures, FLOP counts)."""
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
        return cls(cfg, grid, generator)

    def __call__(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Masks ``[B, N]``: ``mask`` True = hidden from the encoder, ``decode_mask`` True = dropped by the decoder
        (None without a decoder mask)."""
        device = self.generator.device
        make = tube_mask if self.cfg.type == "tube" else random_mask
        mask = make(batch_size, self.grid, self.cfg.ratio, generator=self.generator, device=device)
        decode_mask = None
        if self.cfg.decoder_type == "run_cell":
            decode_mask = running_cell_mask(
                batch_size, self.grid, self.cfg.decoder_ratio, generator=self.generator, device=device
            )
        return mask, decode_mask
