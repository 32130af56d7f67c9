"""Figures of optimizer steps: means over micro-steps and ranks, and the window between two log lines."""

from __future__ import annotations

import time

import torch

from videomae.engine import dist

__all__ = ["LogWindow", "step_means"]


class LogWindow:
    """Figures accumulated since the last log line."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.metrics: dict[str, list[float]] = {}  # the method's per-step figures (LossOutput.metrics)
        self.clips, self.data_time, self.start = 0, 0.0, time.perf_counter()
        self.bad_samples = 0  # clips that failed to load and were replaced (all ranks)

    def add(self, loss: float, metrics: dict[str, float]) -> None:
        """Record one optimizer step's loss and figures."""
        self.losses.append(loss)
        for key, value in metrics.items():
            self.metrics.setdefault(key, []).append(value)

    def means(self) -> dict[str, float]:
        """Each figure's mean over the window."""
        return {key: sum(values) / len(values) for key, values in self.metrics.items()}

    def rates(self) -> tuple[float, float]:
        """Clips per second (all ranks) and the share of the time spent waiting for data, since the window began."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return self.clips / elapsed, self.data_time / elapsed


def step_means(
    losses: list[float], metrics: list[dict[str, float]], counts: tuple[int, ...] = ()
) -> tuple[float, dict[str, float], list[int]]:
    """One optimizer step's loss and figures (means over its micro-steps, then over ranks) and ``counts`` summed
    over ranks, in one all-reduce."""
    keys = sorted(metrics[0]) if metrics else []
    local = [sum(losses) / len(losses)] + [sum(m[k] for m in metrics) / len(metrics) for k in keys] + list(counts)
    means = dist.mean_across_ranks(torch.tensor(local, dtype=torch.float64)).tolist()
    sums = [round(mean * dist.world_size()) for mean in means[1 + len(keys) :]]
    return means[0], dict(zip(keys, means[1 : 1 + len(keys)])), sums
