"""Which frames make a clip: ``num_frames`` frames ``sampling_rate`` apart.

A clip spans ``(num_frames - 1) * sampling_rate + 1`` frames of the video.

* Training: one clip with a uniformly random start.
* Testing (multi-view): ``num_segments`` clips with starts evenly spread from the first to the last possible
  start (one segment: the centred clip), as the original VideoMAE test loader does.
* Short videos (fewer frames than the span): the stride shrinks to the largest one that fits
  (``(video_frames - 1) // (num_frames - 1)``, at least 1), so the clip still covers the whole video with distinct
  frames; a video with fewer than ``num_frames`` frames repeats its last frame. Datasets by default refuse such
  videos as bad samples (``min_frames``), so the repetition only happens when a user allows it.
"""

from __future__ import annotations

import torch

__all__ = ["clip_span", "fit_sampling_rate", "sample_test_indices", "sample_train_indices"]


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


def sample_train_indices(
    video_frames: int, num_frames: int, sampling_rate: int, generator: torch.Generator | None = None
) -> list[int]:
    """Frame indices of one training clip with a random start.

    Args:
        video_frames: decodable frames in the video.
        num_frames: frames in the clip.
        sampling_rate: stride between clip frames (shrunk for short videos, see the module docstring).
        generator: random source for the start (default: torch's global generator, seeded per DataLoader worker).
    """
    rate = fit_sampling_rate(video_frames, num_frames, sampling_rate)
    last_start = max(video_frames - clip_span(num_frames, rate), 0)
    start = int(torch.randint(0, last_start + 1, (1,), generator=generator))
    return _clip(start, video_frames, num_frames, rate)


def sample_test_indices(
    video_frames: int, num_frames: int, sampling_rate: int, num_segments: int = 1
) -> list[list[int]]:
    """Frame indices of ``num_segments`` evenly spread test clips (deterministic).

    Segment ``k`` starts at ``floor(k * (video_frames - span) / (num_segments - 1))``; a single segment is centred.
    """
    if num_segments < 1:
        raise ValueError(f"num_segments={num_segments} must be >= 1")
    rate = fit_sampling_rate(video_frames, num_frames, sampling_rate)
    last_start = max(video_frames - clip_span(num_frames, rate), 0)
    if num_segments == 1:
        starts = [last_start // 2]
    else:
        starts = [k * last_start // (num_segments - 1) for k in range(num_segments)]
    return [_clip(s, video_frames, num_frames, rate) for s in starts]
