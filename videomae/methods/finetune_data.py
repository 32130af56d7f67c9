"""Labelled data for supervised runs: the class list, the training set, the evaluation sets and their loaders.

Evaluation is split across ranks without padding (a distributed sampler would repeat videos to even out the
ranks): rank ``r`` of ``R`` scores videos ``r, r + R, r + 2R, ...``, so every video is scored exactly once and the
per-video scores are gathered in memory (:class:`videomae.evaluation.multiview.MultiViewAccumulator`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from videomae.config import ConfigError, FinetuneDataConfig, ManifestSource
from videomae.data import HybridVideoDataset, collate_clips
from videomae.data.manifest import ManifestError, read_label_map
from videomae.engine.data_setup import hybrid_dataset

__all__ = [
    "LabelledSets",
    "build_labelled_sets",
    "build_eval_dataset",
    "build_eval_loader",
    "build_labelled_dataset",
    "eval_batches",
    "eval_shard",
    "fixed_class_names",
]


def _dataset(
    key: str, sources: list[ManifestSource], cfg: FinetuneDataConfig, label_names: Sequence[str] | None, **kwargs
) -> HybridVideoDataset:
    """A dataset over ``sources``; manifest and label problems are reported as a :class:`ConfigError` on ``key``."""
    try:
        return hybrid_dataset(sources, cfg, label_names=label_names, **kwargs)
    except (OSError, ManifestError, ValueError) as err:
        raise ConfigError(f"{key}: {err}") from err


def fixed_class_names(cfg: FinetuneDataConfig) -> list[str] | None:
    """The class list of ``data.labels`` (None when the data decides it)."""
    if cfg.labels is None:
        return None
    try:
        return read_label_map(cfg.labels)
    except (OSError, ManifestError) as err:
        raise ConfigError(f"data.labels: {err}") from err


def build_labelled_dataset(
    cfg: FinetuneDataConfig, output_dir: str | Path, seed: int, label_names: Sequence[str] | None
) -> HybridVideoDataset:
    """The (hybrid) training set: labels merged by class name (or fixed by ``label_names``), augmentation on.

    Raises:
        ConfigError: no manifest, unreadable manifests, or no labelled row.
    """
    if not cfg.manifests:
        raise ConfigError("data.manifests: empty; give at least one labelled manifest, e.g. data.manifests=[train.csv]")
    augment = {}
    # The augmentation keywords are passed only when used, so datasets without them still build plain runs.
    if cfg.rand_augment is not None:
        augment["rand_augment"] = cfg.rand_augment
    if cfg.reprob > 0:
        augment["reprob"] = cfg.reprob
    dataset = _dataset(
        "data.manifests", cfg.manifests, cfg, label_names, num_sample=cfg.num_sample, train=True,
        hflip_prob=cfg.hflip_prob, run_dir=output_dir, seed=seed, **augment,
    )  # fmt: skip
    if not any(label >= 0 for label in dataset.labels):
        raise ConfigError("data.manifests: no row has a label; supervised training needs a label column")
    return dataset


def build_eval_dataset(
    key: str,
    sources: list[ManifestSource],
    cfg: FinetuneDataConfig,
    label_names: Sequence[str] | None,
    views: tuple[int, int],
    output_dir: str | Path,
) -> HybridVideoDataset:
    """An evaluation set with ``views = (segments, crops)`` views per video (rows in manifest order).

    Raises:
        ConfigError: on ``key`` for unreadable manifests or classes outside ``label_names``.
    """
    segments, crops = views
    return _dataset(
        key, sources, cfg, label_names, train=False, test_num_segment=segments, test_num_crop=crops,
        short_side_size=cfg.short_side_size, run_dir=output_dir,
    )  # fmt: skip


def eval_shard(num_videos: int, rank: int, world_size: int) -> list[int]:
    """Dataset indices rank ``rank`` scores: every ``world_size``-th video from ``rank`` (no padding)."""
    return list(range(rank, num_videos, world_size))


def eval_batches(num_videos: int, world_size: int, batch_size: int) -> int:
    """Batches of the largest shard: what every rank runs when forward passes must stay in lockstep."""
    return math.ceil(math.ceil(num_videos / world_size) / batch_size)


def build_eval_loader(
    dataset: HybridVideoDataset, rank: int, world_size: int, batch_size: int, num_workers: int
) -> DataLoader:
    """Loader over this rank's shard (see :func:`eval_shard`), views flattened into the batch."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=eval_shard(len(dataset), rank, world_size),
        num_workers=num_workers,
        collate_fn=collate_clips,
        drop_last=False,
        pin_memory=torch.cuda.is_available(),
    )


@dataclass(frozen=True)
class LabelledSets:
    """A supervised run's data: the sets and the one class list they share."""

    train: HybridVideoDataset | None
    """The training set (None: evaluating only)."""
    val: HybridVideoDataset | None
    """Scored with one centre view per video during training."""
    test: HybridVideoDataset | None
    """Scored with every view at the end: the test set, else the validation set."""
    class_names: list[str] | None
    """The class list (None: bare integer labels)."""
    num_classes: int


def build_labelled_sets(
    cfg: FinetuneDataConfig, output_dir: str | Path, seed: int, eval_only: bool = False
) -> LabelledSets:
    """The sets of a supervised run, with the class list fixed by ``data.labels``, else the training manifests'
    merged names, else (evaluating only) the evaluation manifests'.

    Raises:
        ConfigError: no training manifest (unless ``eval_only``), unreadable manifests, or no class list.
    """
    names = fixed_class_names(cfg)
    train_set = val_set = test_set = None
    if cfg.manifests and (not eval_only or names is None):
        train_set = build_labelled_dataset(cfg, output_dir, seed, names)
        names = train_set.label_names
    elif not eval_only:
        raise ConfigError("data.manifests: empty; give at least one labelled manifest, e.g. data.manifests=[a.csv]")
    if cfg.val_manifests:
        val_set = build_eval_dataset("data.val_manifests", cfg.val_manifests, cfg, names, (1, 1), output_dir)
        names = names if train_set is not None else val_set.label_names  # evaluating only: its names
    if cfg.test_manifests or cfg.val_manifests:
        key = "data.test_manifests" if cfg.test_manifests else "data.val_manifests"
        views = (cfg.test_num_segment, cfg.test_num_crop)
        test_set = build_eval_dataset(key, cfg.test_manifests or cfg.val_manifests, cfg, names, views, output_dir)
        names = names if train_set is not None else test_set.label_names
    sets = [s for s in (train_set, val_set, test_set) if s is not None]
    num_classes = len(names) if names is not None else max((s.num_classes for s in sets), default=0)
    if num_classes < 1:
        raise ConfigError("data.labels: no class list: give data.labels or labelled manifests")
    return LabelledSets(None if eval_only else train_set, val_set, test_set, names, num_classes)
