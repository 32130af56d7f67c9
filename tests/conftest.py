"""Shared fixtures. Per session: small real videos (written with PyAV), frame folders, broken files, the shared
real videos. Per test module: the demo set (``demo``) and tiny model exports (``exports``).

Every synthetic frame carries its own index as 8 black/white cells in a top band (bit k = cell k), which survives
lossy coding, so tests can check *which* frame a decoder returned (:func:`frame_ids`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


def _real_videos_dir() -> Path:
    """``$VIDEOMAE_REAL_VIDEOS``, else ``shared/data/real_videos`` next to the repository, else ``/work/shared``."""
    if "VIDEOMAE_REAL_VIDEOS" in os.environ:
        return Path(os.environ["VIDEOMAE_REAL_VIDEOS"])
    beside = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_videos"
    return beside if beside.exists() else Path("/work/shared/data/real_videos")


REAL_VIDEOS = _real_videos_dir()
WIDTH, HEIGHT = 96, 64
BITS, CELL_W, CELL_H = 8, 12, 16


def make_frame(i: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """RGB frame ``i``: index bits in the top band, a colour gradient and a moving square below."""
    img = np.zeros((height, width, 3), np.uint8)
    img[CELL_H:, :, 0] = np.linspace(30, 220, width, dtype=np.uint8)[None]
    img[CELL_H:, :, 1] = np.linspace(200, 40, height - CELL_H, dtype=np.uint8)[:, None]
    img[CELL_H:, :, 2] = 90
    x = (3 * i) % (width - 12)
    img[CELL_H + 16 : CELL_H + 28, x : x + 12] = (250, 250, 40)
    for k in range(BITS):
        if (i >> k) & 1:
            img[:CELL_H, k * CELL_W : (k + 1) * CELL_W] = 255
    return img


def frame_ids(frames) -> list[int]:
    """Read back the index of each frame of a ``[T, H, W, C]`` uint8 array/tensor (original size)."""
    arr = np.asarray(frames)
    ids = []
    for f in arr:
        bits = [f[2 : CELL_H - 2, k * CELL_W + 2 : (k + 1) * CELL_W - 2].mean() > 127 for k in range(BITS)]
        ids.append(sum(int(b) << k for k, b in enumerate(bits)))
    return ids


def write_video(
    path: Path,
    num_frames: int,
    codec: str = "libx264",
    fps: int = 25,
    options: dict[str, str] | None = None,
    start: int = 0,
    pix_fmt: str = "yuv420p",
) -> Path:
    """Encode frames ``start .. start + num_frames - 1`` with PyAV."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, pix_fmt
        for i in range(start, start + num_frames):
            frame = av.VideoFrame.from_ndarray(make_frame(i), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frame_folder(folder: Path, num_frames: int, first_index: int = 1, template: str = "img_{:05d}.jpg") -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(num_frames):
        Image.fromarray(make_frame(i)).save(folder / template.format(first_index + i), quality=95)
    return folder


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    """Small real media files, written once per session.

    Keys: ``h264`` (64 frames, GOP 12, B-frames), ``mpeg4_avi`` (64 frames MPEG-4 Part 2 with B-frames in AVI),
    ``short`` (6 frames), ``frames`` (40 JPEGs, 1-based), ``frames0`` (12 JPEGs, 0-based ``frame_{:04d}.png``),
    ``junk`` (random bytes), ``truncated_mp4`` (H.264 cut before its index), ``empty`` (0 bytes).
    """
    root = tmp_path_factory.mktemp("media")
    files = {
        "h264": write_video(root / "h264.mp4", 64, options={"g": "12", "bf": "2"}),
        "mpeg4_avi": write_video(root / "mpeg4_b.avi", 64, "mpeg4", options={"g": "16", "bf": "2"}),
        "short": write_video(root / "short.mp4", 6, options={"g": "6"}),
        "frames": write_frame_folder(root / "frames" / "clip_a", 40),
        "frames0": write_frame_folder(root / "frames" / "clip_b", 12, first_index=0, template="frame_{:04d}.png"),
    }
    rng = np.random.default_rng(0)
    files["junk"] = root / "junk.mp4"
    files["junk"].write_bytes(rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    data = files["h264"].read_bytes()
    files["truncated_mp4"] = root / "truncated.mp4"
    files["truncated_mp4"].write_bytes(data[: len(data) * 6 // 10])
    files["empty"] = root / "empty.mp4"
    files["empty"].write_bytes(b"")
    return files


@pytest.fixture(scope="session")
def real_videos() -> Path:
    """The shared real clips: ``vtest.avi`` (795 frames, msmpeg4) and ``Megamind.avi`` (270 frames, mpeg4)."""
    if not (REAL_VIDEOS / "vtest.avi").exists():
        pytest.skip(f"real videos not found in {REAL_VIDEOS} (set VIDEOMAE_REAL_VIDEOS)")
    return REAL_VIDEOS


@pytest.fixture(scope="session")
def truncated_megamind(real_videos, tmp_path_factory) -> Path:
    """Megamind.avi cut in half: its header still declares 270 frames, the stream holds 128."""
    out = tmp_path_factory.mktemp("truncated") / "megamind_half.avi"
    data = (real_videos / "Megamind.avi").read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


MEGAMIND_CHECK = (5, 60, 100, 101, 150, 269)


@pytest.fixture(scope="session")
def megamind_frames(real_videos) -> dict[int, np.ndarray]:
    """Frames ``MEGAMIND_CHECK`` of Megamind.avi by a plain sequential PyAV decode: the reference for random
    access."""
    import av

    with av.open(str(real_videos / "Megamind.avi")) as c:
        return {i: f.to_ndarray(format="rgb24") for i, f in enumerate(c.decode(video=0)) if i in MEGAMIND_CHECK}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The demo set (24 training and 6 validation clips of 16 frames), written once per test module; a module that
    needs another size defines its own ``demo``."""
    from videomae.data.demo import DemoConfig, write_demo_dataset

    out = tmp_path_factory.mktemp("demo")
    write_demo_dataset(out, DemoConfig(num_train=24, num_val=6, frames=16), workers=1)
    return out


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """Tiny exports with spread-out random weights: ``classifier`` (5 classes named ``EXPORT_LABELS``) and
    ``pretrain`` (step 3), written once per test module."""
    from helpers import EXPORT_LABELS, TINY_GRID, randomise_spread_out

    from videomae.checkpoint import export_weights
    from videomae.models import create_model

    root = tmp_path_factory.mktemp("exports")
    classifier = randomise_spread_out(create_model("vit_tiny_patch16_224", **TINY_GRID, num_classes=5), seed=0)
    pretrain = randomise_spread_out(create_model("pretrain_videomae_tiny_patch16_224", **TINY_GRID), seed=1)
    return {
        "classifier": export_weights(classifier, root / "classifier.safetensors", {"label_names": EXPORT_LABELS}),
        "pretrain": export_weights(pretrain, root / "pretrain.safetensors", {"step": 3}),
    }
