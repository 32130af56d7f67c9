"""Clip index sampling (hand-computed) and the whole-clip transforms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from videomae.data.sampling import clip_span, fit_sampling_rate, sample_test_indices, sample_train_indices
from videomae.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform, multi_scale_crop_box


def test_span_and_rate_policy():
    assert clip_span(16, 4) == 61
    assert fit_sampling_rate(300, 16, 4) == 4
    assert fit_sampling_rate(61, 16, 4) == 4  # exactly fits
    assert fit_sampling_rate(60, 16, 4) == 3  # (60 - 1) // 15
    assert fit_sampling_rate(20, 16, 4) == 1
    assert fit_sampling_rate(5, 1, 4) == 4  # a single frame always fits
    with pytest.raises(ValueError, match="video_frames=0"):
        fit_sampling_rate(0, 16, 4)


def test_train_indices_cover_all_starts_uniformly():
    g = torch.Generator().manual_seed(0)
    starts = []
    for _ in range(2000):
        idx = sample_train_indices(70, 4, 3, generator=g)
        assert idx == [idx[0], idx[0] + 3, idx[0] + 6, idx[0] + 9]
        starts.append(idx[0])
    # span 10 in 70 frames: starts 0..60, each about 2000 / 61 times
    assert min(starts) == 0 and max(starts) == 60
    counts = torch.bincount(torch.tensor(starts), minlength=61).float()
    assert counts.min() > 10 and counts.max() < 60


def test_train_indices_short_videos():
    g = torch.Generator().manual_seed(0)
    assert sample_train_indices(31, 16, 4, generator=g) == list(range(0, 31, 2))  # stride 4 -> 2, whole video
    assert sample_train_indices(10, 4, 3, generator=g) == [0, 3, 6, 9]  # exactly one start
    assert sample_train_indices(3, 5, 2, generator=g) == [0, 1, 2, 2, 2]  # last frame repeated


def test_test_indices_segments():
    # 100 frames, span (4 - 1) * 5 + 1 = 16, last start 84: segments at 0, 42, 84
    assert sample_test_indices(100, 4, 5, num_segments=3) == [[0, 5, 10, 15], [42, 47, 52, 57], [84, 89, 94, 99]]
    assert sample_test_indices(100, 4, 5, num_segments=1) == [[42, 47, 52, 57]]  # centred
    assert sample_test_indices(10, 4, 5, num_segments=2) == [[0, 3, 6, 9], [0, 3, 6, 9]]  # stride shrunk to 3


def ramp_clip(t=4, h=60, w=80) -> torch.Tensor:
    """uint8 [T, H, W, C] with value = column index (ch 0), row index (ch 1), frame index * 10 (ch 2)."""
    clip = torch.zeros(t, h, w, 3, dtype=torch.uint8)
    clip[..., 0] = torch.arange(w, dtype=torch.uint8)[None, None]
    clip[..., 1] = torch.arange(h, dtype=torch.uint8)[None, :, None]
    clip[..., 2] = (torch.arange(t, dtype=torch.uint8) * 10)[:, None, None]
    return clip


def unnormalize(x: torch.Tensor) -> torch.Tensor:
    """[C, T, H, W] normalised -> 0..255."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    return (x * std + mean) * 255


def test_multi_scale_crop_boxes_are_the_fixed_grid():
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(3000):
        top, left, ch, cw = multi_scale_crop_box(256, 340, 224, generator=g)
        # sizes from the short side 256: 256, 224, 192, 168 (int(256 * .66) = 168; 224 snaps to input_size)
        assert ch in (256, 224, 192, 168) and cw in (256, 224, 192, 168)
        sizes = [256, 224, 192, 168]
        assert abs(sizes.index(ch) - sizes.index(cw)) <= 1
        h_step, w_step = (256 - ch) // 4, (340 - cw) // 4
        assert top % max(h_step, 1) == 0 and left % max(w_step, 1) == 0
        assert top // max(h_step, 1) <= 4 and left // max(w_step, 1) <= 4
        assert top + ch <= 256 and left + cw <= 340
        if h_step and w_step:
            seen.add((top // h_step, left // w_step))
    assert seen == {
        (0, 0),
        (0, 4),
        (4, 0),
        (4, 4),
        (2, 2),
        (2, 0),
        (2, 4),
        (4, 2),
        (0, 2),
        (1, 1),
        (1, 3),
        (3, 1),
        (3, 3),
    }
    # 10 size pairs: 4 equal + 3 x 2 neighbours
    pairs = {multi_scale_crop_box(256, 340, 224, generator=g)[2:] for _ in range(2000)}
    assert len(pairs) == 10


def test_train_transform_matches_manual_crop_resize_normalise():
    clip = ramp_clip()
    t = TrainTransform(input_size=32, hflip_prob=0.0)
    g = torch.Generator().manual_seed(3)
    out = t(clip, generator=g)
    assert out.shape == (3, 4, 32, 32) and out.dtype == torch.float32
    top, left, ch, cw = multi_scale_crop_box(60, 80, 32, generator=torch.Generator().manual_seed(3))
    crop = clip[:, top : top + ch, left : left + cw].permute(0, 3, 1, 2).float()
    ref = F.interpolate(crop, size=(32, 32), mode="bilinear", antialias=True).permute(1, 0, 2, 3)
    # resized in uint8, like PIL: within rounding of the float resize
    torch.testing.assert_close(unnormalize(out), ref, atol=0.51, rtol=0)
    torch.testing.assert_close(unnormalize(out), unnormalize(out).round(), atol=1e-3, rtol=0)
    # the crop came from the right place: channel 0 holds column indices inside [left, left + cw)
    assert left - 0.5 <= unnormalize(out)[0].min() and unnormalize(out)[0].max() <= left + cw - 0.5
    # time order is kept: channel 2 is 10 x frame index
    torch.testing.assert_close(unnormalize(out)[2].mean(dim=(1, 2)), torch.tensor([0.0, 10, 20, 30]), atol=1e-3, rtol=0)


def test_train_transform_flip_and_value_range():
    clip = ramp_clip()
    flipped = TrainTransform(input_size=60, scales=(1.0,), hflip_prob=1.0)(clip, torch.Generator().manual_seed(1))
    plain = TrainTransform(input_size=60, scales=(1.0,), hflip_prob=0.0)(clip, torch.Generator().manual_seed(1))
    torch.testing.assert_close(flipped, plain.flip(-1))
    x = TrainTransform(input_size=16)(torch.full((2, 20, 20, 3), 255, dtype=torch.uint8))
    torch.testing.assert_close(x[:, 0, 0, 0], (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD))


def test_eval_transform_three_crops_along_long_side():
    clip = ramp_clip(t=2, h=60, w=80)
    out = EvalTransform(input_size=30, short_side_size=30, num_crops=3)(clip)
    assert out.shape == (3, 3, 2, 30, 30)  # (views, C, T, H, W)
    # short side 60 -> 30 halves the frame to 30 x 40; crops start at columns 0, 5, 10
    resized = F.interpolate(clip.permute(0, 3, 1, 2).float(), size=(30, 40), mode="bilinear", antialias=True)
    for v, left in enumerate((0, 5, 10)):
        ref = resized[:, :, :, left : left + 30].permute(1, 0, 2, 3)
        torch.testing.assert_close(unnormalize(out[v]), ref, atol=0.51, rtol=0)
    centre = EvalTransform(input_size=30, short_side_size=30)(clip)
    torch.testing.assert_close(centre[0], out[1])
    tall = EvalTransform(input_size=20, num_crops=3).crop_offsets(50, 20)
    assert tall == [(0, 0), (15, 0), (30, 0)]
