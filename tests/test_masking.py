"""Mask generators: exact counts, structure, reproducibility, and the running-cell pattern by hand."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from videomae.masking import random_mask, running_cell_mask, tube_mask


def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("ratio", [0.9, 0.95])
def test_tube_mask_hides_exact_count_and_repeats_the_spatial_mask(ratio: float) -> None:
    grid = (8, 14, 14)
    mask = tube_mask(16, grid, ratio, generator=_seeded())
    assert mask.dtype == torch.bool and mask.shape == (16, 8 * 14 * 14)
    per_step = rearrange(mask, "b (t hw) -> b t hw", t=8)
    assert torch.equal(per_step, per_step[:, :1].expand_as(per_step)), "spatial mask must be the same at every step"
    assert (per_step[:, 0].sum(dim=1) == int(ratio * 196)).all()
    assert (mask.sum(dim=1) == 8 * int(ratio * 196)).all()


def test_tube_mask_differs_across_samples_and_is_reproducible() -> None:
    first = tube_mask(32, (2, 8, 8), 0.9, generator=_seeded(7))
    again = tube_mask(32, (2, 8, 8), 0.9, generator=_seeded(7))
    other = tube_mask(32, (2, 8, 8), 0.9, generator=_seeded(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert len({tuple(row.tolist()) for row in first}) == 32


def test_tube_mask_positions_are_uniform() -> None:
    mask = tube_mask(20000, (1, 4, 4), 0.75, generator=_seeded(1))
    frequency = mask.float().mean(dim=0)
    assert torch.allclose(frequency, torch.full_like(frequency, 0.75), atol=0.02)


def test_random_mask_counts_and_is_not_a_tube() -> None:
    mask = random_mask(8, (4, 4, 4), 0.75, generator=_seeded())
    assert (mask.sum(dim=1) == 48).all()
    per_step = rearrange(mask, "b (t hw) -> b t hw", t=4)
    assert not torch.equal(per_step, per_step[:, :1].expand_as(per_step))


def test_generator_seed_gives_same_mask_on_any_requested_device() -> None:
    on_default = tube_mask(4, (2, 4, 4), 0.9, generator=_seeded(3))
    on_cpu = tube_mask(4, (2, 4, 4), 0.9, generator=_seeded(3), device="cpu")
    assert on_cpu.device.type == "cpu" and torch.equal(on_default, on_cpu)
    meta = running_cell_mask(4, (2, 4, 4), 0.5, device="meta")
    assert meta.device.type == "meta" and meta.shape == (4, 32)


def _original_cell_patterns(steps: int, dropped: int) -> list[list[list[int]]]:
    """The VideoMAE V2 running cell re-derived by hand: a queue [1]*k+[0]*(4-k), pointer advanced each step."""
    queue = [1] * dropped + [0] * (4 - dropped)
    patterns = []
    for start in range(4):
        pointer = start
        frames = []
        for _ in range(steps):
            pointer += 1
            frames.append([queue[(j + pointer) % 4] for j in range(4)])
        patterns.append(frames)
    return patterns


@pytest.mark.parametrize(("ratio", "dropped"), [(0.25, 1), (0.5, 2), (0.75, 3)])
def test_running_cell_mask_matches_the_hand_computed_cells(ratio: float, dropped: int) -> None:
    grid = (8, 4, 6)
    mask = running_cell_mask(64, grid, ratio, generator=_seeded())
    assert (mask.sum(dim=1) == int(ratio * 8 * 4 * 6)).all()
    cells = rearrange(mask, "b (t gh i gw j) -> b t (gh gw) (i j)", t=8, gh=2, i=2, gw=3, j=2)
    assert torch.equal(cells, cells[:, :, :1].expand_as(cells)), "every 2x2 cell of a frame has the same pattern"
    seen = {tuple(map(tuple, sample[:, 0].int().tolist())) for sample in cells}
    expected = {tuple(map(tuple, frames)) for frames in _original_cell_patterns(8, dropped)}
    assert seen == expected, "the masks are exactly the four phases of the original running cell"


def test_running_cell_half_pattern_shifts_each_step_with_period_four() -> None:
    mask = running_cell_mask(1, (8, 2, 2), 0.5, generator=_seeded())
    cell = mask.view(8, 4).int()
    assert (cell.sum(dim=1) == 2).all()
    for step in range(1, 8):
        assert torch.equal(cell[step], cell[step - 1].roll(-1)), "the queue advances by one position per step"
    assert torch.equal(cell[4:], cell[:4]) and not torch.equal(cell[1], cell[0])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: tube_mask(2, (2, 4, 4), 1.0), "open interval"),
        (lambda: tube_mask(2, (2, 4, 4), 0.0), "open interval"),
        (lambda: tube_mask(2, (2, 2, 2), 0.1), "hides 0"),
        (lambda: random_mask(2, (1, 2, 2), -0.5), "open interval"),
        (lambda: running_cell_mask(2, (2, 3, 4), 0.5), "even spatial grid"),
        (lambda: running_cell_mask(2, (2, 4, 4), 0.4), "0.25, 0.5, 0.75"),
        (lambda: tube_mask(2, (2, 0, 4), 0.9), "three positive sizes"),
    ],
)
def test_impossible_requests_are_refused(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
