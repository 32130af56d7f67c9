"""Short videos by policy (``short_video: reject | shrink_stride | loop | pad``): frame indices against hand
computations, a real short video through the dataset under each policy, and the record and count of each clip that
needed one."""

from __future__ import annotations

import typing

import pytest
import torch
from conftest import HEIGHT, frame_ids
from helpers import csv_manifest
from torch.utils.data import DataLoader

from videomae.config import ManifestSource
from videomae.data.bad_samples import read_bad_samples
from videomae.data.datasets import HybridVideoDataset, SourceSpec, collate_clips
from videomae.data.decoding import read_frames
from videomae.data.sampling import SHORT_VIDEO_POLICIES, sample_test_indices, sample_train_indices
from videomae.data.short_video import read_short_videos
from videomae.data.transforms import EvalTransform
from videomae.engine.bad_sample_meter import BadSampleMeter


def _train_clips(n: int, num_frames: int, rate: int, policy: str) -> set[tuple[int, ...]]:
    """Every training clip the policy can give (the start is the only random draw)."""
    g = torch.Generator().manual_seed(0)
    return {tuple(sample_train_indices(n, num_frames, rate, g, short_video=policy)) for _ in range(200)}


def test_frame_indices_of_each_policy_by_hand():
    # 10 frames, 4 frames at stride 4 need 13. shrink_stride: stride (10 - 1) // 3 = 3, the whole video.
    assert sample_test_indices(10, 4, 4, 2, short_video="shrink_stride") == [[0, 3, 6, 9], [0, 3, 6, 9]]
    # loop / pad keep stride 4: the (10 - 1) // 4 + 1 = 3 frames that fit span 9, so the start is 0 or 1.
    assert sample_test_indices(10, 4, 4, 2, short_video="loop") == [[0, 4, 8, 0], [1, 5, 9, 1]]
    assert sample_test_indices(10, 4, 4, 2, short_video="pad") == [[0, 4, 8, 8], [1, 5, 9, 9]]
    assert sample_test_indices(10, 4, 4, 1, short_video="loop") == [[0, 4, 8, 0]]  # centred: 1 // 2 = 0
    assert _train_clips(10, 4, 4, "loop") == {(0, 4, 8, 0), (1, 5, 9, 1)}
    assert _train_clips(10, 4, 4, "pad") == {(0, 4, 8, 8), (1, 5, 9, 9)}
    assert _train_clips(10, 4, 4, "shrink_stride") == {(0, 3, 6, 9)}
    # Fewer frames than the clip: 3 frames, 8 at stride 2. loop: frames 0, 2 (span 3 fits exactly).
    assert sample_test_indices(3, 8, 2, short_video="loop") == [[0, 2, 0, 2, 0, 2, 0, 2]]
    assert sample_test_indices(3, 8, 2, short_video="pad") == [[0, 2, 2, 2, 2, 2, 2, 2]]
    assert sample_test_indices(3, 8, 2, short_video="shrink_stride") == [[0, 1, 2, 2, 2, 2, 2, 2]]  # stride 1
    assert sample_test_indices(1, 4, 3, short_video="loop") == [[0, 0, 0, 0]]
    with pytest.raises(ValueError, match="short_video='reject' makes no clip"):
        sample_test_indices(10, 4, 4, short_video="reject")
    with pytest.raises(ValueError, match="short_video='stretch': expected one of reject, shrink_stride, loop, pad"):
        sample_train_indices(10, 4, 4, short_video="stretch")
    # A video long enough is never touched: every policy gives the clip the default gives, from the same draw.
    for policy in SHORT_VIDEO_POLICIES:
        assert sample_test_indices(40, 4, 4, 3, short_video=policy) == [[0, 4, 8, 12], [13, 17, 21, 25]] + [
            [27, 31, 35, 39]
        ]
        assert _train_clips(13, 4, 4, policy) == {(0, 4, 8, 12)}


def test_config_key_allows_exactly_the_policies():
    assert typing.get_args(typing.get_type_hints(ManifestSource)["short_video"]) == SHORT_VIDEO_POLICIES
    assert ManifestSource("a.csv").short_video == SourceSpec("a.csv").short_video == "shrink_stride"
    with pytest.raises(ValueError, match=r"short_video='stretch', allowed values: reject, shrink_stride, loop, pad"):
        SourceSpec("a.csv", short_video="stretch")


