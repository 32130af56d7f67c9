"""Scoring a classifier on an evaluation set across ranks, and writing the results of a multi-view test.

Each rank runs its shard (:func:`videomae.methods.finetune_data.eval_shard`, no padding); softmax scores are
averaged per video over its views and gathered in memory by :class:`MultiViewAccumulator`. Videos the dataset
could not decode come back flagged invalid and are left out of the scores (and counted), never replaced by
another video.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from videomae.data import collate_clips
from videomae.engine.dist import all_gather_objects
from videomae.engine.method import StepContext
from videomae.evaluation.metrics import ClassificationMetrics, classification_metrics
from videomae.evaluation.multiview import MultiViewAccumulator, VideoPredictions
from videomae.evaluation.reports import save_confusion_png, save_predictions_csv
from videomae.methods.finetune_data import build_eval_loader, eval_batches

__all__ = ["EvalResult", "engine_forward", "evaluate", "module_forward", "score_dataset", "write_eval_outputs"]


@dataclass
class EvalResult:
    """A scored evaluation set (the same on every rank).

    Attributes:
        predictions: per-video mean softmax scores, labels and view counts, by dataset index.
        metrics: accuracy figures; None when no video carries a label.
        num_views: views per video (``test_num_segment * test_num_crop``).
        unreadable: videos left out because they could not be decoded.
    """

    predictions: VideoPredictions
    metrics: ClassificationMetrics | None
    num_views: int
    unreadable: int

    def scalars(self, prefix: str) -> dict[str, float]:
        """``{prefix}top1``, ``{prefix}top5``, ``{prefix}mean_class`` for the metrics log (empty without labels)."""
        if self.metrics is None:
            return {}
        m = self.metrics
        return {f"{prefix}top1": m.top1, f"{prefix}top5": m.top5, f"{prefix}mean_class": m.mean_class_accuracy}


@torch.no_grad()
def score_dataset(
    forward: Callable[[torch.Tensor], torch.Tensor],
    dataset: Any,
    *,
    rank: int,
    world_size: int,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    lockstep: bool = False,
) -> EvalResult:
    """Score every video of ``dataset`` once across ranks (collective: every rank calls it).

    Args:
        forward: ``videos [N, C, T, H, W] -> logits [N, classes]`` (the model in eval mode, no gradients).
        dataset: a test-mode :class:`~videomae.data.HybridVideoDataset`.
        rank, world_size: this rank and the number of ranks.
        batch_size: videos per batch (each brings all its views).
        num_workers: loader worker processes.
        device: where ``forward`` runs.
        lockstep: every rank runs the same number of forward passes, repeating its last batch (results
            discarded) where its shard is shorter; needed when ``forward`` is collective (ZeRO-3).

    Raises:
        ValueError: no video could be scored on any rank.
    """
    num_views = dataset.test_num_segment * dataset.test_num_crop
    accumulator = MultiViewAccumulator(num_views, gather=all_gather_objects)
    done, unreadable, last = 0, 0, None
    for batch in build_eval_loader(dataset, rank, world_size, batch_size, num_workers):
        videos = batch["video"].to(device, non_blocking=True)  # (B*V, C, T, H, W)
        logits = forward(videos)  # (B*V, classes)
        keep = batch.get("valid", torch.ones(len(videos), dtype=torch.bool))
        unreadable += int((~keep).sum()) // num_views
        if keep.any():
            accumulator.update(logits[keep.to(logits.device)], batch["label"][keep], batch["index"][keep])
        done, last = done + 1, videos
    if lockstep:
        for _ in range(eval_batches(len(dataset), world_size, batch_size) - done):
            forward(last if last is not None else collate_clips([dataset[0]])["video"].to(device))
    predictions = accumulator.compute()
    unreadable = sum(all_gather_objects(unreadable))
    labelled = bool((predictions.labels >= 0).any())
    metrics = classification_metrics(predictions.scores, predictions.labels) if labelled else None
    return EvalResult(predictions, metrics, num_views, unreadable)


def write_eval_outputs(
    result: EvalResult,
    folder: str | Path,
    class_names: Sequence[str] | None,
    paths: Sequence[str],
    info: dict[str, Any],
) -> dict[str, Any]:
    """Write ``predictions.csv``, ``confusion.png`` (with labels) and ``metrics.json`` into ``folder``.

    Args:
        result: the scored set.
        folder: output folder (created).
        class_names: class names by id (None: ids only).
        paths: video path by dataset index.
        info: extra facts stored in ``metrics.json`` (split, step, weights evaluated).

    Returns:
        What ``metrics.json`` holds: ``info`` plus ``num_videos``, ``num_views``, ``unreadable_videos`` and, with
        labels, ``top1``, ``top5``, ``mean_class_accuracy`` (fractions).
    """
    folder = Path(folder)
    save_predictions_csv(result.predictions, folder / "predictions.csv", paths=paths, class_names=class_names)
    summary = {
        **info,
        "num_videos": len(result.predictions),
        "num_views": result.num_views,
        "unreadable_videos": result.unreadable,
    }
    if result.metrics is not None:
        summary.update(result.metrics.as_dict())
        summary["num_videos"] = len(result.predictions)  # as_dict counts labelled videos only
        summary["num_labelled"] = result.metrics.num_videos
        title = f"{info.get('split', 'test')} {info.get('weights', '')}".strip()
        save_confusion_png(result.metrics.confusion, folder / "confusion.png", class_names, title=title)
    (folder / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def engine_forward(ctx: StepContext, videos: torch.Tensor) -> torch.Tensor:
    """Float32 logits of the engine's module (in the run's precision) for ``videos``."""
    return ctx.engine(videos.to(ctx.compute_dtype)).float()


def module_forward(ctx: StepContext, module: torch.nn.Module, videos: torch.Tensor) -> torch.Tensor:
    """Float32 logits of a module outside the engine (an fp32 EMA) under the run's autocast precision."""
    dtype = ctx.compute_dtype
    autocast = torch.autocast(ctx.device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    with autocast:
        return module(videos).float()


def evaluate(
    ctx: StepContext, forwards: dict[str, Callable[[torch.Tensor], torch.Tensor]], dataset: Any, cfg: Any
) -> dict[str, EvalResult]:
    """Score ``dataset`` with each of ``forwards`` (by result prefix) on every rank, the engine in eval mode.

    ``cfg`` is the supervised config (evaluation batch size, loader workers, ZeRO stage: under ZeRO-3 every rank
    runs the same number of forward passes, since each gathers parameters collectively)."""
    d = cfg.data
    ctx.engine.eval()
    try:
        return {
            name: score_dataset(
                forward,
                dataset,
                rank=ctx.rank,
                world_size=ctx.world_size,
                batch_size=d.eval_batch_size or cfg.train.batch_size,
                num_workers=d.num_workers,
                device=ctx.device,
                lockstep=cfg.deepspeed.zero_stage == 3,
            )
            for name, forward in forwards.items()
        }
    finally:
        ctx.engine.train()
