"""Decoding: the right frames from every backend, real frame counts, clamping, broken files, timeouts."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import torch
from conftest import HEIGHT, WIDTH, frame_ids

from videomae.data.decoding import DecodeError, VideoInfo, open_reader, probe_video, read_frames

IDX = [0, 1, 5, 20, 33, 47, 63, 2]


@pytest.mark.parametrize("backend", ["pyav", "decord", "auto"])
def test_h264_frames_by_index(media, backend):
    frames = read_frames(media["h264"], IDX, backend=backend)
    assert frames.dtype == torch.uint8 and frames.shape == (len(IDX), HEIGHT, WIDTH, 3)
    assert frame_ids(frames) == IDX


@pytest.mark.parametrize("backend", ["pyav", "auto"])
def test_mpeg4_with_b_frames_in_avi(media, backend):
    # AVI stores decode-order timestamps: frames must be counted in decoder output order
    assert frame_ids(read_frames(media["mpeg4_avi"], IDX, backend=backend)) == IDX


def test_megamind_random_access_matches_sequential_decode(real_videos, megamind_frames):
    idx = [150, 5, 100, 101, 269, 60]
    for backend in ("pyav", "auto"):
        got = read_frames(real_videos / "Megamind.avi", idx, backend=backend).numpy()
        assert np.array_equal(got, np.stack([megamind_frames[i] for i in idx])), backend


def test_decord_and_pyav_agree_on_real_video(real_videos):
    idx = [0, 7, 100, 400, 794]
    a = read_frames(real_videos / "vtest.avi", idx, backend="decord").float()
    b = read_frames(real_videos / "vtest.avi", idx, backend="pyav").float()
    assert a.shape == b.shape == (5, 576, 768, 3)
    diff = (a - b).abs()
    assert diff.max() <= 4 and diff.mean() < 0.01  # IDCT rounding differs between the two FFmpeg builds


def test_frame_folder_one_based_and_template(media):
    frames = read_frames(media["frames"], [0, 9, 39, 3])
    assert frames.shape == (4, HEIGHT, WIDTH, 3)
    assert frame_ids(frames) == [0, 9, 39, 3]  # file img_00001.jpg is frame 0
    zero_based = read_frames(media["frames0"], [0, 11], frame_template="frame_{:04d}.png")
    assert frame_ids(zero_based) == [0, 11]
    explicit = read_frames(media["frames"], [0, 1], start=5)  # img_00005.jpg holds frame 4
    assert frame_ids(explicit) == [4, 5]


def test_video_start_offset(media):
    assert frame_ids(read_frames(media["h264"], [0, 10], start=30, backend="pyav")) == [30, 40]


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_indices_past_the_end_are_clamped(media, backend):
    assert frame_ids(read_frames(media["h264"], [60, 63, 64, 500], backend=backend)) == [60, 63, 63, 63]
    assert frame_ids(read_frames(media["frames"], [38, 45])) == [38, 39]


def test_header_frame_count_is_not_trusted(truncated_megamind, real_videos, megamind_frames):
    import av

    with av.open(str(truncated_megamind)) as c:
        assert c.streams.video[0].frames == 270  # what the header claims
    info = probe_video(truncated_megamind)
    assert info == VideoInfo(num_frames=128, fps=pytest.approx(23.976, abs=1e-3), width=720, height=528)
    assert probe_video(truncated_megamind, exact=True).num_frames == 128
    # indices computed from the header are clamped to the real last frame
    got = read_frames(truncated_megamind, [100, 200, 269], backend="pyav").numpy()
    last = read_frames(truncated_megamind, [127], backend="pyav").numpy()[0]
    assert np.array_equal(got[0], megamind_frames[100])
    assert np.array_equal(got[1], last) and np.array_equal(got[2], last)
    assert open_reader(truncated_megamind, "auto").num_frames == 128


def test_probe_counts(media, real_videos):
    assert probe_video(media["h264"]) == VideoInfo(64, 25.0, WIDTH, HEIGHT)
    assert probe_video(media["mpeg4_avi"], exact=True) == VideoInfo(64, 25.0, WIDTH, HEIGHT)
    assert probe_video(media["frames"]) == VideoInfo(40, 0.0, WIDTH, HEIGHT)
    assert probe_video(media["frames0"], frame_template="frame_{:04d}.png").num_frames == 12
    info = probe_video(real_videos / "vtest.avi")
    assert (info.num_frames, info.fps, info.width, info.height, info.duration) == (795, 10.0, 768, 576, 79.5)
    assert probe_video(real_videos / "Megamind.avi").num_frames == 270


@pytest.mark.parametrize("name", ["junk", "truncated_mp4", "empty"])
@pytest.mark.parametrize("backend", ["auto", "pyav", "decord"])
def test_corrupt_files_raise_decode_error(media, name, backend):
    with pytest.raises(DecodeError) as e:
        read_frames(media[name], [0, 1], backend=backend)
    assert e.value.path == str(media[name])
    with pytest.raises(DecodeError):
        probe_video(media[name])


def test_missing_paths(tmp_path, media):
    with pytest.raises(DecodeError, match="file not found"):
        read_frames(tmp_path / "nope.mp4", [0])
    empty_folder = tmp_path / "frames"
    empty_folder.mkdir()
    with pytest.raises(DecodeError, match="no frames named 'img_{:05d}.jpg'"):
        read_frames(empty_folder, [0])
    with pytest.raises(ValueError, match="non-negative"):
        read_frames(media["h264"], [-1])


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_hanging_decoder_times_out(tmp_path, backend):
    # a FIFO with no writer blocks FFmpeg's open() in C code, like a hung network mount or decoder
    fifo = tmp_path / "hang.mp4"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    try:
        with pytest.raises(DecodeError, match="timed out after 0.5 s"):
            read_frames(fifo, [0], backend=backend, timeout=0.5)
        assert time.monotonic() - t0 < 5
    finally:  # release the abandoned thread: open the writer end and close it
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    # the next read gets a fresh helper thread and works
    assert threading.active_count() < 20


def test_timeout_helper_returns_normal_results(media):
    a = read_frames(media["h264"], [3, 4], timeout=30)
    assert frame_ids(a) == [3, 4]
