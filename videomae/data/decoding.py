"""Decode frames from video files and frame folders: backend choice, frame counts and timeouts.

* ``backend="auto"`` means PyAV (:func:`resolve_backend` is the one place for the rule). PyAV is a required
  dependency that bundles its FFmpeg, is frame-exact on every codec we test (tests/test_decoding_table.py: random
  access equals a sequential decode) and was faster in our reader on every file measured (bench/RESULTS.md).
  decord stays selectable (``"decord"``) but is never picked automatically: its random access returns wrong frames
  on MPEG-4 Part 2 with B-frames and on HEVC with open GOPs, and it has had no release since 2021. ``"decord"`` /
  ``"pyav"`` force one backend. A path that is a directory is always a frame folder.
* Frame counts never come from the container header (some files declare hundreds of frames more than they
  hold). :func:`probe_video` counts packets by demuxing without decoding, then decodes the last GOP to verify
  the tail (fast: one GOP of pixel work per file); ``exact=True`` decodes every frame without converting it.
* Timeouts: decord can hang forever on some files. With ``timeout`` set, the work runs in a helper thread of the
  calling process and the caller gives up after ``timeout`` seconds with :class:`DecodeError`. Both decord (ctypes)
  and PyAV release the GIL while in FFmpeg, so the caller really does regain control. Cost: one thread hand-off
  per clip (about 0.1 ms measured on a busy 2-core machine, against tens of ms of decoding). A hung thread cannot
  be killed; it is abandoned (a fresh daemon helper takes over, and a daemon never blocks process exit) and stays
  blocked until its I/O returns, so a process that abandons more than ``max_abandoned`` threads raises.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from videomae.data.images import is_image_path
from videomae.data.readers import (
    DEFAULT_FRAME_TEMPLATE,
    DecordReader,
    FrameFolderReader,
    ImageReader,
    PyAVReader,
    ReaderError,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_FRAME_TEMPLATE",
    "DecodeError",
    "DecodeTimeout",
    "VideoInfo",
    "decode_clips",
    "decord_available",
    "open_reader",
    "probe_video",
    "read_frames",
    "resolve_backend",
    "run_with_timeout",
]

if TYPE_CHECKING:
    from videomae.data.manifest_types import ManifestRow

BACKENDS = ("auto", "decord", "pyav")
T = TypeVar("T")


class DecodeError(RuntimeError):
    """A clip could not be decoded (missing, corrupt, empty, or timed out). ``path`` names the file."""

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DecodeTimeout(DecodeError):
    """A clip took longer than the timeout to decode (it may load next time, unlike a corrupt file)."""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` measured. ``num_frames`` is the decodable count; ``fps`` is 0 for frame folders."""

    num_frames: int
    fps: float
    width: int
    height: int

    @property
    def duration(self) -> float:
        """Seconds (0 when the frame rate is unknown)."""
        return self.num_frames / self.fps if self.fps > 0 else 0.0


