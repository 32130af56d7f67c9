"""``videomae probe``: frozen-feature probes of any checkpoint on a labelled train / val pair, one report.

The checkpoint is described without loading it (:mod:`~videomae.inference.probe_models`), the clip settings follow
from the given values, the training run's config and the model, and the features of each manifest are read from the
cache or computed once (:mod:`~videomae.inference.probe_features`); the model is built only when a manifest's
features are not cached. Then the probes of :mod:`videomae.evaluation.probes` are fitted: ``linear`` (L-BFGS
logistic regression on standardised pooled features) and/or ``attentive`` (a learned query over the tokens).
``<out>/probe.json`` holds the settings and the results; :func:`format_table` prints them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from videomae.disk_faults import write_atomic
from videomae.evaluation.probes import (
    LINEAR_MAX_ITER,
    POOLS,
    fit_attentive_probe,
    fit_linear_probe,
    topk_accuracy,
)
from videomae.inference.loading import PRECISIONS
from videomae.inference.probe_features import (
    FeatureSet,
    cache_path,
    clip_settings,
    compute_features,
    labelled_dataset,
    load_cached,
    save_cached,
)
from videomae.inference.probe_models import describe, resolve_probe_model

__all__ = ["KINDS", "ProbeOptions", "format_table", "run_probe"]

KINDS = ("linear", "attentive", "both")
REPORT = "probe.json"


@dataclass
class ProbeOptions:
    """How the probes are fitted and the features computed.

    Attributes:
        kind: ``linear``, ``attentive`` or ``both``.
        pool: linear-probe features (see :data:`~videomae.evaluation.probes.POOLS`).
        l2: linear probe's penalty on the weights.
        max_iter: linear probe's L-BFGS iterations at most (it stops when converged).
        epochs: attentive probe's epochs.
        lr: attentive probe's AdamW learning rate.
        num_heads: attentive probe's heads.
        seed: attentive probe's seed (and a ``random:`` model's initialisation).
        batch_size: clips per encoder forward.
        workers: decoding processes.
        device: where the encoder runs (default: cuda when available).
        precision: ``fp32``, ``bf16`` or ``fp16`` autocast around the encoder.
        recompute: ignore cached features (and overwrite them).
    """

    kind: str = "linear"
    pool: str = "auto"
    l2: float = 1e-3
    max_iter: int = LINEAR_MAX_ITER
    epochs: int = 20
    lr: float = 1e-2
    num_heads: int = 4
    seed: int = 0
    batch_size: int = 32
    workers: int = 2
    device: str | None = None
    precision: str = "fp32"
    recompute: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` naming the option that cannot work."""
        for key, allowed in (("kind", KINDS), ("pool", POOLS), ("precision", tuple(PRECISIONS))):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key}={getattr(self, key)!r}: expected one of {', '.join(allowed)}")
        for key in ("max_iter", "epochs", "num_heads", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)} must be >= 1")
        if self.workers < 0:
            raise ValueError(f"workers={self.workers} must be >= 0")


def _pooled(features: FeatureSet, pool: str) -> tuple[torch.Tensor, str]:
    if pool == "cls" and features.cls is None:
        raise ValueError("pool='cls': this encoder has no class token (use mean or auto)")
    if pool == "cls" or (pool == "auto" and features.cls is not None):
        return features.cls, "cls"
    return features.mean, "mean"


