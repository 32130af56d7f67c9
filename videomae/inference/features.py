"""Clip features over whole videos (e.g. for temporal action detection): sliding clips, batched encoder forwards.

Each video of a manifest is decoded once (every frame any of its clips needs, in one read), resized and
centre-cropped once per frame in uint8, and cut into clips of ``num_frames`` frames ``sampling_rate`` apart,
starting every ``stride`` frames; overlapping clips share the decoded frames. Clips from consecutive videos fill
the same batches. Output folder::

    000000_<path>.npy   float32 [num_clips, D] (or [num_clips, N, D] with pool="tokens"), one per video
    features.csv        index, path, file, num_clips, error (one row per manifest row, in manifest order)
    features.json       model (source, name, weights sha256) and preprocessing: compare features by it

Under a launcher (``torchrun``, ``deepspeed``, ``srun``: a process group is initialised) rank ``r`` of ``N`` takes
rows ``r, r + N, ...`` and rank 0 joins the ranks' indices at the end. A rerun into the same folder skips the videos
whose ``.npy`` is there (each is written atomically, so it is complete) and refuses a folder made with other
settings; ``overwrite`` redoes every video (:mod:`videomae.inference.feature_runs`).

File names start with the manifest row index, followed by the video's path (relative to ``data_root``) with
separators replaced, so two videos with the same base name never collide.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from videomae.data.datasets import decode_clips
from videomae.data.decoding import DEFAULT_FRAME_TEMPLATE, DecodeError
from videomae.data.manifest import ManifestRow, read_manifest
from videomae.data.sampling import clip_span
from videomae.data.transforms import EvalTransform
from videomae.engine import dist
from videomae.inference.feature_runs import (
    FEATURE_INDEX,
    FeatureFile,
    FeatureSettingsError,
    check_settings,
    completed_clips,
    join_indices,
    rank_index,
    read_index,
    save_features,
    weights_digest,
    write_index,
)
from videomae.inference.loading import InferenceModel

__all__ = ["FEATURE_INDEX", "FeatureFile", "extract_features", "feature_file_name", "sliding_clips"]

log = logging.getLogger(__name__)


def sliding_clips(video_frames: int, num_frames: int, sampling_rate: int, stride: int) -> list[list[int]]:
    """Frame indices of the clips starting at frames ``0, stride, 2*stride, ...`` that fit in the video.

    A clip covers ``(num_frames - 1) * sampling_rate + 1`` frames; the tail shorter than ``stride`` is not covered
    (as TAD feature extraction). A video shorter than one clip gives one clip whose last frame repeats.
    """
    if min(video_frames, num_frames, sampling_rate, stride) < 1:
        raise ValueError(f"video_frames={video_frames}, num_frames={num_frames}, sampling_rate={sampling_rate}, "
                         f"stride={stride} must all be >= 1")  # fmt: skip
    last_start = max(video_frames - clip_span(num_frames, sampling_rate), 0)
    return [
        [min(start + i * sampling_rate, video_frames - 1) for i in range(num_frames)]
        for start in range(0, last_start + 1, stride)
    ]


def feature_file_name(index: int, path: str, data_root: str | os.PathLike | None = None) -> str:
    """``{index:06d}_{path}.npy`` with the path made relative to ``data_root`` and flattened to a file name."""
    if data_root is not None and Path(path).is_relative_to(data_root):
        path = os.path.relpath(path, data_root)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.splitext(path)[0]).strip("_.")
    return f"{index:06d}_{stem[-150:]}.npy"


class _DecodedVideos(Dataset):
    """Item ``k``: video ``todo[k]`` decoded once and cropped (``uint8 [F, C, S, S]``) with its clips' positions."""

    def __init__(
        self, rows: list[ManifestRow], todo: list[int], clips_for, transform: EvalTransform, backend: str, template: str
    ):
        self.rows, self.todo, self.clips_for, self.transform = rows, todo, clips_for, transform
        self.backend, self.template = backend, template

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, k: int) -> dict:
        i = self.todo[k]
        try:
            frames, positions = decode_clips(
                self.rows[i], self.clips_for, backend=self.backend, frame_template=self.template
            )
        except DecodeError as err:
            return {"index": i, "error": err.reason}
        crop = self.transform.crops(frames)[0].contiguous()  # (F, C, S, S): each frame resized once
        return {"index": i, "frames": crop, "positions": positions}


def _batches(videos: Iterator[dict], batch_size: int) -> Iterator[tuple[list[int], list[torch.Tensor]]]:
    """``(video index of each clip, uint8 clips [T, C, S, S])`` in batches of ``batch_size``, across videos."""
    owners: list[int] = []
    clips: list[torch.Tensor] = []
    for video in videos:
        for positions in video["positions"]:
            owners.append(video["index"])
            clips.append(video["frames"][positions])  # (T, C, S, S)
            if len(clips) == batch_size:
                yield owners, clips
                owners, clips = [], []
    if clips:
        yield owners, clips


