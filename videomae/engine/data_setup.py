"""Training data for the engine: dataset, sampler and a resumable data loader built from ``DataConfig``."""

from __future__ import annotations

import gc
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from videomae.config import DataConfig, ManifestSource
from videomae.data import HybridVideoDataset, SourceSpec, WeightedDistributedSampler, collate_clips

__all__ = ["SeededSamples", "TrainLoader", "build_dataset", "build_sampler", "hybrid_dataset", "source_specs"]


def source_specs(manifests: list[ManifestSource], data_root: str | None) -> list[SourceSpec]:
    """The dataset's view of configured manifests; ``data_root`` applies where a manifest sets none."""
    return [
        SourceSpec(
            manifest=src.path,
            data_root=src.data_root if src.data_root is not None else data_root,
            weight=src.weight,
            repeat=src.repeat,
            num_frames=src.num_frames,
            sampling_rate=src.sampling_rate,
            frame_template=src.frame_template,
            short_video=src.short_video,
        )
        for src in manifests
    ]


def hybrid_dataset(sources: list[ManifestSource], cfg: DataConfig, **kwargs: Any) -> HybridVideoDataset:
    """A dataset over ``sources`` with the clip, decoding and failure settings of ``cfg`` (any stage's data
    section): the one mapping from the data config to a dataset; ``kwargs`` add the split's own settings."""
    return HybridVideoDataset(
        source_specs(sources, cfg.data_root),
        num_frames=cfg.num_frames,
        sampling_rate=cfg.sampling_rate,
        input_size=cfg.input_size,
        backend=cfg.decode_backend,
        decode_timeout=cfg.decode_timeout_s or None,
        max_consecutive_failures=cfg.max_consecutive_failures,
        crop=cfg.crop,
        crop_scale=cfg.crop_scale,
        crop_ratio=cfg.crop_ratio,
        interpolation=cfg.interpolation,
        views_from=cfg.views_from,
        **kwargs,
    )


def build_dataset(cfg: DataConfig, output_dir: str | Path, seed: int) -> HybridVideoDataset:
    """The (hybrid) pretraining set of every manifest in ``cfg.manifests``, augmentation on."""
    if not cfg.manifests:
        raise ValueError("data.manifests: empty; list at least one manifest file")
    return hybrid_dataset(
        cfg.manifests, cfg, num_sample=cfg.num_sample, train=True, hflip_prob=cfg.hflip_prob, run_dir=output_dir,
        seed=seed,
    )  # fmt: skip


def build_sampler(dataset: HybridVideoDataset, rank: int, world_size: int, seed: int) -> WeightedDistributedSampler:
    """Weighted sampler giving each rank its share of every epoch (same length on every rank)."""
    return WeightedDistributedSampler(dataset, num_replicas=world_size, rank=rank, seed=seed, drop_last=True)


class _EpochPositions(Sampler):
    """Yields ``(epoch, position, index)`` for the sampler's current epoch: this rank's running count in the epoch
    (from :attr:`start`) alongside the sampler's index."""

    def __init__(self, base: WeightedDistributedSampler) -> None:
        self.base, self.start = base, 0

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        epoch = self.base.epoch
        return ((epoch, position, index) for position, index in enumerate(iter(self.base), start=self.start))

    def __len__(self) -> int:
        return len(self.base)


class SeededSamples(Dataset):
    """Runs ``dataset[index]`` with python/numpy/torch RNGs seeded from ``(seed, epoch, rank, position)``.

    Augmentation then depends only on where a sample sits in the run, not on which worker loads it or on when the
    loader was created, so a resumed run sees exactly the clips an uninterrupted one would. The epoch comes with
    each key (workers outlive epochs). The caller's RNG states are restored afterwards (with ``num_workers=0`` the
    loading happens in the training process).
    """

    def __init__(self, dataset: Dataset, seed: int, rank: int) -> None:
        self.dataset, self.seed, self.rank = dataset, seed, rank

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]) -> Any:
        epoch, position, index = key
        sample_seed = hash((self.seed, epoch, self.rank, position)) & 0xFFFF_FFFF
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(sample_seed)
            np.random.seed(sample_seed)
            torch.manual_seed(sample_seed)
            self.dataset.set_epoch(epoch)  # a bad row's stand-in is drawn from (seed, epoch, index)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


class TrainLoader:
    """The training batches of every epoch from one ``DataLoader`` whose workers live as long as the run (a new
    epoch costs no worker start-up).

    Args:
        dataset: the training set.
        sampler: its sampler (the trainer sets its epoch and any resumed position).
        cfg: the data section (workers, decode timeout).
        batch_size: videos per micro-step.
        seed: run seed; per-sample augmentation seeds derive from it (see :class:`SeededSamples`).
        rank: this process's rank.
    """

    def __init__(
        self, dataset: Any, sampler: WeightedDistributedSampler, cfg: DataConfig, batch_size: int, seed: int, rank: int
    ) -> None:
        self.positions = _EpochPositions(sampler)
        self.started = False
        workers = cfg.num_workers
        self.loader = DataLoader(
            SeededSamples(dataset, seed, rank),
            batch_size=batch_size,
            sampler=self.positions,
            num_workers=workers,
            collate_fn=collate_clips,
            drop_last=True,
            pin_memory=torch.cuda.is_available(),
            timeout=cfg.decode_timeout_s * batch_size if workers > 0 else 0,
            persistent_workers=workers > 0,
        )

    def epoch(self, start_batch: int) -> Iterator[dict]:
        """The batches of the rest of the sampler's current epoch (set it first), after the ``start_batch`` this
        rank already consumed."""
        self.positions.start = start_batch * self.loader.batch_size
        if self.loader.num_workers > 0 and not self.started:
            # The workers fork at the first iteration: objects that exist then are never collected in them, so the
            # collector's bookkeeping writes do not copy the parent's pages into every worker (copy-on-read).
            gc.collect()
            gc.freeze()
        self.started = True
        return iter(self.loader)

    def close(self) -> None:
        """Let the workers go (they would otherwise live on through the export and the final evaluation, beside
        that evaluation's own workers): the loader and its iterator are dropped, whose finaliser joins them."""
        self.loader = None
