"""Evaluation result files: the confusion-matrix picture and the per-video predictions CSV."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from videomae.evaluation.multiview import VideoPredictions

__all__ = ["save_confusion_png", "save_predictions_csv"]


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
