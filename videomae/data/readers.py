"""Decoding backends: decord, PyAV and frame folders, behind one small reader interface.

A reader is opened on one clip, knows how many frames it can deliver (``num_frames``) and returns the frames
asked for as one ``uint8`` array ``[T, H, W, C]`` (RGB). Readers are cheap to open and are only ever opened inside
``Dataset.__getitem__`` (in the worker process), never at import or dataset construction.

Frame counts: a container's header count is never used. decord's ``len()`` counts the packets it indexed on open;
PyAV counts the non-empty packets by demuxing without decoding. Both are upper bounds that hold for every file we
have seen except streams corrupted in the middle; reads therefore clamp to the frames that actually decoded
(see ``PyAVReader.read``) and :func:`videomae.data.decoding.probe_video` checks the tail by decoding it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

import numpy as np

from videomae.data.images import ImageDecodeError, decode_image_file

logger = logging.getLogger(__name__)

DEFAULT_FRAME_TEMPLATE = "img_{:05d}.jpg"
"""File names of a frame folder's images (1-based by default, like the original frame lists): the one default."""

# Below this many frames into the file, decode from the start instead of seeking (a seek costs a keyframe decode
# plus index bookkeeping, which only pays off when many frames are skipped).
SEQUENTIAL_LIMIT = 48
# PyAV keeps the packets of files with at most this many frames (compressed, so small), to decode them without a
# second demux.
KEEP_PACKETS = 2 * SEQUENTIAL_LIMIT


class ReaderError(RuntimeError):
    """A backend failed on a file (wrapped into ``DecodeError`` by ``videomae.data.decoding``)."""


class DecordReader:
    """decord ``VideoReader`` with one decoding thread (parallelism comes from DataLoader workers)."""

    name = "decord"

    def __init__(self, path: str):
        import decord  # imported here: decord starts threads and must not be touched before workers fork

        self.path = path
        try:
            self._vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
            self.num_frames = len(self._vr)
            self.fps = float(self._vr.get_avg_fps())
        except Exception as e:  # decord raises RuntimeError / DECORDError with C++ traces
            raise ReaderError(f"decord cannot open the file: {_short(e)}") from e

    def read(self, indices: Sequence[int]) -> np.ndarray:
        if self.num_frames == 0:
            raise ReaderError("decord found no frames")
        idx = [min(i, self.num_frames - 1) for i in indices]
        try:
            return self._vr.get_batch(idx).asnumpy()
        except Exception as e:
            raise ReaderError(f"decord failed reading frames: {_short(e)}") from e

    def close(self) -> None:
        self._vr = None


