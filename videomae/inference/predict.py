"""Classify videos with a trained classifier: multi-view testing, softmax averaged over views, top-k classes.

The videos go through the test-mode :class:`~videomae.data.datasets.VideoClipDataset` (one decode per video for all
its segments, ``num_crops`` crops along the long side) and the evaluation's
:class:`~videomae.evaluation.multiview.MultiViewAccumulator` (softmax per view, mean per video), so a prediction is
exactly what evaluation would score. An unreadable video is reported, never replaced by another.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from videomae.data.datasets import VideoClipDataset, collate_clips
from videomae.data.manifest import Manifest, ManifestRow
from videomae.evaluation.multiview import MultiViewAccumulator
from videomae.inference.loading import InferenceModel

__all__ = ["VideoPrediction", "predict_videos"]

_SOURCE = "<videos>"


@dataclass
class VideoPrediction:
    """Class probabilities of one video.

    Attributes:
        index: position of the video in the input list.
        path: the video file or frame folder.
        probs: ``[K]`` softmax probabilities averaged over the views; ``None`` when the video could not be read.
        num_views: views averaged.
    """

    index: int
    path: str
    probs: torch.Tensor | None
    num_views: int = 0

    @property
    def valid(self) -> bool:
        """Whether the video was read."""
        return self.probs is not None

    def top_k(self, k: int) -> list[tuple[int, float]]:
        """The ``k`` most probable ``(class id, probability)`` pairs, most probable first."""
        if self.probs is None:
            return []
        values, ids = self.probs.topk(min(k, self.probs.numel()))
        return list(zip(ids.tolist(), values.tolist()))


def predict_videos(
    model: InferenceModel,
    paths: Sequence[str | os.PathLike],
    *,
    num_segments: int = 1,
    num_crops: int = 1,
    sampling_rate: int = 4,
    short_side_size: int | None = None,
    batch_size: int = 4,
    workers: int = 0,
    backend: str = "auto",
) -> list[VideoPrediction]:
    """Class probabilities of each video, in input order.

    Args:
        model: a classifier.
        paths: video files or frame folders (default frame names ``img_{:05d}.jpg``).
        num_segments: clips per video, spread evenly over it (1: the centred clip).
        num_crops: crops per clip along the long side (1: centre, 3: start/centre/end).
        sampling_rate: frame stride inside a clip (shrunk for videos too short for it).
        short_side_size: frames are resized to this short side before cropping (default: the model's input size).
        batch_size: videos per forward (``num_segments * num_crops`` clips each).
        workers: DataLoader processes decoding videos (0: in this process).
        backend: ``"auto"``, ``"decord"`` or ``"pyav"``.
    """
    rows = [ManifestRow(path=os.fspath(p), line=i + 1, manifest=_SOURCE) for i, p in enumerate(paths)]
    dataset = VideoClipDataset(
        Manifest(rows, None, _SOURCE), num_frames=model.num_frames, sampling_rate=sampling_rate,
        input_size=model.input_size, train=False, test_num_segment=num_segments, test_num_crop=num_crops,
        short_side_size=short_side_size, backend=backend, min_frames=1,
    )  # fmt: skip
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_clips)
    views = num_segments * num_crops
    accumulator = MultiViewAccumulator(num_views=views)
    any_valid = False
    for batch in loader:
        keep = batch["valid"]  # (B*V,): unreadable videos are skipped, never substituted
        if keep.any():
            any_valid = True
            accumulator.update(model.logits(batch["video"][keep]), batch["label"][keep], batch["index"][keep])
    scores: dict[int, torch.Tensor] = {}
    if any_valid:
        result = accumulator.compute()
        scores = dict(zip(result.indices.tolist(), result.scores))
    return [
        VideoPrediction(i, dataset.row(i).path, scores.get(i), views if i in scores else 0) for i in range(len(dataset))
    ]
