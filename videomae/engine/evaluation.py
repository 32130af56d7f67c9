"""Multi-view evaluation: per-video score averaging across ranks, metrics, a confusion-matrix picture, a CSV.

Each test video is seen as ``test_num_segment * test_num_crop`` views. Every batch row carries the video's dataset
index (never a file basename: two videos may share one) and a view id; softmax scores are averaged per video over
its distinct views. Rows from every rank are gathered in memory and deduplicated by ``(video, view)``, because a
distributed sampler pads the last round by repeating samples: no video is counted twice or dropped when the count
does not divide the world size. The gather holds every rank's per-view scores (videos × views × classes float32,
~0.5 GB for Kinetics-400 at 5 × 3 views) on each rank, like the original's per-rank score files.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from videomae.engine.dist import all_gather_objects

__all__ = [
    "ClassificationMetrics",
    "MultiViewAccumulator",
    "VideoPredictions",
    "classification_metrics",
    "confusion_matrix",
    "save_confusion_png",
    "save_predictions_csv",
    "views_from_repeats",
]

log = logging.getLogger(__name__)
GatherFn = Callable[[Any], list[Any]]


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
        gather: ``obj -> [obj of every rank]``; default :func:`videomae.engine.dist.all_gather_objects`.
    """

    def __init__(self, num_views: int | None = None, gather: GatherFn | None = None) -> None:
        self.num_views = num_views
        self.gather = gather or all_gather_objects
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