def _result(kind: str, fitted: Any, val_x: torch.Tensor, val_y: torch.Tensor, train_n: int, seconds: float,
            settings: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    return {
        "kind": kind, "val_top1": fitted.accuracy, "val_top5": topk_accuracy(fitted.classifier, val_x, val_y, 5),
        "train_top1": fitted.train_accuracy, "classes": fitted.num_classes, "train_samples": train_n,
        "val_samples": len(val_y), "seconds": round(seconds, 3), "settings": settings,
    }  # fmt: skip


def fit_probes(train: FeatureSet, val: FeatureSet, num_classes: int, options: ProbeOptions) -> tuple[list, str]:
    """Fit the probes ``options.kind`` asks for -> ``(result rows, the pooling the linear probe used)``."""
    results, used = [], ""
    if options.kind in ("linear", "both"):
        (train_x, used), (val_x, _) = _pooled(train, options.pool), _pooled(val, options.pool)
        start = time.perf_counter()
        fitted = fit_linear_probe(train_x, train.labels, val_x, val.labels, num_classes=num_classes, l2=options.l2,
                                  max_iter=options.max_iter)  # fmt: skip
        settings = {"pool": used, "l2": options.l2, "max_iter": options.max_iter, "solver": "lbfgs"}
        results.append(_result("linear", fitted, val_x, val.labels, len(train.labels),
                               time.perf_counter() - start, settings))  # fmt: skip
    if options.kind in ("attentive", "both"):
        start = time.perf_counter()
        fitted = fit_attentive_probe(train.tokens, train.labels, val.tokens, val.labels, num_classes=num_classes,
                                     num_heads=options.num_heads, epochs=options.epochs, lr=options.lr,
                                     seed=options.seed)  # fmt: skip
        settings = {"epochs": options.epochs, "lr": options.lr, "num_heads": options.num_heads, "seed": options.seed}
        results.append(_result("attentive", fitted, val.tokens, val.labels, len(train.labels),
                               time.perf_counter() - start, settings))  # fmt: skip
    return results, used


def run_probe(
    checkpoint: str | os.PathLike,
    train: str | os.PathLike,
    val: str | os.PathLike,
    *,
    out: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    model_name: str | None = None,
    overrides: dict[str, Any] | None = None,
    num_frames: int | None = None,
    sampling_rate: int | None = None,
    short_side_size: int | None = None,
    frame_template: str | None = None,
    backend: str = "auto",
    options: ProbeOptions | None = None,
) -> dict[str, Any]:
    """Probe ``checkpoint``'s frozen features on ``train`` / ``val``; write ``<out>/probe.json`` and return it.

    Args:
        checkpoint: see :func:`~videomae.inference.probe_models.resolve_probe_model` (``random:NAME`` included).
        train, val: labelled manifests (val in train's label space).
        out: report folder.
        data_root: prefix of both manifests' relative paths.
        cache: feature cache folder (default ``<out>/features``).
        model_name, overrides: for a checkpoint without our metadata, or the arguments of a ``random:`` model.
        num_frames, sampling_rate, short_side_size, frame_template, backend: clip settings (see
            :func:`~videomae.inference.probe_features.clip_settings`).
        options: probe and feature options.

    Raises:
        CheckpointError, ValueError, FileNotFoundError: a checkpoint, manifest or option that cannot work (named).
    """
    options = options or ProbeOptions()
    options.validate()
    out = Path(out)
    cache = Path(cache) if cache is not None else out / "features"
    probe = resolve_probe_model(checkpoint, model_name=model_name, overrides=overrides, seed=options.seed,
                                exports=cache / "exports")  # fmt: skip
    shape = probe.shape()
    extra = {"frame_template": frame_template} if frame_template else {}
    settings = clip_settings(probe, shape, num_frames=num_frames, sampling_rate=sampling_rate,
                             short_side_size=short_side_size, backend=backend, **extra)  # fmt: skip
    datasets, clips = {}, {}
    datasets["train"], clips["train"] = labelled_dataset(train, data_root, settings)
    names = datasets["train"].label_names
    datasets["val"], clips["val"] = labelled_dataset(val, data_root, settings, label_names=names)
    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokens = options.kind != "linear"
    model, features, files = None, {}, {}
    for split, manifest in (("train", train), ("val", val)):
        path, key = cache_path(cache, probe, manifest, data_root, names, clips[split], options.precision)
        found = None if options.recompute else load_cached(path, key, tokens=tokens)
        if found is None:
            model = model or probe.load(device, options.precision)  # built only when some features are missing
            found = compute_features(model, datasets[split], shape.num_patches, tokens=tokens,
                                     batch_size=options.batch_size, workers=options.workers)  # fmt: skip
            save_cached(path, found, key)
        features[split], files[split] = found, path
    num_classes = len(names) if names else int(max(f.labels.max() for f in features.values())) + 1
    results, pool = fit_probes(features["train"], features["val"], num_classes, options)
    report = {
        "checkpoint": describe(probe),
        "clip": asdict(settings) | {"model_frames": shape.num_frames, "modality": features["train"].modality,
                                    "view": "centre clip, centre crop"},
        "pool": pool or None,
        "classes": num_classes,
        "label_names": names,
        "splits": {split: {"manifest": str(manifest), "samples": len(features[split].labels),
                           "num_frames": clips[split].num_frames, "modality": features[split].modality,
                           "unreadable": features[split].unreadable, "cached": features[split].cached,
                           "feature_seconds": round(features[split].seconds, 3), "cache_file": str(files[split])}
                   for split, manifest in (("train", train), ("val", val))},
        "options": asdict(options) | {"device": device, "threads": torch.get_num_threads()},
        "results": results,
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / REPORT, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))
    return report


def format_table(report: dict[str, Any]) -> str:
    """The report as text: what was probed, then one row per probe."""
    ckpt, clip, splits = report["checkpoint"], report["clip"], report["splits"]
    modality = {"same": "", "per_frame": ", image model: each frame encoded, tokens averaged",
                "repeat": ", video model: each image held over its frames"}[clip["modality"]]  # fmt: skip
    cached = [s for s, v in splits.items() if v["cached"]]
    counts = ", ".join(f"{s} {v['samples']} ({v['unreadable']} unreadable)" for s, v in splits.items())
    lines = [
        f"{ckpt['checkpoint']} ({ckpt['kind']}, {ckpt['model']}); clips {clip['num_frames']} x "
        f"{clip['input_size']}px, rate {clip['sampling_rate']}{modality}",
        f"features: {counts}; cached: {', '.join(cached) or 'none'}; linear features: {report['pool'] or '-'}",
        f"{'kind':<10}{'val top-1':>10}{'top-5':>8}{'train top-1':>12}{'classes':>9}{'samples':>10}{'seconds':>9}",
    ]
    for r in report["results"]:
        samples = f"{r['train_samples']}/{r['val_samples']}"
        lines.append(f"{r['kind']:<10}{r['val_top1']:>10.3f}{r['val_top5']:>8.3f}{r['train_top1']:>12.3f}"
                     f"{r['classes']:>9}{samples:>10}{r['seconds']:>9.1f}")  # fmt: skip
    return "\n".join(lines)
