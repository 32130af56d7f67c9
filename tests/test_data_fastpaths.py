"""The loader's fast paths return exactly what the plain paths return: PyAV's reused reformatter and kept
container / packets, in-place normalisation, repeated samples written in place, shared-memory collation, and
forking after PyAV decoding in a helper thread."""

from __future__ import annotations

import multiprocessing

import av
import numpy as np
import pytest
import torch
from conftest import MEGAMIND_CHECK, frame_ids, write_video

from videomae.data import collate as collate_module
from videomae.data.datasets import collate_clips
from videomae.data.decoding import run_with_timeout
from videomae.data.readers import KEEP_PACKETS, PyAVReader
from videomae.data.transforms import IMAGENET_MEAN, IMAGENET_STD, TrainTransform, normalize_clip


def _plain_decode(path) -> list[np.ndarray]:
    """Every frame by PyAV's own per-frame conversion: the reference."""
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_short_file_keeps_packets_and_rereads_exactly(media):
    reader = PyAVReader(str(media["h264"]))  # 64 frames, B-frames
    assert reader.num_frames == 64 <= KEEP_PACKETS and reader._packets is not None
    reference = _plain_decode(media["h264"])
    for indices in ([0, 5, 5, 40], [63, 2, 9], [10, 30]):  # the same open reader, several reads
        got = reader.read(indices)
        assert frame_ids(got) == indices
        np.testing.assert_array_equal(got, np.stack([reference[i] for i in indices]))
    reader.close()
    with pytest.raises(Exception, match="closed"):
        reader.read([0])


def test_long_file_seeks_on_its_open_container(real_videos, megamind_frames):
    reader = PyAVReader(str(real_videos / "Megamind.avi"))  # mpeg4 with B-frames, 270 frames: seek path
    assert reader.num_frames > KEEP_PACKETS and reader._packets is None
    for order in (MEGAMIND_CHECK, MEGAMIND_CHECK[::-1], (150, 60)):  # later reads seek backwards
        got = reader.read(list(order))
        for frame, i in zip(got, order):
            np.testing.assert_array_equal(frame, megamind_frames[i])
    reader.close()


def _decode_in_child(path: str, queue) -> None:
    queue.put(frame_ids(PyAVReader(path).read([1, 7])))


def test_fork_after_pyav_decoding_in_a_helper_thread(tmp_path):
    # The parent converts frames in its decode helper thread (which keeps a per-thread reformatter); a forked
    # DataLoader-style child must still start and decode (a swscale slice-thread pool would hang the fork).
    path = str(write_video(tmp_path / "big.mp4", 8, options={"g": "4"}))
    assert frame_ids(run_with_timeout(lambda: PyAVReader(path).read([0, 6]), 30, path)) == [0, 6]
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_decode_in_child, args=(path, queue))
    child.start()
    child.join(30)
    if child.exitcode is None:
        child.kill()
    assert child.exitcode == 0
    assert queue.get(timeout=5) == [1, 7]


def test_normalize_clip_into_a_given_slot():
    x = torch.randint(0, 256, (4, 3, 5, 6), dtype=torch.uint8)  # (T, C, H, W)
    expected = (
        x.permute(1, 0, 2, 3).double() / 255 - torch.tensor(IMAGENET_MEAN, dtype=torch.float64)[:, None, None, None]
    ) / torch.tensor(IMAGENET_STD, dtype=torch.float64)[:, None, None, None]
    batch = torch.full((2, 3, 4, 5, 6), 7.0)
    out = normalize_clip(x, IMAGENET_MEAN, IMAGENET_STD, out=batch[1])
    assert out.data_ptr() == batch[1].data_ptr()
    torch.testing.assert_close(batch[1].double(), expected, atol=1e-5, rtol=0)
    assert (batch[0] == 7.0).all()  # the other slot untouched
    with pytest.raises(ValueError, match=r"shape \(3, 4, 5, 6\)"):
        normalize_clip(x, IMAGENET_MEAN, IMAGENET_STD, out=torch.empty(3, 4, 5, 5))


def test_train_transform_out_matches_a_fresh_result():
    clip = torch.randint(0, 256, (4, 40, 50, 3), dtype=torch.uint8)
    transform = TrainTransform(32, hflip_prob=0.5)
    fresh = transform(clip, generator=torch.Generator().manual_seed(3))
    slot = torch.empty(3, 4, 32, 32)
    transform(clip, generator=torch.Generator().manual_seed(3), out=slot)
    torch.testing.assert_close(slot, fresh, atol=0, rtol=0)


def test_collate_in_a_worker_builds_the_batch_in_shared_memory(monkeypatch):
    batch = [
        {"video": torch.randn(2, 3, 4, 8, 8), "label": 1, "index": 0},
        {"video": torch.randn(3, 4, 8, 8), "label": -1, "index": 5},
    ]
    plain = collate_clips(batch)
    assert not plain["video"].is_shared()
    monkeypatch.setattr(collate_module, "get_worker_info", lambda: object())
    shared = collate_clips(batch)
    assert shared["video"].is_shared() and shared["video"].shape == (3, 3, 4, 8, 8)
    torch.testing.assert_close(shared["video"], plain["video"], atol=0, rtol=0)
    assert shared["label"].tolist() == [1, 1, -1] and shared["index"].tolist() == [0, 0, 5]