def extract_features(
    model: InferenceModel,
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None = None,
    sampling_rate: int = 1,
    stride: int | None = None,
    batch_size: int = 16,
    pool: str = "mean",
    short_side_size: int | None = None,
    workers: int = 0,
    backend: str = "auto",
    frame_template: str = DEFAULT_FRAME_TEMPLATE,
    overwrite: bool = False,
) -> list[FeatureFile]:
    """Write the clip features of every video of ``manifest`` into folder ``out`` (see the module docstring).

    Args:
        model: a classifier or a pretraining model (its encoder).
        manifest: CSV manifest or an original list file.
        data_root: prefix of the manifest's relative paths.
        sampling_rate: frames between the frames of a clip.
        stride: frames between clip starts (default: one clip span, so clips do not overlap).
        batch_size: clips per forward.
        pool: ``mean`` (one vector per clip) or ``tokens`` (see :meth:`InferenceModel.features`).
        short_side_size: frames are resized to this short side, then centre-cropped (default: the input size).
        workers: DataLoader processes decoding videos.
        backend: ``"auto"``, ``"decord"`` or ``"pyav"``.
        frame_template: file names in frame folders.
        overwrite: redo every video, whatever ``out`` holds.

    Returns:
        One :class:`FeatureFile` per manifest row, in manifest order (also written as ``features.csv``), on every
        rank; ``reused`` marks the videos a previous run had completed.

    Raises:
        FeatureSettingsError: ``out`` holds features made with other settings (and not ``overwrite``).
    """
    rows = read_manifest(manifest, data_root).rows
    num_frames = model.num_frames
    stride = stride or clip_span(num_frames, sampling_rate)
    clips_for = functools.partial(sliding_clips, num_frames=num_frames, sampling_rate=sampling_rate, stride=stride)
    transform = EvalTransform(model.input_size, short_side_size, num_crops=1)
    out = Path(out)
    rank, world = dist.rank(), dist.world_size()
    refusal = None
    if rank == 0:
        settings = {
            "model": model.model.model_config.get("name"), "source": str(model.source),
            "weights_sha256": weights_digest(model.source), "precision": model.precision,
            "num_frames": num_frames, "sampling_rate": sampling_rate, "stride": stride,
            "input_size": model.input_size, "short_side_size": transform.short_side_size, "crop": "centre",
            "mean": list(transform.mean), "std": list(transform.std), "pool": pool, "dtype": "float32",
            "decode_backend": backend, "frame_template": frame_template,
        }  # fmt: skip
        try:
            check_settings(out, settings, overwrite)
        except FeatureSettingsError as err:
            refusal = str(err)
    refusal = dist.broadcast_object(refusal)  # every rank refuses together, none waits at a barrier for rank 0
    if refusal:
        raise FeatureSettingsError(refusal)
    entries: dict[int, FeatureFile] = {}
    todo = []
    for i in range(rank, len(rows), world):
        name = feature_file_name(i, rows[i].path, data_root)
        done = None if overwrite else completed_clips(out / name)
        if done is None:
            todo.append(i)
        else:
            entries[i] = FeatureFile(i, rows[i].path, name, done, reused=True)
    if entries:
        log.info("rank %d: %d of %d videos already done in %s, skipped", rank, len(entries), len(entries) + len(todo),
                 out)  # fmt: skip
    expected: dict[int, int] = {}
    collected: dict[int, list[np.ndarray]] = {}

    def readable(items: Iterator[dict]) -> Iterator[dict]:
        for item in items:
            i = item["index"]
            if "error" in item:
                log.warning("%s: unreadable, no features: %s", rows[i].path, item["error"])
                entries[i] = FeatureFile(i, rows[i].path, "", 0, item["error"])
                continue
            expected[i], collected[i] = len(item["positions"]), []
            yield item

    dataset = _DecodedVideos(rows, todo, clips_for, transform, backend, frame_template)
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    for owners, clips in _batches(readable(iter(loader)), batch_size):
        t, c, s, _ = clips[0].shape
        videos = torch.empty((len(clips), c, t, s, s), dtype=torch.float32)
        for clip, slot in zip(clips, videos):
            transform.normalize(clip, out=slot)  # (C, T, S, S)
        features = model.features(videos, pool).numpy()
        for i, feature in zip(owners, features):
            collected[i].append(feature)
            if len(collected[i]) == expected[i]:
                name = feature_file_name(i, rows[i].path, data_root)
                save_features(out / name, np.stack(collected.pop(i)))
                entries[i] = FeatureFile(i, rows[i].path, name, expected[i])
    write_index(rank_index(out, rank), [entries[i] for i in sorted(entries)])
    dist.barrier()
    if rank == 0:
        join_indices(out, world)
    reused = {i for part in dist.all_gather_objects([i for i, e in entries.items() if e.reused]) for i in part}
    # the gather waits for rank 0's join, so every rank reads the whole index
    joined = read_index(out / FEATURE_INDEX)
    for entry in joined:
        entry.reused = entry.index in reused
    return joined
