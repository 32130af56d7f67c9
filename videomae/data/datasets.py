"""Clip datasets over one or several manifests (batches are made by :func:`videomae.data.collate.collate_clips`).

A sample is ``{"video": float [C, T, H, W], "label": int, "index": int, "text": str}``; with ``num_sample = S > 1``
(training) or several test views (``test_num_segment * test_num_crop > 1``) the video is ``[S, C, T, H, W]`` and
:func:`collate_clips` flattens the views into the batch. ``label`` is -1 for unlabelled clips; ``index`` is the
dataset index of the clip actually returned (a bad clip's replacement has its own index); ``text`` is the row's
caption (``""`` without one; ``return_text=False`` leaves it out). Test-mode samples also carry ``"valid": bool``;
a training sample that replaces bad clips carries their indices as ``"bad_rows"`` (batched by
:func:`collate_clips`).

A row whose path is an image file (:func:`~videomae.data.images.is_image_path`) is a clip of one frame repeated
``num_frames`` times (every test segment alike); images take no short-video policy. Image configs set
``num_frames: 1``; a larger count lets still images join video sets as static clips (as OmniMAE feeds images to a
video model), at the cost of ``num_frames`` copies of each image.

Construction reads and validates the manifests only; no file is opened or probed, and decoders are created inside
``__getitem__`` (in the DataLoader worker). A clip that cannot be loaded (missing, corrupt, fewer than
``min_frames`` decodable frames, rejected by its source's ``short_video`` policy, or slower than ``decode_timeout``)
is recorded by :class:`~videomae.data.bad_samples.BadSampleLog`. In training it is replaced by a clip from the same
source, a pure function of ``(seed, epoch, index, attempt)`` and of which rows load (:mod:`.replacement`). A clip
that needed another short-video policy carries ``"short_rows"`` (:mod:`.short_video`). In testing a bad clip is
never replaced (another video's scores would land under this index): the sample comes back with ``"valid": False``,
its own index and label, and a zero video of the usual shape, so evaluation can skip it and count the unreadable
videos.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import Dataset

from videomae.data.bad_samples import BadSampleLog
from videomae.data.collate import collate_clips
from videomae.data.decoding import DEFAULT_FRAME_TEMPLATE, DecodeError, decode_clips
from videomae.data.images import is_image_path
from videomae.data.labels import merge_label_spaces
from videomae.data.manifest import Manifest, ManifestRow, read_manifest_table
from videomae.data.manifest_table import ManifestTable, RowsView
from videomae.data.replacement import Attempts, KnownBad, replacement_row
from videomae.data.sampling import sample_test_indices, sample_train_indices
from videomae.data.short_video import ShortVideoLog, check_policy, default_min_frames, short_video_clip
from videomae.data.transforms import EvalTransform, TrainTransform

__all__ = ["HybridVideoDataset", "SourceSpec", "VideoClipDataset", "collate_clips", "decode_clips"]


@dataclass
class SourceSpec:
    """One manifest of a hybrid dataset, with its own settings (all declared; nothing is guessed from paths).

    Attributes:
        manifest: manifest file (or an already read :class:`Manifest`).
        data_root: prefix joined to the manifest's relative paths.
        weight: how often each row of this source is drawn relative to rows of the other weighted sources (their
            draws per epoch total their summed size, split in proportion to ``weight x size``; equal weights give
            a plain concatenation). For a source share ``p`` of an epoch, use ``weight ∝ p / size``.
        repeat: instead of a weight, draw this many times the source's size per epoch (fractions allowed).
        num_frames: frames per clip for this source (default: the dataset's).
        sampling_rate: stride between clip frames for this source (default: the dataset's).
        frame_template: file names in this source's frame folders (default: the dataset's).
        format: manifest format, ``"auto"``, ``"csv"`` or a list format (see ``videomae.data.manifest``).
        label_map: class names of this manifest (file with one per line, or a list): gives integer labels names,
            so they merge by name with other sources (e.g. Kinetics-400 lists with their label map).
        name: name in logs (default: the manifest file name).
        short_video: policy for videos shorter than the clip (see ``videomae.data.sampling``).
    """

    manifest: str | os.PathLike | Manifest
    data_root: str | os.PathLike | None = None
    weight: float = 1.0
    repeat: float | None = None
    num_frames: int | None = None
    sampling_rate: int | None = None
    frame_template: str | None = None
    format: str = "auto"
    label_map: str | os.PathLike | Sequence[str] | None = None
    name: str | None = None
    short_video: str = "shrink_stride"

    def __post_init__(self):
        check_policy(self.short_video, f"SourceSpec({self.manifest})")
        if not self.weight > 0:
            raise ValueError(f"SourceSpec({self.manifest}): weight={self.weight} must be > 0")
        if self.repeat is not None and not self.repeat > 0:
            raise ValueError(f"SourceSpec({self.manifest}): repeat={self.repeat} must be > 0 (or None to use weight)")
        for key in ("num_frames", "sampling_rate"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"SourceSpec({self.manifest}): {key}={value} must be >= 1")


class HybridVideoDataset(Dataset):
    """Clips from several manifests, each with its own root, weight / repeat, clip length, stride and template.

    Rows are held as columns (:class:`~videomae.data.manifest_table.ManifestTable`, one per source): nothing per row
    that DataLoader workers would copy by reading it; :meth:`row` gives one row's metadata.

    Attributes:
        labels: ``int64 [len]``: each row's class id in the dataset's label space (-1: unlabelled).
        label_names: the class names (``None`` when labels are integer ids without names).

    Args:
        sources: the manifests (see :class:`SourceSpec`).
        num_frames: frames per clip (sources may override).
        sampling_rate: stride between clip frames (sources may override).
        input_size: output height and width.
        num_sample: training only: independently augmented clips per decoded video (repeated sampling).
        views_from: with ``num_sample > 1``: ``same_window`` = every clip augments the one decoded time window
            (VideoMAE's repeated sampling); ``separate_windows`` = each clip has its own randomly placed window
            (MoCo v3-style views of a video at different times), drawn from the same random source.
        train: random clip + multi-scale crop / flip; otherwise multi-view testing.
        scales, hflip_prob, rand_augment, reprob: training augmentation (see :class:`TrainTransform`): crop scales,
            flip probability, timm RandAugment string (same ops on every frame; ``None``: off) and random erasing
            probability (one box through the clip).
        crop, crop_scale, crop_ratio: the training crop, ``multiscale`` (``scales``) or ``random_resized`` (area
            share and aspect-ratio ranges; see :class:`TrainTransform`).
        interpolation: ``bilinear`` or ``bicubic`` resizing, in training and testing.
        test_num_segment, test_num_crop, short_side_size: testing views (see ``sample_test_indices`` and
            :class:`EvalTransform`); views are ordered segment-major.
        frame_template: default file-name template of frame folders.
        backend: ``"auto"``, ``"decord"`` or ``"pyav"``.
        decode_timeout: seconds before a clip load is abandoned as bad (``None``: no limit; costs a thread hand-off).
        min_frames: clips with fewer decodable frames are bad (default: ``short_video.default_min_frames``).
        run_dir: run folder for ``bad_samples.csv`` and ``short_videos.csv``.
        max_consecutive_failures: loads failing in a row (per worker) before the run is stopped.
        label_names: fixed class list; default: merged by class name over the sources (sorted), or integer labels
            used as they are when no source names its classes.
        return_text: add the manifest's ``text`` (caption, ``""`` when absent) to each sample.
        seed: seeds the choice of replacement clips (with the epoch, see :meth:`set_epoch`).
    """

    def __init__(
        self,
        sources: Sequence[SourceSpec],
        *,
        num_frames: int,
        sampling_rate: int,
        input_size: int = 224,
        num_sample: int = 1,
        views_from: str = "same_window",
        train: bool = True,
        scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66),
        hflip_prob: float = 0.5,
        rand_augment: str | None = None,
        reprob: float = 0.0,
        crop: str = "multiscale",
        crop_scale: Sequence[float] = (0.2, 1.0),
        crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
        interpolation: str = "bilinear",
        test_num_segment: int = 1,
        test_num_crop: int = 1,
        short_side_size: int | None = None,
        frame_template: str = DEFAULT_FRAME_TEMPLATE,
        backend: str = "auto",
        decode_timeout: float | None = 60.0,
        min_frames: int | None = None,
        run_dir: str | os.PathLike | None = None,
        max_consecutive_failures: int = 20,
        label_names: Sequence[str] | None = None,
        return_text: bool = True,
        seed: int = 0,
    ):
        if not sources:
            raise ValueError("HybridVideoDataset needs at least one SourceSpec")
        for key, value in (
            ("num_frames", num_frames),
            ("sampling_rate", sampling_rate),
            ("input_size", input_size),
            ("num_sample", num_sample),
        ):
            if value < 1:
                raise ValueError(f"{key}={value} must be >= 1")
        self.sources = list(sources)
        self.num_frames, self.sampling_rate = num_frames, sampling_rate
        if views_from not in ("same_window", "separate_windows"):
            raise ValueError(f"views_from={views_from!r} must be 'same_window' or 'separate_windows'")
        self.num_sample = num_sample if train else 1
        self.views_from = views_from
        self.train = train
        self.test_num_segment, self.test_num_crop = test_num_segment, test_num_crop
        self.frame_template, self.backend = frame_template, backend
        self.decode_timeout, self.min_frames = decode_timeout, min_frames
        self.return_text, self.seed = return_text, seed
        self.train_transform = TrainTransform(
            input_size, scales, hflip_prob, rand_augment=rand_augment, reprob=reprob, crop=crop, crop_scale=crop_scale,
            crop_ratio=crop_ratio, interpolation=interpolation,
        )  # fmt: skip
        self.eval_transform = EvalTransform(input_size, short_side_size, test_num_crop, interpolation=interpolation)
        self.bad = BadSampleLog(run_dir, max_consecutive_failures)

        # Rows live in columns (one ManifestTable per source): nothing per row that reading in a worker would copy.
        self._tables = [
            ManifestTable.from_manifest(s.manifest)
            if isinstance(s.manifest, Manifest)
            else read_manifest_table(s.manifest, s.data_root, format=s.format, label_map=s.label_map)
            for s in self.sources
        ]
        # a Manifest given in code is kept as its table only, so its row objects can be freed
        self.sources = [
            replace(s, manifest=t.path) if isinstance(s.manifest, Manifest) else s
            for s, t in zip(self.sources, self._tables)
        ]
        self.label_names, self.labels = merge_label_spaces(self._tables, label_names)
        self.source_sizes = [len(t) for t in self._tables]
        self.source_offsets = np.cumsum([0] + self.source_sizes[:-1]).tolist()
        self._row_source = np.repeat(np.arange(len(self._tables), dtype=np.int32), self.source_sizes)
        self.source_weights = [s.weight for s in self.sources]
        self.source_repeats = [s.repeat for s in self.sources]
        self.short = ShortVideoLog(run_dir)
        self.epoch = 0
        self._known_bad = KnownBad(len(self))

    def __len__(self) -> int:
        return len(self.labels)

    def row(self, i: int) -> ManifestRow:
        """Row ``i``'s metadata, without opening its file: a fresh :class:`ManifestRow` with the path joined to its
        source's data root, the manifest file and line, and ``label`` in the dataset's label space (as
        ``labels[i]``; ``None`` when unlabelled)."""
        if not 0 <= i < len(self.labels):
            raise IndexError(f"row {i} out of range ({len(self.labels)} rows)")
        k = self._row_source[i]
        row = self._tables[k].row(i - self.source_offsets[k])
        row.label = int(self.labels[i]) if self.labels[i] >= 0 else None
        return row

    @property
    def rows(self) -> RowsView:
        """All rows as a sequence of :meth:`row` (made on access; nothing is stored per row)."""
        return RowsView(self.row, len(self))

    @property
    def num_classes(self) -> int:
        """Classes in the label space (0 when nothing is labelled)."""
        if self.label_names is not None:
            return len(self.label_names)
        return int(self.labels.max(initial=-1)) + 1

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next samples belong to: bad clips' replacements are drawn from it (with the seed)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict:
        i, attempts = index, Attempts(self._known_bad)
        while True:
            row = self.rows[i]
            try:
                frames, short = attempts.load(i, row.path, self._load)
            except DecodeError as e:
                attempts.fail(i, e)
                # record() raises TooManyBadSamples after too many failures in a row
                if not self.train:
                    self.bad.record(row, e, outcome="returned as an invalid sample (evaluation never substitutes)")
                    return self._sample(i, row, self._invalid_video(i), valid=False)
                self.bad.record(row, e)
                i = self._replacement(index, len(attempts.failed))
                continue
            self.bad.success()
            sample = self._sample(i, row, self._transform(frames), valid=True)
            if attempts.failed:  # the rows that failed before this one loaded: the training loop counts them
                sample["bad_rows"] = attempts.failed
            if short is not None:  # this clip needed its source's short-video policy
                self.short.record(self.rows[i], short)
                sample["short_rows"] = [i]
            return sample

    def load_clip(self, index: int) -> torch.Tensor:
        """Row ``index``'s video exactly as ``__getitem__`` makes it, but a bad clip raises instead of being
        replaced or recorded (for checks that must see every failure, e.g. ``videomae doctor``).

        Raises:
            DecodeError: the row's file is missing, corrupt, too short or too slow to decode.
        """
        return self._transform(self._load(index)[0])

    def _sample(self, i: int, row: ManifestRow, video: torch.Tensor, valid: bool) -> dict:
        sample = {"video": video, "label": int(self.labels[i]), "index": i}
        if not self.train:
            sample["valid"] = valid
        if self.return_text:
            sample["text"] = row.text or ""
        return sample

    def _invalid_video(self, i: int) -> torch.Tensor:
        """Zeros in the shape a readable test video ``i`` would have: ``[V, C, T, S, S]`` (``[C, T, S, S]`` for V=1)."""
        num_frames = self._clip_settings(i)[0]
        size = self.eval_transform.input_size
        views = self.test_num_segment * self.test_num_crop
        video = torch.zeros((views, 3, num_frames, size, size), dtype=torch.float32)
        return video[0] if views == 1 else video

    def _clip_settings(self, i: int) -> tuple[int, int, str, str]:
        spec = self.sources[self._row_source[i]]
        return (
            spec.num_frames or self.num_frames,
            spec.sampling_rate or self.sampling_rate,
            spec.frame_template or self.frame_template,
            spec.short_video,
        )

    def _load(self, i: int) -> tuple[list[torch.Tensor], str | None]:
        """Decode the frames of every view of clip ``i``: a list of ``uint8 [T, H, W, C]`` (one per segment), and
        what the short-video policy did (``None``: the clip fit the video)."""
        num_frames, rate, template, policy = self._clip_settings(i)
        row, short = self.rows[i], None
        if is_image_path(row.path):  # one frame, repeated over the clip (every view alike): no short-video policy
            views = self._train_windows() if self.train else self.test_num_segment
            frames, _ = decode_clips(row, lambda n: [[0]], backend=self.backend, timeout=self.decode_timeout)
            return [frames.expand(num_frames, *frames.shape[1:])] * views, None

        def views_for(n: int) -> list[list[int]]:
            nonlocal short
            short = short_video_clip(row.path, n, num_frames, rate, policy)  # raises under "reject"
            if self.train:
                return [
                    sample_train_indices(n, num_frames, rate, short_video=policy) for _ in range(self._train_windows())
                ]
            return sample_test_indices(n, num_frames, rate, self.test_num_segment, short_video=policy)

        min_frames = self.min_frames if self.min_frames is not None else default_min_frames(policy, num_frames)
        frames, positions = decode_clips(
            row, views_for, backend=self.backend, frame_template=template, min_frames=min_frames,
            timeout=self.decode_timeout,
        )  # fmt: skip
        if len(positions) == 1 and positions[0] == list(range(len(frames))):  # the usual training clip: no copy
            return [frames], short
        return [frames[p] for p in positions], short

    def _transform(self, views: list[torch.Tensor]) -> torch.Tensor:
        if self.train:
            if self.num_sample == 1:
                return self.train_transform(views[0])  # (C, T, H, W)
            t, _, _, c = views[0].shape
            size = self.train_transform.input_size
            out = torch.empty((self.num_sample, c, t, size, size), dtype=torch.float32)
            for k, clip in enumerate(out):  # each repeated sample written in place: no stacking copy
                self.train_transform(views[k % len(views)], out=clip)
            return out  # (S, C, T, H, W)
        out = torch.cat([self.eval_transform(v) for v in views])  # (segments * crops, C, T, H, W)
        return out[0] if out.shape[0] == 1 else out

    def _train_windows(self) -> int:
        """Time windows decoded per training video: one per clip under ``separate_windows``, else one."""
        return self.num_sample if self.views_from == "separate_windows" else 1

    def _replacement(self, index: int, attempt: int) -> int:
        """Attempt ``attempt``'s stand-in for bad row ``index``: another row of its source, drawn from ``(seed,
        epoch, index, attempt)`` alone (a known-bad stand-in is skipped by the caller, never redrawn)."""
        k = self._row_source[index]
        return replacement_row(self.seed, self.epoch, index, attempt, self.source_offsets[k], self.source_sizes[k])


class VideoClipDataset(HybridVideoDataset):
    """Clips from one manifest (a :class:`HybridVideoDataset` with a single source).

    Args:
        manifest: manifest file or :class:`Manifest`.
        data_root: prefix joined to relative paths.
        format: manifest format (``"auto"``, ``"csv"`` or a list format).
        **kwargs: as :class:`HybridVideoDataset` (``num_frames`` and ``sampling_rate`` required).
    """

    def __init__(
        self,
        manifest: str | os.PathLike | Manifest,
        *,
        data_root: str | os.PathLike | None = None,
        format: str = "auto",
        **kwargs,
    ):
        super().__init__([SourceSpec(manifest, data_root=data_root, format=format)], **kwargs)
