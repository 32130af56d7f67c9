"""Multi-view evaluation: per-video score averaging, across ranks when the caller passes its gather.

Each test video is seen as ``test_num_segment * test_num_crop`` views. Every batch row carries the video's dataset
index (never a file basename: two videos may share one) and a view id; softmax scores are averaged per video over
its distinct views. Rows from every rank are gathered in memory and deduplicated by ``(video, view)``, because a
distributed sampler pads the last round by repeating samples: no video is counted twice or dropped when the count
does not divide the world size. The gather holds every rank's per-view scores (videos × views × classes float32,
~0.5 GB for Kinetics-400 at 5 × 3 views) on each rank, like the original's per-rank score files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["GatherFn", "MultiViewAccumulator", "VideoPredictions", "single_process_gather", "views_from_repeats"]

log = logging.getLogger(__name__)
GatherFn = Callable[[Any], list[Any]]
"""``obj -> [obj of every rank]``, e.g. :func:`videomae.engine.dist.all_gather_objects`."""


def single_process_gather(obj: Any) -> list[Any]:
    """The gather of a process that sees every video itself."""
    return [obj]


def views_from_repeats(indices: torch.Tensor, num_views: int) -> torch.Tensor:
    """View ids of a batch in which each video's views follow each other (as ``collate_clips`` lays them out).

    The k-th row of video ``i`` in the batch is view ``k mod num_views``, so a padded duplicate of a whole sample
    in the same batch gets the same view ids as the original.

    Raises:
        ValueError: a video with a number of rows that is not a multiple of ``num_views``.
    """
    seen: dict[int, int] = {}
    views = []
    for index in indices.tolist():
        k = seen.get(index, 0)
        views.append(k % num_views)
        seen[index] = k + 1
    odd = {i: n for i, n in seen.items() if n % num_views}
    if odd:
        raise ValueError(f"videos {dict(list(odd.items())[:5])} have row counts that are not multiples of "
                         f"num_views={num_views}; pass explicit view ids")  # fmt: skip
    return torch.tensor(views, dtype=torch.long)


@dataclass
class VideoPredictions:
    """Scores per video after averaging its views.

    Attributes:
        indices: ``[V]`` dataset indices of the videos, ascending.
        scores: ``[V, C]`` mean softmax probabilities over the views.
        labels: ``[V]`` class ids (-1: unlabelled).
        num_views: ``[V]`` distinct views averaged per video.
    """

    indices: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    num_views: torch.Tensor

    def __len__(self) -> int:
        return int(self.indices.numel())


class MultiViewAccumulator:
    """Collects per-view softmax scores on each rank; :meth:`compute` gathers, deduplicates and averages.

    Args:
        num_views: views per video (``test_num_segment * test_num_crop``); needed when ``update`` gets no view ids.
        gather: ``obj -> [obj of every rank]`` (a run passes :func:`videomae.engine.dist.all_gather_objects`);
            default: this process only.
    """

    def __init__(self, num_views: int | None = None, gather: GatherFn | None = None) -> None:
        self.num_views = num_views
        self.gather = gather or single_process_gather
        self._keys: list[np.ndarray] = []
        self._probs: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def update(
        self, logits: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, views: torch.Tensor | None = None
    ) -> None:
        """Add a batch: ``logits [B, C]``, ``labels [B]``, video ``indices [B]``, ``views [B]`` (or derived)."""
        if views is None:
            if self.num_views is None:
                raise ValueError("update() without view ids needs MultiViewAccumulator(num_views=...)")
            views = views_from_repeats(indices, self.num_views)
        if not (logits.shape[0] == labels.shape[0] == indices.shape[0] == views.shape[0]):
            raise ValueError(f"batch sizes differ: logits {tuple(logits.shape)}, labels {tuple(labels.shape)}, "
                             f"indices {tuple(indices.shape)}, views {tuple(views.shape)}")  # fmt: skip
        keys = torch.stack([indices.detach().cpu().long(), views.detach().cpu().long()], dim=1)  # (B, 2)
        self._keys.append(keys.numpy())
        self._probs.append(logits.detach().float().softmax(dim=-1).cpu().numpy())
        self._labels.append(labels.detach().cpu().long().numpy())

    def compute(self, expected_videos: int | None = None) -> VideoPredictions:
        """Gather every rank's rows, keep one row per ``(video, view)``, average per video (same on every rank).

        Args:
            expected_videos: the dataset's video count; when given, videos ``0 .. expected_videos - 1`` must all
                be present and no other index may appear.

        Raises:
            ValueError: a video with two different labels, or missing / unexpected videos.
        """
        local = (
            np.concatenate(self._keys) if self._keys else np.zeros((0, 2), np.int64),
            np.concatenate(self._probs) if self._probs else np.zeros((0, 0), np.float32),
            np.concatenate(self._labels) if self._labels else np.zeros((0,), np.int64),
        )
        parts = [part for part in self.gather(local) if len(part[0])]
        if not parts:
            raise ValueError("no evaluation rows on any rank")
        keys = np.concatenate([p[0] for p in parts])
        probs = np.concatenate([p[1] for p in parts])
        labels = np.concatenate([p[2] for p in parts])
        _check_labels(keys[:, 0], labels)
        _, first = np.unique(keys, axis=0, return_index=True)  # first occurrence of each (video, view)
        keys, probs, labels = keys[first], probs[first], labels[first]
        videos, inverse, views = np.unique(keys[:, 0], return_inverse=True, return_counts=True)
        video_labels = np.zeros(len(videos), np.int64)
        video_labels[inverse] = labels
        sums = torch.zeros(len(videos), probs.shape[1], dtype=torch.float64)
        sums.index_add_(0, torch.from_numpy(inverse), torch.from_numpy(probs).double())
        scores = (sums / torch.from_numpy(views)[:, None]).float()  # (V, C)
        if expected_videos is not None:
            missing = sorted(set(range(expected_videos)) - set(videos.tolist()))
            extra = videos[(videos < 0) | (videos >= expected_videos)].tolist()
            if missing or extra:
                raise ValueError(f"evaluation covered {len(videos)} videos, expected {expected_videos}: "
                                 f"missing {missing[:10]}, unexpected {extra[:10]}")  # fmt: skip
        if self.num_views is not None and (views != self.num_views).any():
            short = videos[views != self.num_views][:10].tolist()
            log.warning("videos %s have fewer/more than %d distinct views", short, self.num_views)
        return VideoPredictions(
            torch.from_numpy(videos), scores, torch.from_numpy(video_labels), torch.from_numpy(views)
        )


def _check_labels(videos: np.ndarray, labels: np.ndarray) -> None:
    """Every row of a video must carry the same label."""
    unique, inverse = np.unique(videos, return_inverse=True)
    low = np.full(len(unique), np.iinfo(np.int64).max)
    high = np.full(len(unique), np.iinfo(np.int64).min)
    np.minimum.at(low, inverse, labels)
    np.maximum.at(high, inverse, labels)
    if (low != high).any():
        raise ValueError(f"videos {unique[low != high][:10].tolist()} carry different labels in different rows")
