"""The decoding correctness table: for each codec and each backend, random access returns the frames a sequential
decode returns.

Rows: H.264, HEVC, VP9, MPEG-4 Part 2 and MJPEG as this PyAV build writes them (120 frames, so reads take both
the sequential and the seek path of our PyAV reader; GOP 12 with B-frames where the codec has them), plus every
video in the shared real-video folder. Synthetic frames carry their index (``frame_ids``); real videos are compared
pixel by pixel with a sequential PyAV decode. Where a backend is wrong, :data:`KNOWN_BAD` says so and the test
asserts that it *is* wrong (so the table stays a checked fact) and that ``auto`` is right.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
from conftest import REAL_VIDEOS, frame_ids, write_video

from videomae.data.decoding import decord_available, open_reader, probe_video
from videomae.data.readers import KEEP_PACKETS, SEQUENTIAL_LIMIT

NUM_FRAMES = 120
# codec row -> (container, encoder, encoder options, pixel format)
CODECS = {
    "h264": ("mp4", "libx264", {"g": "12", "bf": "2"}, "yuv420p"),
    # x265 defaults to an open GOP: frames after a CRA keyframe may reference the GOP before it
    "hevc": ("mp4", "libx265", {"x265-params": "keyint=12:min-keyint=12:bframes=2:log-level=error"}, "yuv420p"),
    # alternate reference frames: VP9's hidden frames (packets that output no picture of their own)
    "vp9": (
        "webm",
        "libvpx-vp9",
        {"g": "12", "deadline": "realtime", "cpu-used": "8", "lag-in-frames": "16", "auto-alt-ref": "1"},
        "yuv420p",
    ),
    "mpeg4": ("avi", "mpeg4", {"g": "12", "bf": "2"}, "yuv420p"),  # MPEG-4 Part 2 (DivX/Xvid), B-frames in AVI
    "mjpeg": ("avi", "mjpeg", {}, "yuvj420p"),
}
BACKENDS = ("pyav", "decord", "auto")
# (backend, codec as PyAV names the stream) -> what goes wrong. Measured with decord 0.6.
KNOWN_BAD = {
    ("decord", "mpeg4"): "wrong frames after a seek: B-frames in AVI carry decode-order timestamps",
    ("decord", "hevc"): "frames off by one after seeking into an open GOP (x265's default)",
}
# out of order, repeats, first/last frame, both sides of SEQUENTIAL_LIMIT; then a training clip read backwards
# on the same open reader (16 frames, stride 4)
SAMPLES = [0, 1, 5, 50, 63, 100, NUM_FRAMES - 1, 2, 77, 47, 48, 48]
CLIP = list(range(28, 92, 4))[::-1]
assert max(SAMPLES) >= SEQUENTIAL_LIMIT and NUM_FRAMES > KEEP_PACKETS  # the seek path is exercised


def _skip_unavailable(backend: str) -> None:
    if backend == "decord" and not decord_available():
        pytest.skip("decord is not installed (no wheel for this platform)")


@pytest.fixture(scope="module")
def codec_video(tmp_path_factory):
    """``codec -> path`` of the table's synthetic video, written on first use (skips codecs PyAV cannot write)."""
    root = tmp_path_factory.mktemp("codec_table")
    made: dict[str, str] = {}

    def get(codec: str) -> str:
        if codec not in made:
            ext, encoder, options, pix_fmt = CODECS[codec]
            if encoder not in av.codecs_available:
                pytest.skip(f"this PyAV build ({av.__version__}) has no {encoder} encoder")
            path = write_video(root / f"{codec}.{ext}", NUM_FRAMES, encoder, options=options, pix_fmt=pix_fmt)
            with av.open(str(path)) as c:  # the reference: a plain sequential decode holds every frame in order
                assert frame_ids(np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])) == list(
                    range(NUM_FRAMES)
                )
            made[codec] = str(path)
        return made[codec]

    return get


def _random_access_ids(path: str, backend: str) -> list[list[int]]:
    reader = open_reader(path, backend)
    try:
        assert reader.num_frames == NUM_FRAMES
        return [frame_ids(reader.read(SAMPLES)), frame_ids(reader.read(CLIP))]
    finally:
        reader.close()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("codec", list(CODECS))
def test_synthetic_codec_random_access_equals_sequential(codec_video, codec, backend):
    _skip_unavailable(backend)
    path = codec_video(codec)
    got = _random_access_ids(path, backend)
    if (backend, codec) in KNOWN_BAD:
        assert got != [SAMPLES, CLIP], f"{backend} is now right on {codec}: drop it from KNOWN_BAD"
        assert _random_access_ids(path, "auto") == [SAMPLES, CLIP]
    else:
        assert got == [SAMPLES, CLIP]


def test_auto_is_pyav(codec_video):
    reader = open_reader(codec_video("h264"), "auto")
    assert reader.name == "pyav"
    reader.close()


# ---------------------------------------------------------------------------------------------------------------
# real videos: whatever the shared folder holds (vtest.avi: MS-MPEG-4 v3; Megamind.avi: MPEG-4 Part 2)

VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
REAL_FILES = sorted(p.name for p in REAL_VIDEOS.glob("*") if p.suffix.lower() in VIDEO_SUFFIXES) or ["(none)"]
# decord links another FFmpeg build: IDCT rounding may differ, a wrong frame differs by far more (2-46 measured)
DECORD_SAME_FRAME_MEAN_ABS = 0.5


@pytest.fixture(scope="module")
def real_reference():
    """``name -> (indices, frames, codec)``: sampled frames of a real video by a sequential PyAV decode."""
    cache: dict[str, tuple[list[int], dict[int, np.ndarray]]] = {}

    def get(name: str):
        if name not in cache:
            path = str(REAL_VIDEOS / name)
            n = probe_video(path).num_frames
            rng = np.random.default_rng(0)
            indices = [int(i) for i in rng.choice(n, size=min(n, 8), replace=False)] + [n - 1, 0]
            wanted, frames = set(indices), {}
            with av.open(path) as c:
                for i, frame in enumerate(c.decode(video=0)):
                    if i in wanted:
                        frames[i] = frame.to_ndarray(format="rgb24")
                    if i >= max(indices):
                        break
            assert set(frames) == wanted
            with av.open(path) as c:
                codec = c.streams.video[0].codec_context.name
            cache[name] = (indices, frames, codec)
        return cache[name]

    return get


def _frame_errors(name: str, backend: str, indices: list[int], reference: dict[int, np.ndarray]) -> list[float]:
    reader = open_reader(REAL_VIDEOS / name, backend)
    try:
        got = reader.read(indices).astype(np.int16)
    finally:
        reader.close()
    return [float(np.abs(g - reference[i]).mean()) for g, i in zip(got, indices)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", REAL_FILES)
def test_real_video_random_access_equals_sequential(real_videos, real_reference, name, backend):
    if name == "(none)":
        pytest.skip(f"no videos in {REAL_VIDEOS}")
    _skip_unavailable(backend)
    indices, reference, codec = real_reference(name)
    errors = _frame_errors(name, backend, indices, reference)
    # PyAV decodes with the reference's own FFmpeg: the very same pixels
    same = [e == 0 if backend != "decord" else e < DECORD_SAME_FRAME_MEAN_ABS for e in errors]
    if (backend, codec) in KNOWN_BAD:
        assert not all(same), f"{backend} is now right on {name} ({codec}): drop it from KNOWN_BAD"
        assert _frame_errors(name, "auto", indices, reference) == [0.0] * len(indices)
    else:
        assert all(same), f"{backend} on {name} ({codec}): mean abs error per frame {errors}"
