"""Videos shorter than a clip's span, under each source's ``short_video`` policy, and their record.

The frame indices of each policy are in :mod:`videomae.data.sampling`. Here: when a video needs the policy, what
``reject`` raises, which ``min_frames`` each policy implies, and :class:`ShortVideoLog`, which writes each manifest
row that needed ``shrink_stride``, ``loop`` or ``pad`` once to ``<run_dir>/short_videos.csv`` (the columns of
``bad_samples.csv``; the ``error`` column says what was done). A rejected video is a bad sample instead: it goes to
``bad_samples.csv`` and is replaced like an unreadable one.
"""

from __future__ import annotations

import logging
import os

from videomae.data.bad_samples import append_row_once, read_rows
from videomae.data.decoding import DecodeError
from videomae.data.manifest import ManifestRow
from videomae.data.sampling import SHORT_VIDEO_POLICIES, clip_span

__all__ = [
    "SHORT_VIDEOS_FILE",
    "ShortVideoLog",
    "check_policy",
    "default_min_frames",
    "read_short_videos",
    "short_video_clip",
]

SHORT_VIDEOS_FILE = "short_videos.csv"
logger = logging.getLogger(__name__)

_DONE = {
    "reject": "rejected as a bad sample",
    "shrink_stride": "stride shrunk",
    "loop": "clip looped from its first frame",
    "pad": "clip padded with its last frame",
}


def check_policy(policy: str, where: str) -> None:
    """Refuse an unknown policy, naming ``where`` it was set and the allowed values."""
    if policy not in SHORT_VIDEO_POLICIES:
        raise ValueError(f"{where}: short_video={policy!r}, allowed values: {', '.join(SHORT_VIDEO_POLICIES)}")


def default_min_frames(policy: str, num_frames: int) -> int:
    """Fewest decodable frames a video may have under ``policy`` unless a dataset sets ``min_frames``:
    ``num_frames`` for ``shrink_stride`` (shorter videos are bad), 1 for the others (``reject`` refuses every
    video shorter than the span anyway)."""
    return num_frames if policy == "shrink_stride" else 1


def short_video_clip(path: str, video_frames: int, num_frames: int, sampling_rate: int, policy: str) -> str | None:
    """What ``policy`` does with a video of ``video_frames`` frames: ``None`` when the clip fits, else the reason
    recorded for the row.

    Raises:
        DecodeError: the video is short and ``policy`` is ``reject``.
    """
    span = clip_span(num_frames, sampling_rate)
    if video_frames >= span:
        return None
    reason = (
        f"{video_frames} decodable frames, fewer than the clip's span {span} ({num_frames} frames at stride "
        f"{sampling_rate}): {_DONE[policy]} (short_video={policy})"
    )
    if policy == "reject":
        raise DecodeError(path, reason)
    return reason


class ShortVideoLog:
    """Writes each manifest row that needed a short-video policy once to ``short_videos.csv`` (per process: once
    logged; across processes: the file lock of :func:`~videomae.data.bad_samples.append_row_once`).

    Args:
        run_dir: folder of the run; ``None`` writes nothing (rows are still logged once per process).
    """

    def __init__(self, run_dir: str | os.PathLike | None = None) -> None:
        self.path = os.path.join(os.fspath(run_dir), SHORT_VIDEOS_FILE) if run_dir is not None else None
        self.count = 0
        self._seen: set[tuple[str, int, str]] = set()

    def record(self, row: ManifestRow, reason: str) -> None:
        """Count one clip of ``row`` that needed the policy; the first time, log it and append it to the file."""
        self.count += 1
        key = (row.manifest, row.line, row.path)
        if key in self._seen:
            return
        self._seen.add(key)
        if self.path is None or append_row_once(self.path, key, reason):
            logger.info("short video %s:%d (%s): %s", row.manifest, row.line, row.path, reason)


def read_short_videos(run_dir: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of ``<run_dir>/short_videos.csv`` (empty when no video needed a policy)."""
    return read_rows(os.path.join(os.fspath(run_dir), SHORT_VIDEOS_FILE))
