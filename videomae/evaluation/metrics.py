"""Accuracy of video-level predictions: top-1, top-k, mean per-class accuracy and the confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ClassificationMetrics", "classification_metrics", "confusion_matrix"]


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
