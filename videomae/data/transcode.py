"""Re-encode a manifest's videos for fast training reads: smaller frames, short GOPs, one codec.

Pretraining reads 16 frames at stride 4 from anywhere in a video; the decoder pays for every frame from the keyframe
before the first one wanted and for every pixel of each. Re-encoding to a short side near the crop size (256 for
224 crops) with a keyframe every 16 frames cuts both: ``videomae manifest transcode`` does it for a whole manifest.

* Frames are kept one for one (frame ``i`` of the output is frame ``i`` of the input, so ``start`` columns and clip
  indices keep their meaning) unless ``fps`` asks for another frame rate: frames are then dropped or repeated by
  timestamp, and manifests with rows that start mid-video are refused (their ``start`` would move). Frame folders
  become videos (``start`` is then dropped). Audio is dropped.
* Keyframes are placed every ``gop`` frames exactly (no scene-cut keyframes, closed GOPs), so a seek decodes at
  most ``gop - 1`` frames before the one wanted.
* Each output is written to a temporary name and renamed once complete and probed, so an interrupted run never
  leaves a half file under a final name.

This module encodes one file; :mod:`videomae.data.transcode_manifest` runs a whole manifest.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from videomae.data.decoding import DEFAULT_FRAME_TEMPLATE, DecodeError, probe_video

__all__ = ["CODECS", "TranscodeError", "TranscodeOptions", "output_size", "transcode_video"]

# codec -> (encoder, file extension, container format)
CODECS = {
    "h264": ("libx264", ".mp4", "mp4"),
    "hevc": ("libx265", ".mp4", "mp4"),
    "vp9": ("libvpx-vp9", ".webm", "webm"),
}
# libx265 as bundled with PyAV corrupts the heap on frames smaller than its 64-pixel coding tree unit (measured:
# 48x32 aborts within 40 files, 64x64 never), so smaller HEVC outputs are refused.
HEVC_MIN_SIDE = 64
FRAME_FOLDER_FPS = 30.0  # frame folders carry no rate: the manifest's fps column, else --fps, else this


class TranscodeError(ValueError):
    """Options or an output folder that cannot be used."""


@dataclass(frozen=True)
class TranscodeOptions:
    """How to re-encode.

    Attributes:
        short_side: the shorter frame side after scaling (aspect kept, both sides even); ``None`` keeps the size.
            Frames are never upscaled.
        gop: frames from one keyframe to the next.
        fps: output frame rate (``None``: the input's).
        codec: a key of :data:`CODECS`.
        crf: constant-quality factor of the encoder (lower = better and larger; 23 is x264's default).
        preset: x264 / x265 speed preset (VP9 uses ``cpu-used 4``).
        fast_decode: x264 / x265 only: encode for decoding speed (``tune=fastdecode``: no CABAC, no deblocking
            filter; and no B-frames). On vtest.avi at short side 256 this reads training clips 2.6x faster for 3%
            larger files.
    """

    short_side: int | None = 256
    gop: int = 16
    fps: float | None = None
    codec: str = "h264"
    crf: int = 23
    preset: str = "fast"
    fast_decode: bool = True

    def __post_init__(self):
        if self.codec not in CODECS:
            raise TranscodeError(f"codec={self.codec!r}: expected one of {sorted(CODECS)}")
        if self.short_side is not None and self.short_side < 16:
            raise TranscodeError(f"short_side={self.short_side} must be >= 16")
        if self.codec == "hevc" and self.short_side is not None and self.short_side < HEVC_MIN_SIDE:
            raise TranscodeError(f"codec=hevc needs short_side >= {HEVC_MIN_SIDE} (got {self.short_side})")
        if self.gop < 1:
            raise TranscodeError(f"gop={self.gop} must be >= 1")
        if self.fps is not None and not self.fps > 0:
            raise TranscodeError(f"fps={self.fps} must be > 0")
        if not 0 <= self.crf <= 63:
            raise TranscodeError(f"crf={self.crf} must be in [0, 63]")

    def encoder_options(self) -> dict[str, str]:
        """FFmpeg encoder options: fixed keyframe interval, no scene-cut keyframes, closed GOPs, constant quality."""
        g = str(self.gop)
        if self.codec == "vp9":
            return {"g": g, "keyint_min": g, "crf": str(self.crf), "b": "0", "deadline": "good", "cpu-used": "4"}
        params = f"keyint={g}:min-keyint={g}:scenecut=0" + (":bframes=0" if self.fast_decode else "")
        options = {"crf": str(self.crf), "preset": self.preset, "x264-params": params}
        if self.codec == "hevc":  # x265 defaults to open GOPs, which decord (and some seeks) get wrong
            options = {
                "crf": str(self.crf),
                "preset": self.preset,
                "x265-params": params + ":open-gop=0:log-level=error",
            }
        return options | ({"tune": "fastdecode"} if self.fast_decode else {})


def output_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """``(width, height)`` scaled so the shorter side is ``short_side`` (never up), both rounded to even numbers."""
    scale = 1.0 if short_side is None or min(width, height) <= short_side else short_side / min(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _source_frames(path: str, frame_template: str, start: int | None) -> tuple[Fraction | None, Iterator]:
    """The input's frame rate (``None`` for frame folders) and its decoded frames (PyAV frames or RGB arrays)."""
    if os.path.isdir(path):
        from videomae.data.readers import FrameFolderReader

        reader = FrameFolderReader(path, frame_template, start)

        def images() -> Iterator[np.ndarray]:
            for first in range(0, reader.num_frames, 32):
                yield from reader.read(range(first, min(first + 32, reader.num_frames)))

        if reader.num_frames == 0:
            raise DecodeError(path, f"no frames named {frame_template!r}")
        return None, images()
    import av

    container = av.open(path)
    if not container.streams.video:
        container.close()
        raise DecodeError(path, "no video stream")
    stream = container.streams.video[0]
    stream.thread_count = 1  # parallelism comes from the process pool
    rate = stream.average_rate or stream.guessed_rate

    def frames() -> Iterator:
        with container:
            for packet in container.demux(stream):
                try:
                    yield from packet.decode()
                except av.error.FFmpegError:  # a damaged packet: skip it, as the training reader does
                    continue

    return (Fraction(rate) if rate else None), frames()


def transcode_video(
    src: str,
    dst: str,
    options: TranscodeOptions,
    *,
    frame_template: str = DEFAULT_FRAME_TEMPLATE,
    start: int | None = None,
    fps: float | None = None,
) -> tuple[int, float, int, int]:
    """Re-encode one video file or frame folder into ``dst`` (written as ``dst.tmp``, renamed when complete).

    Args:
        src: video file or frame folder.
        dst: output file; its container follows ``options.codec``.
        options: how to encode.
        frame_template, start: frame folders only: file names and first index.
        fps: frame folders only: their frame rate (default ``options.fps``, else 30).

    Returns:
        ``(num_frames, fps, width, height)`` of the written file, as :func:`probe_video` measures it.

    Raises:
        DecodeError: the input cannot be read, or the output does not probe to the frames written.
    """
    import av
    from av.video.frame import PictureType
    from av.video.reformatter import Interpolation, VideoReformatter

    in_rate, frames = _source_frames(src, frame_template, start)
    if options.fps is not None:
        out_rate = Fraction(options.fps).limit_denominator(1001)
    elif in_rate is not None:
        out_rate = in_rate
    else:
        out_rate = Fraction(fps or FRAME_FOLDER_FPS).limit_denominator(1001)
    step = in_rate / out_rate if in_rate is not None else Fraction(1)  # input frames per output frame
    encoder, _, container_format = CODECS[options.codec]
    tmp = dst + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    reformatter = VideoReformatter()
    written = 0
    try:
        with av.open(tmp, "w", format=container_format) as out:
            stream = None
            for i, frame in enumerate(frames):
                if isinstance(frame, np.ndarray):
                    frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
                if stream is None:
                    stream = out.add_stream(encoder, rate=out_rate, options=options.encoder_options())
                    width, height = output_size(frame.width, frame.height, options.short_side)
                    if options.codec == "hevc" and min(width, height) < HEVC_MIN_SIDE:
                        raise DecodeError(src, f"{width}x{height} is too small for HEVC (min side {HEVC_MIN_SIDE})")
                    stream.width, stream.height = width, height
                    stream.pix_fmt = "yuv420p"
                    stream.thread_count = 1
                # output frame k shows input frame floor(k * step): emit this frame for every k that maps to it
                while written * step < i + 1:
                    scaled = reformatter.reformat(
                        frame, stream.width, stream.height, "yuv420p", interpolation=Interpolation.AREA
                    )
                    scaled.pts, scaled.time_base = written, 1 / out_rate
                    scaled.pict_type = PictureType.NONE  # a decoded I-frame would force a keyframe off the GOP grid
                    out.mux(stream.encode(scaled))
                    written += 1
            if stream is None:
                raise DecodeError(src, "no decodable frames")
            out.mux(stream.encode(None))
        info = probe_video(tmp)
        if info.num_frames != written:
            raise DecodeError(src, f"wrote {written} frames but the output decodes to {info.num_frames}")
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return info.num_frames, info.fps, info.width, info.height
