"""Every collective a run uses, called with the run's kinds of values and checked against known answers.

One function for the tests, ``videomae doctor`` and ``bench/gpu_check.sh``: each rank calls
:func:`check_collectives` inside a process group; every check is an input whose answer is known from the ranks
alone (the mean of rank numbers is ``(W - 1) / 2``, the object broadcast from rank 0 names rank 0, ...). A check
that raises (a backend that refuses the tensor's device type, say) is a failed check with the error as its detail,
so a rank reports instead of dying; a rank missing altogether surfaces as the process group's timeout.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from videomae.engine import dist

__all__ = ["CollectiveCheck", "check_collectives"]


@dataclass(frozen=True)
class CollectiveCheck:
    """The outcome of one collective on this rank."""

    name: str
    ok: bool
    detail: str


def _checks(rank: int, world: int, device: torch.device) -> dict[str, tuple[Callable[[], object], object]]:
    """``name -> (call, expected answer)`` for every helper of :mod:`videomae.engine.dist` the run calls."""
    last = world - 1
    on_device = torch.tensor([1.0, 2.0], device=device)  # a loss lives on the run's device
    nan_on_last = torch.tensor([math.nan if rank == last else 0.0], device=device)
    return {
        "any_rank (stop request, last rank only)": (lambda: dist.any_rank(rank == last), True),
        "any_rank (no rank)": (lambda: dist.any_rank(False), False),
        "all_finite (loss on the device)": (lambda: dist.all_finite(on_device), True),
        "all_finite (NaN on the last rank)": (lambda: dist.all_finite(nan_on_last), False),
        "mean_across_ranks (step losses)": (
            lambda: dist.mean_across_ranks(torch.tensor([float(rank), 2.0 * rank])).tolist(),
            [last / 2, float(last)],
        ),
        "broadcast_object (resume point)": (lambda: dist.broadcast_object({"rank": rank}), {"rank": 0}),
        "all_gather_objects (evaluation scores)": (lambda: dist.all_gather_objects(rank), list(range(world))),
        "barrier (checkpoint commit)": (lambda: dist.barrier() or "passed", "passed"),
    }


def check_collectives(device: torch.device) -> list[CollectiveCheck]:
    """Run every collective helper once on this rank (collective: every rank must call it) and check the answers.

    Args:
        device: the run's device; values that live there in a run (losses) are made there.

    Returns:
        One :class:`CollectiveCheck` per helper, in call order.
    """
    rank, world = dist.rank(), dist.world_size()
    results = []
    for name, (call, expected) in _checks(rank, world, device).items():
        try:
            got = call()
        except RuntimeError as error:  # e.g. "No backend type associated with device type cpu"
            results.append(CollectiveCheck(name, False, f"{type(error).__name__}: {error}".splitlines()[0]))
            continue
        ok = got == expected
        detail = f"{got!r}" if ok else f"got {got!r}, expected {expected!r}"
        results.append(CollectiveCheck(name, ok, detail))
    return results