@dataclass
class ClassificationMetrics:
    """Accuracy of video-level predictions, as fractions in ``[0, 1]``.

    Attributes:
        top1: top-1 accuracy.
        top5: top-5 accuracy (top-C when there are fewer than 5 classes).
        mean_class_accuracy: mean over classes with at least one video of that class's top-1 recall.
        num_videos: labelled videos counted.
        confusion: ``[C, C]`` counts, rows = true class, columns = predicted class.
    """

    top1: float
    top5: float
    mean_class_accuracy: float
    num_videos: int
    confusion: torch.Tensor

    def as_dict(self) -> dict[str, float]:
        """Scalars for the metrics log."""
        return {"top1": self.top1, "top5": self.top5, "mean_class_accuracy": self.mean_class_accuracy,
                "num_videos": self.num_videos}  # fmt: skip


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[C, C]`` counts of (true class, predicted class)."""
    flat = labels.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_metrics(scores: torch.Tensor, labels: torch.Tensor, topk: int = 5) -> ClassificationMetrics:
    """Top-1, top-k and mean per-class accuracy of ``scores [V, C]`` against ``labels [V]`` (-1 rows skipped).

    Raises:
        ValueError: no labelled video, or a label outside ``0 .. C - 1``.
    """
    keep = labels >= 0
    scores, labels = scores[keep], labels[keep].long()
    num_classes = scores.shape[1]
    if not len(labels):
        raise ValueError("no labelled videos to score")
    if labels.max() >= num_classes:
        raise ValueError(f"label {int(labels.max())} is outside the {num_classes} classes of the scores")
    top = scores.topk(min(topk, num_classes), dim=1).indices  # (V, k)
    confusion = confusion_matrix(labels, top[:, 0], num_classes)
    per_class = confusion.diag().double() / confusion.sum(1).clamp(min=1)
    present = confusion.sum(1) > 0
    return ClassificationMetrics(
        top1=float((top[:, 0] == labels).double().mean()),
        top5=float((top == labels[:, None]).any(dim=1).double().mean()),
        mean_class_accuracy=float(per_class[present].mean()),
        num_videos=len(labels),
        confusion=confusion,
    )


# A perceptually even dark-blue -> green -> yellow scale (viridis anchor colours).
_SCALE = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], np.float64)


def _colour(values: np.ndarray) -> np.ndarray:
    """Map values in ``[0, 1]`` to uint8 RGB (``[..., 3]``) on the colour scale."""
    pos = np.clip(values, 0.0, 1.0) * (len(_SCALE) - 1)
    lo = np.minimum(pos.astype(int), len(_SCALE) - 2)
    frac = (pos - lo)[..., None]
    return np.round(_SCALE[lo] * (1 - frac) + _SCALE[lo + 1] * frac).astype(np.uint8)


def save_confusion_png(
    confusion: torch.Tensor | np.ndarray,
    path: str | Path,
    class_names: Sequence[str] | None = None,
    title: str = "confusion matrix",
    max_side: int = 800,
) -> Path:
    """Draw a row-normalised confusion matrix (rows: true class, columns: predicted) with a colour bar.

    With up to 40 classes rows are labelled ``id name`` and columns ``id``; with up to 25 classes and room, each
    cell shows its count. Larger matrices are drawn one small square per cell, unlabelled.
    """
    counts = np.asarray(confusion, dtype=np.float64)
    num = counts.shape[0]
    recall = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    cell = max(1, min(32, max_side // num))
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def width(text: str) -> int:
        return int(probe.textbbox((0, 0), text, font=font)[2])

    labelled = num <= 40
    row_labels = [f"{i} {class_names[i][:20]}" if class_names else str(i) for i in range(num)] if labelled else []
    left = 8 + (max(map(width, row_labels)) + 6 if row_labels else 0)
    caption = f"{title} - rows: true, columns: predicted, colour: fraction of the row"
    top = 26 + (16 if labelled else 0)
    side = num * cell
    canvas_w = max(left + side + 70, width(caption) + 16)
    image = Image.new("RGB", (canvas_w, top + side + 10), "white")
    draw = ImageDraw.Draw(image)
    draw.text((8, 6), caption, fill="black", font=font)
    matrix = Image.fromarray(_colour(recall)).resize((side, side), Image.NEAREST)
    image.paste(matrix, (left, top))
    for i, text in enumerate(row_labels):
        y = top + i * cell + (cell - 11) // 2
        draw.text((left - 6 - width(text), y), text, fill="black", font=font)
        draw.text((left + i * cell + (cell - width(str(i))) // 2, top - 15), str(i), fill="black", font=font)
    if labelled and num <= 25 and cell >= 22:
        for i in range(num):
            for j in range(num):
                text = str(int(counts[i, j]))
                ink = "black" if recall[i, j] > 0.6 else "white"
                draw.text((left + j * cell + (cell - width(text)) // 2, top + i * cell + (cell - 11) // 2), text,
                          fill=ink, font=font)  # fmt: skip
    bar_x = left + side + 12
    ramp = _colour(np.linspace(1.0, 0.0, max(side, 2)))[:, None, :].repeat(14, axis=1)  # (side, 14, 3)
    image.paste(Image.fromarray(ramp), (bar_x, top))
    draw.text((bar_x + 18, top), "1.0", fill="black", font=font)
    draw.text((bar_x + 18, top + max(side, 2) - 11), "0.0", fill="black", font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def save_predictions_csv(
    predictions: VideoPredictions,
    path: str | Path,
    paths: Sequence[str] | Mapping[int, str] | None = None,
    class_names: Sequence[str] | None = None,
    top_k: int = 5,
) -> Path:
    """One row per video: ``index, path, label, [label_name,] num_views, correct, pred_1, [name_1,] score_1, ...``.

    Args:
        predictions: output of :meth:`MultiViewAccumulator.compute`.
        path: CSV file to write.
        paths: video path per dataset index (e.g. the manifest rows' paths); empty column when None.
        class_names: adds ``label_name`` and ``name_k`` columns.
        top_k: predictions listed per video.
    """
    k = min(top_k, predictions.scores.shape[1])
    values, classes = predictions.scores.topk(k, dim=1)
    header = ["index", "path", "label", *(["label_name"] if class_names else []), "num_views", "correct"]
    for r in range(1, k + 1):
        header += [f"pred_{r}", *([f"name_{r}"] if class_names else []), f"score_{r}"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for v in range(len(predictions)):
            index, label = int(predictions.indices[v]), int(predictions.labels[v])
            row: list[Any] = [index, paths[index] if paths is not None else "", label]
            if class_names:
                row.append(class_names[label] if label >= 0 else "")
            row += [int(predictions.num_views[v]), int(label == int(classes[v, 0])) if label >= 0 else ""]
            for r in range(k):
                cls = int(classes[v, r])
                row += [cls, *([class_names[cls]] if class_names else []), f"{float(values[v, r]):.6f}"]
            writer.writerow(row)
    return path