class PyAVReader:
    """PyAV reader that decodes only what a request needs, from one opened container.

    On open it demuxes the video stream without decoding (fast: no pixel work) to count the frames and learn
    their timestamps; short files (at most ``KEEP_PACKETS`` frames) also keep their packets, so a read decodes
    them without demuxing again. A read then either decodes from the start (requests that end within
    ``SEQUENTIAL_LIMIT`` frames) or seeks to the keyframe before the first wanted frame and decodes forward until
    the last wanted frame. Frame ``i`` is always the ``i``-th frame the decoder outputs: after a seek, the first
    output frame is placed by its timestamp and the following ones are counted (checked against a sequential
    decode on MPEG-4 B-frame AVIs, whose timestamps are in decode order). Only wanted frames are converted to RGB.
    The container stays open until :meth:`close`.
    """

    name = "pyav"

    def __init__(self, path: str, container=None):
        """Open ``path``; or use an already opened PyAV ``container`` of it (then owned by this reader)."""
        import av

        self.path = path
        self._av = av
        self._container = None
        try:
            self._container = container = av.open(path) if container is None else container
            if not container.streams.video:
                raise ReaderError("no video stream")
            self._stream = stream = container.streams.video[0]
            stream.thread_count = 1  # parallelism comes from DataLoader workers
            rate = stream.average_rate or stream.guessed_rate
            self.fps = float(rate) if rate else 0.0
            pts, packets = [], []
            for packet in container.demux(stream):
                if packet.size:
                    pts.append(packet.pts)
                    if len(packets) <= KEEP_PACKETS:
                        packets.append(packet)
        except Exception as e:
            self.close()
            if isinstance(e, ReaderError):
                raise
            raise ReaderError(f"PyAV cannot open the file: {_short(e)}") from e
        self.num_frames = len(pts)
        self._packets: list | None = packets if len(pts) <= KEEP_PACKETS else None
        # presentation order; None timestamps (some raw streams) disable seeking
        self._pts: list[int] | None = sorted(pts) if all(p is not None for p in pts) else None
        if self._pts is not None and len(set(self._pts)) != len(self._pts):
            self._pts = None
        self._index = {p: i for i, p in enumerate(self._pts or [])}

    def read(self, indices: Sequence[int]) -> np.ndarray:
        if self.num_frames == 0:
            raise ReaderError("PyAV found no frames")
        if self._container is None:
            raise ReaderError("PyAV reader is closed")
        try:
            return self._read(indices)
        except ReaderError:
            raise
        except Exception as e:  # FFmpeg errors on open/seek
            raise ReaderError(f"PyAV failed reading frames: {_short(e)}") from e

    def _read(self, indices: Sequence[int]) -> np.ndarray:
        want = sorted(set(min(i, self.num_frames - 1) for i in indices))
        frames: dict[int, np.ndarray] = {}
        last = -1
        if want[-1] >= SEQUENTIAL_LIMIT and self._pts is not None:
            frames, last = self._decode_seek(want)
            if any(i not in frames for i in want if i <= last):
                frames, last = {}, -1  # timestamps did not line up: fall back to decoding from the start
        if not frames:
            frames, last = self._decode_sequential(want)
        if last < 0:
            raise ReaderError("PyAV decoded no frames")
        if want[-1] > last:
            logger.debug("%s: frames %d.. not decodable, clamped to %d", self.path, last + 1, last)
        fallback = frames[max(frames)]
        return np.stack([frames.get(min(i, self.num_frames - 1), fallback) for i in indices])

    def _decode_sequential(self, want: list[int]) -> tuple[dict[int, np.ndarray], int]:
        wanted = set(want)
        frames: dict[int, np.ndarray] = {}
        last, frame = -1, None
        if self._packets is not None:
            self._stream.codec_context.flush_buffers()  # forget an earlier read (also leaves the draining state)
            # None drains the frames the decoder still holds (B-frame delay)
            decoded, container = self._frames(self._stream, [*self._packets, None]), None
        else:  # a fresh container: seeking to 0 is unreliable on streams without timestamps
            container = self._av.open(self.path)
            decoded = self._all_frames(container)
        try:
            for frame in decoded:
                last += 1
                if last in wanted:
                    frames[last] = self._to_rgb(frame)
                if last >= want[-1]:
                    break
        finally:
            if container is not None:
                container.close()
        if want[-1] > last and last >= 0 and last not in frames:
            frames[last] = self._to_rgb(frame)  # clamp target for indices past the real end
        return frames, last

    def _decode_seek(self, want: list[int]) -> tuple[dict[int, np.ndarray], int]:
        # Index frames by counting decoder output from the first frame after the seek, anchored by that frame's
        # timestamp: AVI stores decode-order timestamps, so with B-frames the output pts are not sorted and
        # mapping every frame by its own pts would return wrong frames.
        assert self._pts is not None
        wanted = set(want)
        frames: dict[int, np.ndarray] = {}
        last, last_frame = -1, None
        self._container.seek(self._pts[want[0]], stream=self._stream, backward=True, any_frame=False)
        for frame in self._frames(self._stream, self._container.demux(self._stream)):
            if last_frame is None:
                anchor = self._index.get(frame.pts)
                if anchor is None or anchor > want[0]:
                    return {}, -1
                last = anchor
            else:
                last += 1
            last_frame = frame
            if last in wanted:
                frames[last] = self._to_rgb(frame)
            if last >= want[-1]:
                break
        if last_frame is not None and want[-1] > last and last not in frames:
            frames[last] = self._to_rgb(last_frame)
        return frames, last

    @staticmethod
    def _to_rgb(frame) -> np.ndarray:
        return _rgb24(frame)

    def _all_frames(self, container):
        """Decoded frames of the first video stream of a freshly opened ``container``."""
        stream = container.streams.video[0]
        stream.thread_count = 1
        return self._frames(stream, container.demux(stream))

    def _frames(self, stream, packets):
        """Decoded frames of ``stream`` from ``packets`` (``None`` drains); packets the decoder rejects are skipped."""
        errors = 0
        for packet in packets:
            try:
                decoded = stream.decode(packet)
            except self._av.error.FFmpegError as e:
                errors += 1
                if errors > 50:
                    raise ReaderError(f"PyAV: too many undecodable packets: {_short(e)}") from e
                continue
            yield from decoded

    def count_decodable_tail(self) -> int:
        """Decode from the last keyframe to the end; returns the exact number of decodable frames.

        Assumes every packet before the last keyframe yields one frame (checked only by ``exact`` probing).
        """
        if self.num_frames == 0:
            return 0
        with self._av.open(self.path) as container:
            stream = container.streams.video[0]
            if self._pts is None:
                return sum(1 for _ in self._all_frames(container))
            container.seek(self._pts[-1], stream=stream, backward=True, any_frame=False)
            first, count = None, 0
            for frame in self._all_frames(container):
                i = self._index.get(frame.pts)
                if i is None:  # cannot place the frame: count everything
                    container.seek(0)
                    return sum(1 for _ in self._frames(stream, container.demux(stream)))
                first = i if first is None else min(first, i)
                count += 1
            return 0 if first is None else first + count

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