@functools.cache
def decord_available() -> bool:
    """Whether decord can be imported (it has no wheels for some platforms)."""
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str) -> str:
    """The reader a ``backend`` setting selects for video files: ``"auto"`` is PyAV.

    Not decord, even where it is installed: PyAV is frame-exact on every codec of the correctness table
    (tests/test_decoding_table.py; decord is wrong on MPEG-4 Part 2 and open-GOP HEVC) and faster in our reader on
    every file measured. PyAV is a required dependency (``probe_video`` and ``manifest build`` need it too), so
    there is no installation where ``auto`` would have to fall back to decord.

    Raises:
        ValueError: an unknown backend name.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: expected one of {BACKENDS}")
    return "pyav" if backend == "auto" else backend


def open_reader(
    path: str | os.PathLike,
    backend: str = "auto",
    frame_template: str = DEFAULT_FRAME_TEMPLATE,
    start: int | None = None,
):
    """Open a reader on a video file or frame folder (call this inside ``__getitem__``, not before fork).

    Returns:
        An object with ``num_frames`` (frames it can deliver), ``fps``, ``read(indices) -> uint8 [T, H, W, C]``
        and ``close()``. For videos, ``start`` skips that many leading frames. An image file
        (:func:`~videomae.data.images.is_image_path`) is a clip of one frame (``backend`` and ``start`` ignored).

    Raises:
        DecodeError: missing path, unknown backend, or a file no backend can open.
    """
    path = os.fspath(path)
    backend = resolve_backend(backend)
    if os.path.isdir(path):
        try:
            return FrameFolderReader(path, frame_template, start)
        except ReaderError as e:
            raise DecodeError(path, str(e)) from e
    if not os.path.exists(path):
        raise DecodeError(path, "file not found")
    if is_image_path(path):
        return ImageReader(path)
    try:
        reader = PyAVReader(path) if backend == "pyav" else DecordReader(path)
    except ReaderError as e:
        raise DecodeError(path, str(e)) from e
    return _Offset(reader, start) if start else reader


class _Offset:
    """A video reader whose frame 0 is frame ``start`` of the file."""

    def __init__(self, reader, start: int):
        self._reader = reader
        self._start = start
        self.fps = reader.fps
        self.num_frames = max(reader.num_frames - start, 0)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        return self._reader.read([i + self._start for i in indices])

    def close(self) -> None:
        self._reader.close()


def read_frames(
    path: str | os.PathLike,
    indices: Sequence[int],
    backend: str = "auto",
    frame_template: str = DEFAULT_FRAME_TEMPLATE,
    start: int | None = None,
    timeout: float | None = None,
) -> torch.Tensor:
    """Decode the frames at ``indices`` (any order, repeats allowed).

    Indices at or past the decodable end are clamped to the last decodable frame (the container's declared count
    is not trusted, so a request computed from it still returns frames).

    Args:
        path: video file or frame folder.
        indices: 0-based frame indices (relative to ``start``).
        backend: ``"auto"`` (PyAV, see :func:`resolve_backend`), ``"decord"`` or ``"pyav"`` (frame folders ignore
            it).
        frame_template: file names inside a frame folder.
        start: first frame (frame folders: index in the file names, default 1 if ``template.format(1)``
            exists and ``template.format(0)`` does not, else 0; videos: frames to skip, default 0).
        timeout: seconds before giving up with ``DecodeError`` (``None``: wait forever).

    Returns:
        uint8 tensor ``[T, H, W, C]``, RGB, ``T = len(indices)``.

    Raises:
        ValueError: empty or negative indices.
        DecodeError: missing, corrupt or empty clip, or the timeout passed.
    """
    indices = [int(i) for i in indices]
    if not indices or min(indices) < 0:
        raise ValueError(f"indices must be a non-empty list of non-negative ints, got {indices[:8]}")

    def work() -> np.ndarray:
        reader = open_reader(path, backend, frame_template, start)
        try:
            return reader.read(indices)
        except ReaderError as e:
            raise DecodeError(os.fspath(path), str(e)) from e
        finally:
            reader.close()

    return torch.from_numpy(np.ascontiguousarray(run_with_timeout(work, timeout, os.fspath(path))))


def probe_video(
    path: str | os.PathLike,
    frame_template: str = DEFAULT_FRAME_TEMPLATE,
    start: int | None = None,
    *,
    exact: bool = False,
    timeout: float | None = None,
) -> VideoInfo:
    """Measure a clip: decodable frame count, fps and frame size, never from the container header.

    Videos: PyAV demuxes every packet without decoding (counting non-empty packets), then decodes from the last
    keyframe to the end to check how many of the final frames really decode (truncated files lose their tail).
    The first frame is decoded for the size. ``exact=True`` instead decodes every frame (without RGB conversion),
    which also catches corruption in the middle, at the cost of a full decode. Frame folders: consecutive files
    from ``start``; the size comes from the first image. An image file is decoded whole: one frame.

    Raises:
        DecodeError: missing, unreadable or empty clip, or the timeout passed.
    """
    path = os.fspath(path)

    def work() -> VideoInfo:
        if os.path.isdir(path):
            reader = open_reader(path, "auto", frame_template, start)
            first = _read_or_raise(reader, path)
            return VideoInfo(reader.num_frames, 0.0, first.shape[1], first.shape[0])
        if not os.path.exists(path):
            raise DecodeError(path, "file not found")
        if is_image_path(path):
            first = _read_or_raise(ImageReader(path), path)
            return VideoInfo(1, 0.0, first.shape[1], first.shape[0])
        try:
            reader = PyAVReader(path)
            first = reader.read([0])[0]
            if exact:
                import av

                with av.open(path) as container:
                    n = sum(1 for _ in reader._all_frames(container))
            else:
                n = reader.count_decodable_tail()
            reader.close()
        except ReaderError as e:
            raise DecodeError(path, str(e)) from e
        except Exception as e:  # av errors during seek/decode
            raise DecodeError(path, f"{type(e).__name__}: {e}") from e
        n = max(n - (start or 0), 0)
        if n == 0:
            raise DecodeError(path, "no decodable frames")
        return VideoInfo(n, reader.fps, first.shape[1], first.shape[0])

    return run_with_timeout(work, timeout, path)


def _read_or_raise(reader, path: str) -> np.ndarray:
    try:
        return reader.read([0])[0]
    except ReaderError as e:
        raise DecodeError(path, str(e)) from e


def decode_clips(
    row: ManifestRow,
    clips_for: Callable[[int], list[list[int]]],
    *,
    backend: str = "auto",
    frame_template: str = DEFAULT_FRAME_TEMPLATE,
    min_frames: int = 1,
    timeout: float | None = None,
) -> tuple[torch.Tensor, list[list[int]]]:
    """Decode, in one read, every frame that the clips of ``row`` need.

    Args:
        row: the clip's manifest row (``path``, ``start``, ``num_frames``).
        clips_for: ``decodable frames -> frame indices of each clip`` (e.g. a ``sample_test_indices`` call).
        backend: ``"auto"``, ``"decord"`` or ``"pyav"``.
        frame_template: file names in a frame folder.
        min_frames: fewer decodable frames make the clip bad (at least 1).
        timeout: seconds before the read is abandoned (``None``: no limit).

    Returns:
        ``(frames, positions)``: the distinct frames ``uint8 [F, H, W, C]`` in ascending frame order, and for each
        clip the positions of its frames in ``frames`` (overlapping clips share frames; nothing is decoded twice).

    Raises:
        DecodeError: missing, corrupt, too short or timed-out clip.
    """
    min_frames = max(min_frames, 1)

    def work() -> tuple[np.ndarray, list[list[int]]]:
        reader = open_reader(row.path, backend, frame_template, row.start)
        try:
            n = reader.num_frames if row.num_frames is None else min(reader.num_frames, row.num_frames)
            if n < min_frames:
                raise DecodeError(row.path, f"{n} decodable frames, fewer than min_frames={min_frames}")
            clips = clips_for(n)
            wanted = sorted({j for clip in clips for j in clip})
            where = {j: k for k, j in enumerate(wanted)}
            return reader.read(wanted), [[where[j] for j in clip] for clip in clips]
        except ReaderError as e:
            raise DecodeError(row.path, str(e)) from e
        finally:
            reader.close()

    frames, positions = run_with_timeout(work, timeout, row.path)
    return torch.from_numpy(np.ascontiguousarray(frames)), positions


# --------------------------------------------------------------------------------------------------------------
# timeouts


class _HelperThread:
    """One daemon thread running submitted calls in order. Daemon, so a thread stuck forever in C code never
    blocks interpreter or worker exit (``ThreadPoolExecutor`` threads are joined at exit and would)."""

    def __init__(self):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, name="videomae-decode", daemon=True).start()

    def _run(self) -> None:
        while True:
            fn, result, done = self._queue.get()
            try:
                result.append((True, fn()))
            except BaseException as e:  # handed to the caller
                result.append((False, e))
            done.set()

    def call(self, fn: Callable[[], T], timeout: float) -> tuple[bool, list]:
        result: list = []
        done = threading.Event()
        self._queue.put((fn, result, done))
        return done.wait(timeout), result


_helpers: dict[int, _HelperThread] = {}  # pid -> helper; threads do not survive fork
_abandoned: dict[int, int] = {}
_lock = threading.Lock()
max_abandoned = 16


def run_with_timeout(fn: Callable[[], T], timeout: float | None, path: str = "") -> T:
    """Run ``fn()`` in this process's decode helper thread; raise ``DecodeError`` after ``timeout`` seconds.

    ``timeout=None`` (or <= 0) calls ``fn`` directly. Exceptions from ``fn`` propagate unchanged.
    """
    if not timeout or timeout <= 0:
        return fn()
    pid = os.getpid()
    with _lock:
        helper = _helpers.get(pid)
        if helper is None:
            helper = _helpers[pid] = _HelperThread()
    finished, result = helper.call(fn, timeout)
    if finished:
        ok, value = result[0]
        if ok:
            return value
        raise value
    with _lock:
        if _helpers.get(pid) is helper:  # stuck in C code: abandon it, the next call starts a new helper
            del _helpers[pid]
            _abandoned[pid] = _abandoned.get(pid, 0) + 1
        stuck = _abandoned.get(pid, 0)
    if stuck > max_abandoned:
        raise RuntimeError(
            f"{stuck} decode threads are stuck in this process (last on {path}); the storage or the decoder "
            "is hanging, stopping instead of leaking more threads"
        )
    raise DecodeTimeout(path, f"decoding timed out after {timeout:g} s")
