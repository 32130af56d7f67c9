"""Which clip stands in for a bad one, independent of what a worker has met before.

A training sample whose clip fails to load walks a *replacement chain*: attempt ``a = 1, 2, ...`` tries the row
:func:`replacement_row` names for ``(seed, epoch, index, a)``, until one loads. The chain is a pure function of
those numbers and of which rows load, so a resumed run, another worker count or another worker meeting the sample
first all pick the same stand-in. Two pieces of per-process state only save work and never change the outcome:

* :class:`KnownBad` remembers rows that failed in this process, so the chain skips them without decoding again
  (they still count as failed attempts, exactly as a fresh decode would). Timeouts are not remembered: a slow read
  may succeed next time, and a fresh worker would retry it.
* :class:`RngStates` puts the global RNGs back before each attempt, so a failed decode that drew random numbers
  before failing (a truncated file fails after its frames were chosen) leaves the stand-in's augmentation as if
  that decode had never run, which is what a skipped known-bad row gives.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch

from videomae.data.decoding import DecodeError, DecodeTimeout

__all__ = ["Attempts", "KnownBad", "RngStates", "replacement_row"]

T = TypeVar("T")


def replacement_row(seed: int, epoch: int, index: int, attempt: int, offset: int, size: int) -> int:
    """Dataset index of attempt ``attempt`` (1-based) to replace row ``index`` of the source at ``offset`` with
    ``size`` rows: another row of that source (the row itself only when it is the only one), drawn from
    ``(seed, epoch, index, attempt)`` alone."""
    # A str seed is hashed with SHA-512: the same draw in every process and Python run (no hash randomisation).
    rng = random.Random(f"{seed}:{epoch}:{index}:{attempt}")
    if size == 1:
        return offset
    own = index - offset
    draw = rng.randrange(size - 1)  # one of the other rows
    return offset + (draw if draw < own else draw + 1)


class KnownBad:
    """Rows that failed to load in this process (a byte per row, allocated at the first failure).

    Args:
        size: rows in the dataset.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._flags: np.ndarray | None = None

    def add(self, index: int, error: DecodeError) -> None:
        """Remember ``index`` as bad, unless ``error`` is a timeout (which may not repeat)."""
        if isinstance(error, DecodeTimeout):
            return
        if self._flags is None:
            self._flags = np.zeros(self.size, dtype=bool)
        self._flags[index] = True

    def __contains__(self, index: int) -> bool:
        return self._flags is not None and bool(self._flags[index])

    @staticmethod
    def error(path: str) -> DecodeError:
        """What a skipped known-bad row reports (its first failure was logged with the real reason)."""
        return DecodeError(path, "failed before in this process (not decoded again)")


class RngStates:
    """The Python, NumPy and torch (CPU) global RNG states at construction, to be put back with :meth:`restore`."""

    def __init__(self) -> None:
        self._py, self._np, self._torch = random.getstate(), np.random.get_state(), torch.get_rng_state()

    def restore(self) -> None:
        """Put the states back as they were at construction."""
        random.setstate(self._py)
        np.random.set_state(self._np)
        torch.set_rng_state(self._torch)


class Attempts:
    """One sample's walk along its replacement chain: the rows that failed so far, in order.

    Args:
        known_bad: the process's :class:`KnownBad` rows (skipped without decoding, failing all the same).
    """

    def __init__(self, known_bad: KnownBad) -> None:
        self.known_bad, self.failed, self._rng = known_bad, [], RngStates()

    def load(self, index: int, path: str, load: Callable[[int], T]) -> T:
        """``load(index)``, with the global RNGs as they were before the first attempt.

        Raises:
            DecodeError: from ``load``, or at once when ``index`` is known to be bad.
        """
        if index in self.known_bad:
            raise KnownBad.error(path)
        if self.failed:
            self._rng.restore()  # the stand-in's augmentation as if the failed loads had not run
        return load(index)

    def fail(self, index: int, error: DecodeError) -> None:
        """Row ``index`` failed with ``error``: one more failed attempt."""
        self.known_bad.add(index, error)
        self.failed.append(index)