class FrameFolderReader:
    """A folder of image files named by a template (``img_{:05d}.jpg``) from a start index on.

    The count is the number of consecutive existing files from ``start``; each frame is decoded to RGB by
    :func:`videomae.data.images.decode_image_file` (torchvision, PIL where it cannot).
    """

    name = "frames"

    def __init__(self, path: str, template: str = DEFAULT_FRAME_TEMPLATE, start: int | None = None):
        self.path = path
        self.template = template
        self.fps = 0.0
        try:
            names = set(os.listdir(path))
        except OSError as e:
            raise ReaderError(f"cannot list the frame folder: {e}") from e
        try:
            template.format(0)
        except (IndexError, KeyError, ValueError) as e:
            raise ValueError(f"frame_template={template!r} is not a str.format template with one index") from e
        if start is None:  # 1-based extractions (ffmpeg's %05d) are the common case; 0-based also seen
            start = 1 if template.format(1) in names and template.format(0) not in names else 0
        self.start = start
        n = 0
        while template.format(start + n) in names:
            n += 1
        self.num_frames = n

    def read(self, indices: Sequence[int]) -> np.ndarray:
        if self.num_frames == 0:
            raise ReaderError(f"no frames named {self.template!r} from index {self.start}")
        out = []
        cache: dict[int, np.ndarray] = {}
        for i in indices:
            i = min(i, self.num_frames - 1)
            if i not in cache:
                cache[i] = _decode_frame(os.path.join(self.path, self.template.format(self.start + i)))
            out.append(cache[i])
        shapes = {f.shape for f in out}
        if len(shapes) > 1:
            raise ReaderError(f"frames differ in size: {sorted(shapes)}")
        return np.stack(out)  # (T, H, W, C)

    def close(self) -> None:
        pass


class ImageReader:
    """A still image as a clip of one frame (the file is decoded at each read, not on open).

    Every requested index gives that frame, so a clip of ``T`` indices repeats the image ``T`` times.
    """

    name = "image"
    num_frames = 1
    fps = 0.0

    def __init__(self, path: str):
        self.path = path

    def read(self, indices: Sequence[int]) -> np.ndarray:
        frame = _decode_frame(self.path)
        return np.stack([frame] * len(indices))  # (T, H, W, C)

    def close(self) -> None:
        pass


def _decode_frame(file: str) -> np.ndarray:
    try:
        return decode_image_file(file)
    except ImageDecodeError as e:
        raise ReaderError(f"cannot decode image {file}: {e}") from e


_reformatters = threading.local()


def _rgb24(frame) -> np.ndarray:
    """A decoded PyAV frame as ``uint8 [H, W, 3]`` RGB.

    ``frame.to_ndarray(format="rgb24")`` builds a new swscale context (with its own pool of slice threads) for
    every frame, which costs more than decoding a small frame; one reformatter per thread reuses its cached context
    while the frame size and format stay the same (same pixels either way). ``threads=1``: no slice-thread pool
    (parallelism comes from DataLoader workers), which also keeps ``fork`` safe: a pool owned by another thread's
    reformatter would be joined, and hang, when the forked child drops that thread's locals.
    """
    reformatter = getattr(_reformatters, "rgb", None)
    if reformatter is None:
        from av.video.reformatter import VideoReformatter

        reformatter = _reformatters.rgb = VideoReformatter()
    return reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()


def _short(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    msg = text[-1] if text else type(e).__name__
    return msg if len(msg) <= limit else msg[:limit] + "..."