def _centre_crop(frames: torch.Tensor) -> torch.Tensor:
    """The one test view of ``uint8 [T, H, W, C]`` frames: ``float [C, T, HEIGHT, HEIGHT]``."""
    return EvalTransform(HEIGHT)(frames)[0]


def _dataset(tmp_path, media, policy: str, **kwargs) -> HybridVideoDataset:
    """The 6-frame PyAV video (row 0, manifest line 2) and a 64-frame one, clips of 4 frames at stride 3 (span 10)."""
    m = csv_manifest(tmp_path / f"{policy}.csv", [(media["short"], "x"), (media["h264"], "y")])
    settings = dict(num_frames=4, sampling_rate=3, input_size=HEIGHT, run_dir=tmp_path / policy)
    return HybridVideoDataset([SourceSpec(m, short_video=policy)], **settings, **kwargs)


@pytest.mark.parametrize(
    "policy, segments",
    [
        ("shrink_stride", [[0, 1, 2, 3], [2, 3, 4, 5]]),  # stride 5 // 3 = 1, starts 0 and 6 - 4 = 2
        ("loop", [[0, 3, 0, 3], [2, 5, 2, 5]]),  # stride 3: 2 frames fit (span 4), starts 0 and 2
        ("pad", [[0, 3, 3, 3], [2, 5, 5, 5]]),
    ],
)
def test_real_short_video_under_each_policy(policy, segments, tmp_path, media):
    ds = _dataset(tmp_path, media, policy, train=False, test_num_segment=2)
    sample = ds[0]
    assert sample["valid"] and sample["index"] == 0 and sample["short_rows"] == [0]
    for video, idx in zip(sample["video"], segments):
        frames = read_frames(media["short"], idx)
        assert frame_ids(frames) == idx
        assert torch.equal(video, _centre_crop(frames))
    ds[0]
    (row,) = read_short_videos(tmp_path / policy)  # once, however often the clip was loaded
    assert row["line"] == "2" and row["path"] == str(media["short"]) and f"(short_video={policy})" in row["error"]
    assert "6 decodable frames, fewer than the clip's span 10 (4 frames at stride 3)" in row["error"]
    assert "short_rows" not in ds[1] and not read_bad_samples(tmp_path / policy)


def test_reject_makes_a_short_video_a_bad_sample_replaced_and_counted(tmp_path, media):
    ds = _dataset(tmp_path, media, "reject")
    sample = ds[0]
    assert sample["index"] == 1 and sample["bad_rows"] == [0] and "short_rows" not in sample
    (bad,) = read_bad_samples(tmp_path / "reject")
    assert bad["line"] == "2" and "rejected as a bad sample (short_video=reject)" in bad["error"]
    assert not read_short_videos(tmp_path / "reject")
    evaluated = _dataset(tmp_path, media, "reject", train=False)[0]  # evaluation never substitutes
    assert evaluated["valid"] is False and evaluated["index"] == 0


def test_loop_and_pad_take_videos_shorter_than_the_clip_that_shrink_stride_rejects(tmp_path, media):
    m = csv_manifest(tmp_path / "m.csv", [(media["short"], "x"), (media["h264"], "y")])
    settings = dict(num_frames=8, sampling_rate=2, input_size=HEIGHT, train=False)  # 6 frames < 8
    expected = {"loop": [0, 2, 4, 0, 2, 4, 0, 2], "pad": [0, 2, 4, 4, 4, 4, 4, 4]}  # 3 fit, span 5, start 1 // 2
    for policy, idx in expected.items():
        sample = HybridVideoDataset([SourceSpec(m, short_video=policy)], **settings)[0]
        assert sample["valid"] and torch.equal(sample["video"], _centre_crop(read_frames(media["short"], idx)))
    assert HybridVideoDataset([SourceSpec(m)], **settings)[0]["valid"] is False  # fewer than min_frames = 8


def test_each_short_clip_reaches_the_step_count(tmp_path, media):
    ds = _dataset(tmp_path, media, "loop")
    loader = DataLoader(ds, batch_size=2, sampler=[0, 1, 0, 0, 1, 1], num_workers=2, collate_fn=collate_clips)
    meter = BadSampleMeter(ds, batch_size=2, ceiling=1.0, window=10)
    for batch in loader:
        meter.add_batch(batch)
    assert meter.take_short() == 3 and meter.take_short() == 0
    assert meter.take_step() == (0, 6)  # short clips are no failures
    assert len(read_short_videos(tmp_path / "loop")) == 1  # one row, whatever the workers
