"""Bad-sample counts of a training run, and the stop when most loads fail.

Clips that fail to load are replaced inside the dataset (in the DataLoader workers); each batch carries the indices
of the ones it replaced (``batch["bad_rows"]``, see :func:`~videomae.data.datasets.collate_clips`), so the count
reaches the training process exactly and for free. :class:`BadSampleMeter` adds them up per optimizer step; the
run sums the step's figures over ranks in the all-reduce it does anyway for the loss, and hands the global figures
back with :meth:`BadSampleMeter.end_step`. Every rank therefore holds the same numbers and takes the same decision
at the same step boundary: when the failed share of the last ``window`` loads passes ``ceiling``, every rank raises
:class:`BadSampleCeiling` naming the first bad manifest rows. Clips that needed their source's short-video policy
(``batch["short_rows"]``) are counted alike (:meth:`BadSampleMeter.take_short`); they are no failures.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from videomae.data.bad_samples import BAD_SAMPLES_FILE, TooManyBadSamples
from videomae.engine import dist

__all__ = ["BadSampleCeiling", "BadSampleMeter"]

_NAMED = 5
"""Bad rows named in the stop message (all of them are in ``bad_samples.csv``)."""


class BadSampleCeiling(TooManyBadSamples):
    """The failed share of recent clip loads passed ``data.bad_sample_ceiling`` (raised alike on every rank)."""


class BadSampleMeter:
    """Counts failed clip loads per optimizer step and stops the run past a ceiling.

    Args:
        dataset: the training set (its ``rows`` name the bad ones).
        batch_size: samples per micro-batch and rank (each is one successful load).
        ceiling: largest tolerated share of failed loads over the window (1 never stops).
        window: how many of the latest loads (all ranks together) the share is taken over; it is judged once
            the run has made that many.
        run_dir: the run folder, named in the message (its ``bad_samples.csv`` lists every bad row).
    """

    def __init__(self, dataset: Any, batch_size: int, ceiling: float, window: int, run_dir: Any = None) -> None:
        self.dataset, self.batch_size, self.ceiling, self.window = dataset, batch_size, ceiling, window
        self.run_dir = run_dir
        self.bad = self.loads = self.short = 0  # this rank's, since the last step
        self.first_rows: list[int] = []  # this rank's first distinct bad rows, for the message
        self._steps: deque[tuple[int, int]] = deque()  # (bad, loads) of recent steps, all ranks
        self._window_bad = self._window_loads = 0

    def add_batch(self, batch: dict) -> None:
        """Count one micro-batch's failed loads and short-video clips (its ``bad_rows`` and ``short_rows``, CPU
        tensors: no device sync)."""
        rows, short = batch.get("bad_rows"), batch.get("short_rows")
        self.short += 0 if short is None else short.numel()
        count = 0 if rows is None else rows.numel()
        self.bad += count
        self.loads += self.batch_size + count
        if count and len(self.first_rows) < _NAMED:
            self.first_rows += [i for i in dict.fromkeys(rows.tolist()) if i not in self.first_rows]
            del self.first_rows[_NAMED:]

    def take_step(self) -> tuple[int, int]:
        """This rank's ``(failed, total)`` loads since the last step (to be summed over ranks), reset."""
        figures = (self.bad, self.loads)
        self.bad = self.loads = 0
        return figures

    def take_short(self) -> int:
        """This rank's clips that needed a short-video policy since the last call (to be summed over ranks), reset."""
        count, self.short = self.short, 0
        return count

    def end_step(self, bad: int, loads: int) -> None:
        """Record a step's figures summed over ranks (identical on every rank); stop when past the ceiling.

        Raises:
            BadSampleCeiling: on every rank, when the failed share of the last ``window`` loads passes ``ceiling``
                (collective: gathers the bad rows every rank saw first).
        """
        self._steps.append((bad, loads))
        self._window_bad += bad
        self._window_loads += loads
        while len(self._steps) > 1 and self._window_loads - self._steps[0][1] >= self.window:
            old_bad, old_loads = self._steps.popleft()
            self._window_bad -= old_bad
            self._window_loads -= old_loads
        if self._window_loads >= self.window and self._window_bad > self.ceiling * self._window_loads:
            raise BadSampleCeiling(self._message())

    def _message(self) -> str:
        seen = dict.fromkeys(i for rows in dist.all_gather_objects(self.first_rows) for i in rows)
        named = [self.dataset.row(i) for i in list(seen)[:_NAMED]]
        where = f"; every bad row is listed in {self.run_dir}/{BAD_SAMPLES_FILE}" if self.run_dir is not None else ""
        return (
            f"{self._window_bad} of the last {self._window_loads} clip loads failed "
            f"({self._window_bad / self._window_loads:.0%}), more than data.bad_sample_ceiling={self.ceiling:g} "
            f"allows: the data or its storage is mostly unreadable. First bad rows: "
            + ", ".join(f"{row.manifest}:{row.line} ({row.path})" for row in named)
            + f"{where}. Drop them (`videomae manifest check MANIFEST --fix FIXED.csv`) or raise "
            "data.bad_sample_ceiling."
        )
