"""Which frames make a clip: ``num_frames`` frames ``sampling_rate`` apart.

A clip spans ``(num_frames - 1) * sampling_rate + 1`` frames of the video.

* Training: one clip with a uniformly random start.
* Testing (multi-view): ``num_segments`` clips with starts evenly spread from the first to the last possible
  start (one segment: the centred clip), as the original VideoMAE test loader does.
* Short videos (fewer frames than the span) follow a ``short_video`` policy:

  * ``shrink_stride`` (default): the stride shrinks to the largest one that fits
    (``(video_frames - 1) // (num_frames - 1)``, at least 1), so the clip still covers the whole video with
    distinct frames; a video with fewer than ``num_frames`` frames repeats its last frame (datasets refuse such
    videos by default, ``min_frames``, so this only happens when a user allows it).
  * ``loop`` / ``pad``: the stride stays; the ``(video_frames - 1) // sampling_rate + 1`` frames that fit make a
    shorter clip (placed like a full one: random start in training, spread starts in testing), which is then
    repeated from its first frame (``loop``) or completed with its last frame (``pad``) up to ``num_frames``.
  * ``reject``: no clip; the caller treats the video as bad (these functions raise ``ValueError``).
"""

from __future__ import annotations

import torch

__all__ = ["SHORT_VIDEO_POLICIES", "clip_span", "fit_sampling_rate", "sample_test_indices", "sample_train_indices"]

SHORT_VIDEO_POLICIES = ("reject", "shrink_stride", "loop", "pad")
"""What a clip does with a video shorter than its span (see the module docstring)."""


def clip_span(num_frames: int, sampling_rate: int) -> int:
    """Frames of video covered by one clip."""
    return (num_frames - 1) * sampling_rate + 1


def fit_sampling_rate(video_frames: int, num_frames: int, sampling_rate: int) -> int:
    """The stride actually used: ``sampling_rate``, shrunk (down to 1) until the clip fits the video."""
    if video_frames < 1 or num_frames < 1 or sampling_rate < 1:
        raise ValueError(
            f"video_frames={video_frames}, num_frames={num_frames}, sampling_rate={sampling_rate} must all be >= 1"
        )
    if clip_span(num_frames, sampling_rate) <= video_frames or num_frames == 1:
        return sampling_rate
    return max(1, (video_frames - 1) // (num_frames - 1))


def _clip(start: int, video_frames: int, num_frames: int, rate: int) -> list[int]:
    return [min(start + i * rate, video_frames - 1) for i in range(num_frames)]


def _fit(video_frames: int, num_frames: int, sampling_rate: int, short_video: str) -> tuple[int, int]:
    """``(stride, frames taken from the video)`` of a clip under the ``short_video`` policy."""
    if short_video not in SHORT_VIDEO_POLICIES:
        raise ValueError(f"short_video={short_video!r}: expected one of {', '.join(SHORT_VIDEO_POLICIES)}")
    if clip_span(num_frames, sampling_rate) <= video_frames or short_video == "shrink_stride":
        return fit_sampling_rate(video_frames, num_frames, sampling_rate), num_frames
    if short_video == "reject":
        raise ValueError(
            f"{video_frames} frames are fewer than the clip's span {clip_span(num_frames, sampling_rate)} and "
            "short_video='reject' makes no clip of them"
        )
    return sampling_rate, (video_frames - 1) // sampling_rate + 1  # < num_frames, as the video is short


def _extend(clip: list[int], num_frames: int, short_video: str) -> list[int]:
    """``clip`` brought to ``num_frames`` frames: looped from its start, or padded with its last frame."""
    if short_video == "loop":
        return [clip[i % len(clip)] for i in range(num_frames)]
    return clip + [clip[-1]] * (num_frames - len(clip))


def sample_train_indices(
    video_frames: int,
    num_frames: int,
    sampling_rate: int,
    generator: torch.Generator | None = None,
    short_video: str = "shrink_stride",
) -> list[int]:
    """Frame indices of one training clip with a random start.

    Args:
        video_frames: decodable frames in the video.
        num_frames: frames in the clip.
        sampling_rate: stride between clip frames.
        generator: random source for the start (default: torch's global generator, seeded per DataLoader worker).
        short_video: what a video shorter than the clip's span does (see the module docstring).
    """
    rate, taken = _fit(video_frames, num_frames, sampling_rate, short_video)
    last_start = max(video_frames - clip_span(taken, rate), 0)
    start = int(torch.randint(0, last_start + 1, (1,), generator=generator))
    return _extend(_clip(start, video_frames, taken, rate), num_frames, short_video)


def sample_test_indices(
    video_frames: int, num_frames: int, sampling_rate: int, num_segments: int = 1, short_video: str = "shrink_stride"
) -> list[list[int]]:
    """Frame indices of ``num_segments`` evenly spread test clips (deterministic).

    Segment ``k`` starts at ``floor(k * (video_frames - span) / (num_segments - 1))``; a single segment is centred.
    ``short_video`` says what a video shorter than the span does (see the module docstring).
    """
    if num_segments < 1:
        raise ValueError(f"num_segments={num_segments} must be >= 1")
    rate, taken = _fit(video_frames, num_frames, sampling_rate, short_video)
    last_start = max(video_frames - clip_span(taken, rate), 0)
    if num_segments == 1:
        starts = [last_start // 2]
    else:
        starts = [k * last_start // (num_segments - 1) for k in range(num_segments)]
    return [_extend(_clip(s, video_frames, taken, rate), num_frames, short_video) for s in starts]
