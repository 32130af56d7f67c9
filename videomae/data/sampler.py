"""A distributed, weighted, stateful sampler for (hybrid) clip datasets.

Each epoch is one global list of dataset indices, a pure function of ``(seed, epoch)``:

1. every source gets a quota of draws: ``repeat x size`` for sources with a repeat count; the weighted sources
   share their total size in proportion to ``weight x size`` (a weight is how often each of the source's rows is
   drawn relative to the other weighted sources' rows; equal weights: each row once, a plain concatenation);
   ``num_samples`` rescales all quotas to a fixed epoch length;
2. a source's draws walk through fresh random permutations of its rows (no row repeats before all were drawn);
3. all draws are shuffled together (``shuffle=False``: sources in order, rows in order, for evaluation).

The quotas make the mixing proportions exact per epoch rather than only in expectation.

Rank ``r`` of ``R`` takes ``list[offset:][r::R]``, after padding the rest of the list to a multiple of ``R`` by
repeating its first indices (or cutting it, ``drop_last=True``), so ranks are disjoint apart from the padding.
``state_dict()`` stores the epoch and the global offset already consumed (this rank's consumed count x ``R``), so
a resumed run continues exactly where it stopped, even with a different number of ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["WeightedDistributedSampler", "source_quotas"]

_CHUNK = 4096


def source_quotas(
    sizes: list[int], weights: list[float], repeats: list[float | None], num_samples: int | None = None
) -> list[int]:
    """Draws per source in one epoch (see the module docstring)."""
    quotas = [0.0] * len(sizes)
    weighted = [k for k, r in enumerate(repeats) if r is None]
    budget = sum(sizes[k] for k in weighted)
    total_mass = sum(weights[k] * sizes[k] for k in weighted)
    for k, size in enumerate(sizes):
        quotas[k] = size * repeats[k] if repeats[k] is not None else budget * weights[k] * size / total_mass
    if num_samples is not None:
        scale = num_samples / sum(quotas)
        quotas = [q * scale for q in quotas]
    target = round(sum(quotas))
    counts = [math.floor(q) for q in quotas]
    # largest remainders get the leftover draws, so the counts sum to the rounded total
    for k in sorted(range(len(quotas)), key=lambda k: counts[k] - quotas[k])[: target - sum(counts)]:
        counts[k] += 1
    return [c if sizes[k] > 0 else 0 for k, c in enumerate(counts)]


class WeightedDistributedSampler(Sampler[int]):
    """Weighted mixing of a dataset's sources, sharded across ranks, resumable mid-epoch.

    Works with any dataset; one with ``source_sizes``, ``source_weights`` and ``source_repeats`` attributes (as
    :class:`~videomae.data.datasets.HybridVideoDataset`) is mixed per source, otherwise it is one source.

    Args:
        dataset: the dataset.
        num_replicas: number of ranks (data-parallel world size).
        rank: this rank, ``0 <= rank < num_replicas``.
        seed: shared by all ranks; with the epoch it fixes the order.
        shuffle: ``False`` keeps sources and rows in order (evaluation).
        num_samples: draws per epoch over all ranks (default: the sum of the quotas).
        drop_last: cut the list to a multiple of ``num_replicas`` instead of padding it.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        num_samples: int | None = None,
        drop_last: bool = False,
    ):
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} must be in [0, num_replicas={num_replicas})")
        self.sizes = list(getattr(dataset, "source_sizes", [len(dataset)]))
        weights = list(getattr(dataset, "source_weights", [1.0] * len(self.sizes)))
        repeats = list(getattr(dataset, "source_repeats", [None] * len(self.sizes)))
        self.offsets = [sum(self.sizes[:k]) for k in range(len(self.sizes))]
        self.quotas = source_quotas(self.sizes, weights, repeats, num_samples)
        self.total = sum(self.quotas)
        if self.total == 0:
            raise ValueError("the sampler has nothing to draw: every source is empty")
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.epoch = 0
        self._offset = 0  # global draws already consumed in this epoch (set by load_state_dict)
        self._iter_offset = 0
        self._yielded = 0

    def _generator(self) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed((self.seed * 0x9E37_79B1 + self.epoch) & 0x7FFF_FFFF_FFFF_FFFF)  # stable across Python versions
        return g

    def global_indices(self) -> list[int]:
        """This epoch's full list of draws over all ranks (before sharding)."""
        return self._global_draws().tolist()

    def _global_draws(self) -> torch.Tensor:
        """:meth:`global_indices` as an ``int64`` tensor (8 bytes a draw, not a Python int each)."""
        g = self._generator()
        draws = []
        for size, offset, quota in zip(self.sizes, self.offsets, self.quotas):
            if quota == 0:
                continue
            cycles = -(-quota // size)
            if self.shuffle:
                order = torch.cat([torch.randperm(size, generator=g) for _ in range(cycles)])[:quota]
            else:
                order = torch.arange(quota) % size
            draws.append(order + offset)
        flat = torch.cat(draws)
        if self.shuffle:
            flat = flat[torch.randperm(len(flat), generator=g)]
        return flat

    def _rank_indices(self, offset: int) -> torch.Tensor:
        rest = self._global_draws()[offset:]
        if self.drop_last:
            rest = rest[: len(rest) - len(rest) % self.num_replicas]
        elif len(rest) and len(rest) % self.num_replicas:
            pad = self.num_replicas - len(rest) % self.num_replicas
            rest = torch.cat([rest, rest.repeat(pad // len(rest) + 1)[:pad]])
        return rest[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        self._iter_offset, self._offset = self._offset, 0
        self._yielded = 0
        for chunk in self._rank_indices(self._iter_offset).split(_CHUNK):  # Python ints made a chunk at a time
            for i in chunk.tolist():
                self._yielded += 1
                yield i

    def __len__(self) -> int:
        rest = max(self.total - max(self._offset, self._iter_offset), 0)
        if self.drop_last:
            return rest // self.num_replicas
        return -(-rest // self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (call before each epoch); keeps a resumed position only for the resumed epoch."""
        if epoch != self.epoch:
            self._offset = self._iter_offset = 0
        self.epoch = epoch

    def state_dict(self, consumed: int | None = None) -> dict:
        """The position to resume from.

        Args:
            consumed: samples this rank has consumed in the current epoch (e.g. steps x per-rank batch size). Pass
                it when a DataLoader prefetches (workers > 0): the sampler itself only knows how many indices it
                handed out, which runs ahead of training.
        """
        done = self._yielded if consumed is None else consumed
        return {
            "epoch": self.epoch,
            "offset": self._iter_offset + done * self.num_replicas,
            "seed": self.seed,
            "total": self.total,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume: the next iteration of ``state["epoch"]`` starts right after the consumed draws."""
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(
                f"sampler state has seed={state['seed']} but this sampler has seed={self.seed}; the "
                "order would differ, so the resume would not be exact"
            )
        if state.get("total", self.total) != self.total:
            raise ValueError(
                f"sampler state has {state['total']} draws per epoch, this sampler {self.total}: the "
                "manifests or weights changed since the checkpoint"
            )
        self.epoch = int(state["epoch"])
        self._offset = min(int(state["offset"]), self.total)
        # A checkpoint taken before the next iteration starts must report the loaded position, not 0.
        self._iter_offset, self._yielded = self._offset, 0
