"""Frozen features of a labelled manifest for the probes, computed once and cached as safetensors.

One clip per row: the centre clip, centre crop, no augmentation (the evaluation transform), so features depend on
nothing random and can be cached. A cache file is named by the sha256 of everything that fixes its content: the
weights' identity, the manifest's bytes and where its relative paths resolve, the label space, the clip settings and
the precision; it holds ``labels``, ``mean`` (mean of the patch tokens), ``cls`` (the class token, when the encoder
has one) and, when the attentive probe asked for them, ``tokens``, with those settings in its metadata. Files are
written atomically (safetensors, never pickle), so one that exists is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from videomae.data import HybridVideoDataset, SourceSpec, collate_clips
from videomae.data.images import is_image_path
from videomae.data.readers import DEFAULT_FRAME_TEMPLATE
from videomae.disk_faults import write_atomic
from videomae.evaluation.probes import encode_clips, model_frames
from videomae.inference.loading import InferenceModel
from videomae.inference.probe_models import ModelShape, ProbeModel

__all__ = [
    "IMAGE_MODEL_CLIP_FRAMES",
    "ClipSettings",
    "FeatureSet",
    "cache_path",
    "clip_settings",
    "compute_features",
    "labelled_dataset",
    "load_cached",
    "save_cached",
]


log = logging.getLogger(__name__)

FORMAT = "videomae-probe-features/1"
METADATA_KEY = "videomae_probe"
IMAGE_MODEL_CLIP_FRAMES = 8
"""Frames an image model averages over on a video manifest when neither ``num_frames`` nor its run says more."""


@dataclass(frozen=True)
class ClipSettings:
    """How each row becomes the clip the encoder sees.

    Attributes:
        num_frames: frames decoded per video row (image rows give one frame).
        sampling_rate: frames between the clip's frames.
        input_size: the crop's side (the model's).
        short_side_size: resize before the centre crop (``None``: the input size).
        frame_template: file names in frame folders.
        backend: video decoder.
    """

    num_frames: int
    sampling_rate: int
    input_size: int
    short_side_size: int | None = None
    frame_template: str = DEFAULT_FRAME_TEMPLATE
    backend: str = "auto"


def clip_settings(
    probe: ProbeModel,
    shape: ModelShape,
    *,
    num_frames: int | None = None,
    sampling_rate: int | None = None,
    short_side_size: int | None = None,
    frame_template: str = DEFAULT_FRAME_TEMPLATE,
    backend: str = "auto",
) -> ClipSettings:
    """The clip settings: those given, else the training run's (``data.*`` in the export), else the model's.

    A video model sees its own frame count; an image model on a video manifest averages ``num_frames`` frames
    (default: its run's ``data.num_frames`` when above 1, else :data:`IMAGE_MODEL_CLIP_FRAMES`).

    Raises:
        ValueError: a frame count other than a video model's own.
    """
    if shape.num_frames > 1 and num_frames not in (None, shape.num_frames):
        raise ValueError(f"num_frames={num_frames}: {probe.model_name} takes clips of {shape.num_frames} frames (its "
                         "position table fixes the count); --num-frames is for image models on videos")  # fmt: skip
    if shape.num_frames > 1:
        frames = shape.num_frames
    else:
        run_frames = int(probe.run_setting("num_frames") or 1)
        frames = num_frames or (run_frames if run_frames > 1 else IMAGE_MODEL_CLIP_FRAMES)
    rate = sampling_rate or int(probe.run_setting("sampling_rate") or 4)
    short = short_side_size or probe.run_setting("short_side_size")
    return ClipSettings(frames, rate, shape.input_size, short, frame_template, backend)


def labelled_dataset(
    manifest: str | os.PathLike,
    data_root: str | os.PathLike | None,
    settings: ClipSettings,
    label_names: list[str] | None = None,
) -> tuple[HybridVideoDataset, ClipSettings]:
    """The manifest's centre clips, every row labelled (in ``label_names``' space when given), and the settings
    they are made with: those given, but one frame for a manifest of images (a video model holds each image over
    its frames itself, an image model encodes it once).

    Raises:
        ValueError: rows without a label (naming the manifest and the fix), or classes ``label_names`` lacks.
    """

    def build(clip: ClipSettings) -> HybridVideoDataset:
        return HybridVideoDataset(
            [SourceSpec(str(manifest), data_root=data_root)],
            num_frames=clip.num_frames, sampling_rate=clip.sampling_rate, input_size=clip.input_size, train=False,
            short_side_size=clip.short_side_size, frame_template=clip.frame_template, backend=clip.backend,
            label_names=label_names,
        )  # fmt: skip

    dataset = build(settings)
    unlabelled = int((dataset.labels < 0).sum())
    if unlabelled:
        raise ValueError(f"{manifest}: {unlabelled} of {len(dataset)} rows have no label; a probe needs labelled "
                         "train and val manifests (a 'label' column: class names or ids)")  # fmt: skip
    if settings.num_frames > 1 and all(is_image_path(row.path) for row in dataset.rows):
        settings = replace(settings, num_frames=1)
        dataset = build(settings)
    return dataset, settings


def _sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def cache_path(
    cache: str | os.PathLike,
    probe: ProbeModel,
    manifest: str | os.PathLike,
    data_root: str | os.PathLike | None,
    label_names: list[str] | None,
    settings: ClipSettings,
    precision: str,
) -> tuple[Path, dict[str, Any]]:
    """``(file, key settings)``: where the features of ``manifest`` by ``probe`` live, and what fixes them."""
    root = Path(data_root) if data_root is not None else Path(manifest).parent
    key = {
        "format": FORMAT, "weights": probe.identity, "model": probe.model_name,
        "manifest_sha256": _sha256(manifest), "paths_from": str(root.resolve()), "label_names": label_names,
        "clip": asdict(settings), "precision": precision,
    }  # fmt: skip
    text = json.dumps(key, sort_keys=True, default=str)
    name = hashlib.sha256(text.encode()).hexdigest()[:24]
    return Path(cache) / f"{Path(manifest).stem}-{name}.safetensors", json.loads(text)


@dataclass
class FeatureSet:
    """Features of a manifest's readable rows.

    Attributes:
        labels: ``int64 [N]``.
        mean: ``[N, D]`` mean of the patch tokens.
        cls: ``[N, D]`` class token (``None`` when the encoder has none).
        tokens: ``[N, T, D]`` every token (``None`` unless asked for).
        unreadable: rows skipped because their video could not be read.
        seconds: time taken to compute them (as recorded when they were computed).
        modality: how the clips met the model: ``same`` (as many frames as the model takes), ``per_frame`` (an
            image model on videos: each frame encoded, the tokens averaged over the frames) or ``repeat`` (a video
            model on images: the image held still over the model's frames).
        cached: read from the cache.
    """

    labels: torch.Tensor
    mean: torch.Tensor
    cls: torch.Tensor | None
    tokens: torch.Tensor | None
    unreadable: int
    seconds: float
    modality: str = "same"
    cached: bool = False


@torch.no_grad()
def compute_features(
    model: InferenceModel,
    dataset: HybridVideoDataset,
    num_patches: int,
    *,
    tokens: bool = False,
    batch_size: int = 32,
    workers: int = 2,
) -> FeatureSet:
    """Run the frozen encoder over ``dataset`` once (batched, on the model's device, in its precision)."""
    start = time.perf_counter()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_clips, num_workers=workers,
                        pin_memory=model.device.type == "cuda")  # fmt: skip
    parts: dict[str, list[torch.Tensor]] = {"labels": [], "mean": [], "cls": [], "tokens": []}
    unreadable, modality = 0, "same"
    frames = model_frames(model.model)
    for batch in loader:
        keep = batch["valid"]
        unreadable += int((~keep).sum())
        videos = batch["video"][keep].to(model.device, non_blocking=True)
        if not len(videos):
            continue
        with model.autocast():
            x = encode_clips(model.model, videos).float()  # (B, P + N, D)
        clip = videos.shape[2]
        modality = "same" if clip == frames else "repeat" if clip == 1 else "per_frame"
        prefix = x.shape[1] - num_patches
        parts["labels"].append(batch["label"][keep])
        parts["mean"].append(x[:, prefix:].mean(dim=1).cpu())  # (B, D)
        if prefix:
            parts["cls"].append(x[:, 0].cpu())
        if tokens:
            parts["tokens"].append(x.cpu())
    if not parts["labels"]:
        raise ValueError(f"{dataset.sources[0].manifest}: no readable rows ({unreadable} unreadable)")
    joined = {k: torch.cat(v) if v else None for k, v in parts.items()}
    return FeatureSet(joined["labels"], joined["mean"], joined["cls"], joined["tokens"], unreadable,
                      time.perf_counter() - start, modality)  # fmt: skip


def save_cached(path: Path, features: FeatureSet, key: dict[str, Any]) -> None:
    """Write ``features`` to ``path`` (atomically) with ``key`` in its metadata."""
    tensors = {"labels": features.labels, "mean": features.mean}
    tensors |= {k: getattr(features, k) for k in ("cls", "tokens") if getattr(features, k) is not None}
    info = {"key": key, "unreadable": features.unreadable, "seconds": features.seconds, "modality": features.modality}
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(info)}))


def load_cached(path: Path, key: dict[str, Any], tokens: bool = False) -> FeatureSet | None:
    """The features cached at ``path`` when they were made with ``key`` (and hold tokens if asked); else ``None``."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            info = json.loads((f.metadata() or {}).get(METADATA_KEY, "{}"))
            names = set(f.keys())
            if info.get("key") != key or (tokens and "tokens" not in names):
                return None
            loaded = {k: f.get_tensor(k) for k in names}
    except (SafetensorError, OSError, json.JSONDecodeError) as err:
        log.warning("%s: unreadable feature cache (%s); computing the features again", path, err)
        return None
    return FeatureSet(loaded["labels"], loaded["mean"], loaded.get("cls"), loaded.get("tokens"),
                      int(info.get("unreadable", 0)), float(info.get("seconds", 0.0)), info.get("modality", "same"),
                      cached=True)  # fmt: skip
