"""Datasets end to end on real files: samples, views, labels, collate, bad rows through a multi-worker loader."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import HEIGHT, frame_ids
from helpers import SMALL_CLIP, csv_manifest
from torch.utils.data import DataLoader

from videomae.data.bad_samples import TooManyBadSamples, read_bad_samples
from videomae.data.datasets import HybridVideoDataset, SourceSpec, VideoClipDataset, collate_clips
from videomae.data.decoding import read_frames
from videomae.data.sampler import WeightedDistributedSampler
from videomae.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform


def unnormalize(x: torch.Tensor) -> torch.Tensor:
    return (x * torch.tensor(IMAGENET_STD).view(3, 1, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)) * 255


def test_train_samples_from_videos_and_frame_folders(tmp_path, media):
    m = csv_manifest(tmp_path / "m.csv", [(media["h264"], "run"), (media["frames"], "jump"), (media["mpeg4_avi"],)])
    ds = VideoClipDataset(m, **SMALL_CLIP)
    assert len(ds) == 3 and ds.label_names == ["jump", "run"] and ds.num_classes == 2
    for i, label in enumerate([1, 0, -1]):
        s = ds[i]
        assert set(s) == {"video", "label", "index", "text"}
        assert s["video"].shape == (3, 4, 32, 32) and s["video"].dtype == torch.float32
        assert s["label"] == label and s["index"] == i
        pixels = unnormalize(s["video"])
        assert pixels.min() > -0.5 and pixels.max() < 255.5 and pixels.std() > 10


def test_per_source_clip_settings_and_label_merge(tmp_path, media):
    a = csv_manifest(tmp_path / "a.csv", [(media["h264"], "cat"), (media["h264"], "dog")])
    b = csv_manifest(tmp_path / "b.csv", [(media["frames"], "dog"), (media["frames"], "emu")])
    ds = HybridVideoDataset(
        [SourceSpec(a, weight=2.0), SourceSpec(b, num_frames=4, sampling_rate=3)],
        num_frames=4,
        sampling_rate=2,
        input_size=32,
    )
    assert ds.label_names == ["cat", "dog", "emu"]
    assert ds.labels.tolist() == [0, 1, 1, 2]
    assert ds.source_sizes == [2, 2] and ds.source_weights == [2.0, 1.0]
    assert ds._clip_settings(3) == (4, 3, "img_{:05d}.jpg", "shrink_stride")
    unnamed = csv_manifest(tmp_path / "c.csv", [(media["h264"], 1)])
    with pytest.raises(ValueError, match="integer labels without class names"):
        HybridVideoDataset([SourceSpec(a), SourceSpec(unnamed)], **SMALL_CLIP)
    # integer labels named by a label map merge by name (as Kinetics-400 lists with their label map)
    ds = HybridVideoDataset([SourceSpec(a), SourceSpec(unnamed, label_map=["yak", "emu"])], **SMALL_CLIP)
    assert ds.label_names == ["cat", "dog", "emu", "yak"] and ds.labels.tolist() == [0, 1, 2]


def test_multi_view_layout(tmp_path, media):
    m = csv_manifest(tmp_path / "m.csv", [(media["h264"], "x")])
    ds = VideoClipDataset(
        m, num_frames=4, sampling_rate=2, input_size=HEIGHT, train=False, test_num_segment=2, test_num_crop=3
    )
    video = ds[0]["video"]
    assert video.shape == (6, 3, 4, HEIGHT, HEIGHT)  # (segments * crops, C, T, H, W), segment-major
    # 64 frames, span 7: segments start at 0 and 57
    segments = [[0, 2, 4, 6], [57, 59, 61, 63]]
    transform = EvalTransform(HEIGHT, num_crops=3)
    for s, idx in enumerate(segments):
        frames = read_frames(media["h264"], idx)
        assert frame_ids(frames) == idx
        torch.testing.assert_close(video[3 * s : 3 * s + 3], transform(frames))
    batch = collate_clips([ds[0], ds[0]])
    assert batch["video"].shape == (12, 3, 4, HEIGHT, HEIGHT) and batch["index"].tolist() == [0] * 12


def test_repeated_sampling_decodes_once_and_augments_each(tmp_path, media):
    # num_frames=7 in the manifest pins the clip to frames 0, 2, 4, 6 (one possible start)
    m = csv_manifest(tmp_path / "m.csv", [(media["h264"], "x", 7)])
    ds = VideoClipDataset(
        m, num_frames=4, sampling_rate=2, input_size=HEIGHT, num_sample=4, scales=(1.0,), hflip_prob=0.5
    )
    torch.manual_seed(0)
    video = ds[0]["video"]
    assert video.shape == (4, 3, 4, HEIGHT, HEIGHT)
    frames = read_frames(media["h264"], [0, 2, 4, 6]).permute(3, 0, 1, 2).float()  # (C, T, H, W)
    crops = []  # the 5 fixed offsets a 64 x 64 crop can take in a 64 x 96 frame, plain or flipped
    for left in range(0, 33, 8):
        crop = frames[..., left : left + HEIGHT]
        crops += [crop, crop.flip(-1)]
    for v in video:
        errors = [(unnormalize(v) - c).abs().max().item() for c in crops]
        assert min(errors) < 1e-3
    assert any(not torch.equal(video[0], v) for v in video[1:])  # independently augmented
    batch = collate_clips([ds[0], ds[0]])
    assert batch["video"].shape == (8, 3, 4, HEIGHT, HEIGHT) and batch["label"].tolist() == [0] * 8


def test_short_video_policy(tmp_path, media):
    m = csv_manifest(tmp_path / "m.csv", [(media["short"], "x"), (media["h264"], "y")])
    run = tmp_path / "run"
    ds = VideoClipDataset(m, num_frames=8, sampling_rate=2, input_size=32, run_dir=run)
    assert ds[0]["index"] == 1  # 6 frames < num_frames=8: bad, replaced by the only other row
    (bad,) = read_bad_samples(run)
    assert bad["line"] == "2" and "6 decodable frames, fewer than min_frames=8" in bad["error"]
    lenient = VideoClipDataset(m, num_frames=8, sampling_rate=2, input_size=32, min_frames=1)
    assert lenient[0]["index"] == 0 and lenient[0]["video"].shape == (3, 8, 32, 32)


def test_bad_row_logged_once_and_counted(tmp_path, media, caplog):
    m = csv_manifest(tmp_path / "m.csv", [(media["junk"], "x"), (media["h264"], "y")])
    ds = VideoClipDataset(m, **SMALL_CLIP)
    with caplog.at_level("WARNING", logger="videomae.data.bad_samples"):
        for _ in range(3):
            assert ds[0]["index"] == 1
    assert ds.bad.count == 3 and ds.bad.consecutive == 0
    (record,) = caplog.records
    assert f"{m}:2" in record.getMessage() and str(media["junk"]) in record.getMessage()


def test_hanging_file_is_a_bad_sample(tmp_path, media):
    fifo = tmp_path / "hang.mp4"
    os.mkfifo(fifo)
    m = csv_manifest(tmp_path / "m.csv", [(fifo, "x"), (media["h264"], "y")])
    ds = VideoClipDataset(m, **SMALL_CLIP, decode_timeout=0.5, run_dir=tmp_path / "run")
    try:
        assert ds[0]["index"] == 1
    finally:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    (bad,) = read_bad_samples(tmp_path / "run")
    assert bad["path"] == str(fifo) and "timed out after 0.5 s" in bad["error"]


def test_no_file_is_opened_at_construction(tmp_path):
    m = csv_manifest(tmp_path / "m.csv", [(tmp_path / "missing.mp4", "x")])
    ds = VideoClipDataset(m, **SMALL_CLIP)  # would raise if it probed
    assert len(ds) == 1


def test_consecutive_failures_stop_the_run(tmp_path, media):
    m = csv_manifest(tmp_path / "m.csv", [(media["junk"], "x"), (tmp_path / "gone.mp4", "x"), (media["empty"], "x")])
    ds = VideoClipDataset(m, **SMALL_CLIP, run_dir=tmp_path / "run", max_consecutive_failures=3)
    with pytest.raises(TooManyBadSamples, match=r"3 clips in a row failed to load \(last: .*m.csv:\d") as e:
        ds[0]
    assert "bad_samples.csv" in str(e.value)
    assert ds.bad.count == 3
    assert 1 <= len(read_bad_samples(tmp_path / "run")) <= 3


def test_twenty_percent_bad_rows_through_workers(tmp_path, media):
    good = [(media["h264"], "a"), (media["frames"], "b"), (media["mpeg4_avi"], "a"), (media["h264"], "b")] * 4
    bad = [(media["junk"], "a"), (tmp_path / "missing.mp4", "b"), (media["truncated_mp4"], "a"), (media["empty"], "b")]
    rows = good[:4] + [bad[0]] + good[4:8] + [bad[1]] + good[8:12] + [bad[2]] + good[12:] + [bad[3]]
    m = csv_manifest(tmp_path / "m.csv", rows)
    run = tmp_path / "run"
    ds = VideoClipDataset(m, **SMALL_CLIP, run_dir=run)
    bad_lines = {i + 2 for i, r in enumerate(rows) if r in bad}  # +1 header, +1 one-based
    sampler = WeightedDistributedSampler(ds, seed=0)
    loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=2, collate_fn=collate_clips)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == 5 and all(b["video"].shape == (4, 3, 4, 32, 32) for b in batches)
        returned = [i for b in batches for i in b["index"].tolist()]
        assert not {ds.rows[i].line for i in returned} & bad_lines
    recorded = read_bad_samples(run)
    assert sorted(int(r["line"]) for r in recorded) == sorted(bad_lines)  # each bad row exactly once
    assert all(r["manifest"] == m for r in recorded)


def test_text_column_and_public_exports(tmp_path, media):
    m = tmp_path / "m.csv"
    m.write_text(f'path,text\n{media["h264"]},"a square, moving"\n{media["frames"]},\n')
    ds = VideoClipDataset(m, **SMALL_CLIP, return_text=True)
    batch = collate_clips([ds[0], ds[1]])
    assert batch["text"] == ["a square, moving", ""] and batch["label"].tolist() == [-1, -1]
    import videomae.data as data

    for name in data.__all__:
        assert getattr(data, name) is not None


def test_test_mode_never_substitutes_an_unreadable_video(tmp_path, media, caplog):
    corrupt = tmp_path / "corrupt.mp4"
    data = media["h264"].read_bytes()
    corrupt.write_bytes(data[:48] + bytes(len(data) - 48))  # header kept, the rest zeroed
    m = csv_manifest(tmp_path / "m.csv", [(media["h264"], "a"), (corrupt, "b"), (media["frames"], "a")])
    run = tmp_path / "run"
    ds = VideoClipDataset(m, **SMALL_CLIP, train=False, test_num_segment=2, test_num_crop=3, run_dir=run)
    with caplog.at_level("WARNING", logger="videomae.data.bad_samples"):
        bad = ds[1]
    assert bad["valid"] is False and bad["index"] == 1 and bad["label"] == ds.labels[1] == 1
    assert bad["video"].shape == (6, 3, 4, 32, 32) and not bad["video"].any()
    assert "invalid sample" in caplog.records[0].getMessage() and ds.bad.count == 1
    (row,) = read_bad_samples(run)
    assert row["line"] == "3" and row["path"] == str(corrupt)
    good = ds[0]
    assert good["valid"] is True and good["index"] == 0 and good["video"].abs().sum() > 0

    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_clips)
    batches = list(loader)
    index = torch.cat([b["index"] for b in batches])
    valid = torch.cat([b["valid"] for b in batches])
    assert index.tolist() == [0] * 6 + [1] * 6 + [2] * 6  # every video under its own index, none replaced
    assert valid.tolist() == [True] * 6 + [False] * 6 + [True] * 6
    assert index[~valid].unique().numel() == 1  # what evaluation reports as unreadable videos
    assert len(read_bad_samples(run)) == 1  # logged once, however many processes met it

    one_view = VideoClipDataset(m, **SMALL_CLIP, train=False)[1]
    assert one_view["video"].shape == (3, 4, 32, 32) and one_view["valid"] is False
    assert "valid" not in VideoClipDataset(m, **SMALL_CLIP)[0]  # training samples are unchanged
    assert "valid" not in collate_clips([VideoClipDataset(m, **SMALL_CLIP)[0]])


def test_separate_windows_give_each_view_its_own_time(tmp_path, media):
    m = csv_manifest(tmp_path / "m.csv", [(media["frames"], "x")])  # 40 frames, the index painted into each
    kwargs = dict(num_frames=4, sampling_rate=2, input_size=HEIGHT, num_sample=4, scales=(1.0,), hflip_prob=0.0)
    same, separate = VideoClipDataset(m, **kwargs), VideoClipDataset(m, views_from="separate_windows", **kwargs)
    torch.manual_seed(3)
    (window,), _ = same._load(0)  # the default: one window for every view
    torch.manual_seed(3)
    windows, _ = separate._load(0)
    starts = [frame_ids(w)[0] for w in windows]
    assert [frame_ids(w) for w in windows] == [list(range(s, s + 8, 2)) for s in starts]
    assert starts[0] == frame_ids(window)[0]  # the first window is the default's draw: one random source
    assert len(set(starts)) > 1

    seen = []  # each view is augmented from its own window

    class Record:
        input_size = HEIGHT

        def __call__(self, frames, out):
            seen.append(frame_ids(frames)[0])

    separate.train_transform = Record()
    torch.manual_seed(3)
    assert separate[0]["video"].shape == (4, 3, 4, HEIGHT, HEIGHT) and seen == starts
    with pytest.raises(ValueError, match="views_from"):
        VideoClipDataset(m, views_from="other", **kwargs)
