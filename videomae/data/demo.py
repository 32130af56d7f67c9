"""The embedded demo set: short clips of a moving shape whose class needs both appearance and motion.

Each clip shows one shape (square, disc or triangle) moving up or down over a static grey-ish colour gradient
of random direction. The class is the (shape, direction) pair, so a model that sees only one frame (appearance)
or only the motion of a blob (direction) is right at most half or a third of the time. Colour, size, speed,
position, a small sideways drift and the background change from clip to clip, so none of them is a shortcut.
Motion is vertical on purpose: a horizontal flip (a common augmentation) never changes the label.

Everything is derived from ``(seed, split, clip index)``, so the same arguments give byte-identical manifests,
JPEG files and H.264 files (libx264 runs single-threaded, which makes its output deterministic) with the same
NumPy / Pillow / FFmpeg builds, and a smaller set is a prefix of a larger one with the same seed.

Layout written under ``OUT``::

    labels.txt                    class names, line i = class id i
    demo.json                     the generation parameters and DATA_VERSION
    train.csv, val.csv            labelled H.264 clips (label = class name)
    train_unlabeled.csv           the training clips without labels, for pretraining
    train_frames.csv, val_frames.csv, train_unlabeled_frames.csv   the same clips as JPEG frame folders
    videos/{split}/{split}_{i:05d}.mp4
    frames/{split}/{split}_{i:05d}/img_{:05d}.jpg   (1-based, like the original frame lists)
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from videomae.data.readers import DEFAULT_FRAME_TEMPLATE

SHAPES: tuple[str, ...] = ("square", "disc", "triangle")
DIRECTIONS: tuple[str, ...] = ("up", "down")
CLASS_NAMES: tuple[str, ...] = tuple(f"{shape}_{direction}" for shape in SHAPES for direction in DIRECTIONS)
# Bumped whenever the drawing changes, so scripts can tell an outdated demo folder (stored in demo.json).
DATA_VERSION = 4
SOURCE_NAME = "demo"
# Ranges of the per-clip random draws: shape half-size and vertical travel as fractions of the frame / free room,
# and the background gradient's half range (centre to the farthest corner) in 0..255 units. Shapes are 31-44 px
# wide on 64 px frames, so about 37 % of the tokens of a clip show part of the shape: with the 19-31 px shapes of
# demo v3 (22 %), pretraining learnt mostly the background ramp and its encoder barely helped fine-tuning; with
# these it more than doubles the fine-tune's accuracy (bench/RESULTS.md). The vertical travel keeps 8-28 px (one to
# three 8 px patches), enough to read the direction from a clip.
HALF_SIZE_RANGE = (0.24, 0.34)
TRAVEL_RANGE = (0.45, 0.9)
# The background must be predictable from a few visible patches, or masked pixel modelling has nothing to learn:
# the loss normalises every patch by its own std, so a hidden patch whose structure is weaker than noise or H.264
# error becomes a unit-variance target no context can predict. (An earlier texture of faint gratings + per-frame
# noise had less structure per 8 px token than the coding error, which kept the demo loss at the predict-zero floor
# (P - 1) / P.) One linear gradient per clip gives every background token the same normalised ramp, with 2-4x more
# std than the H.264 error; there is no per-frame noise. tests/test_demo_data.py checks both.
BACKGROUND_HALF_RANGE = (50.0, 80.0)
# The same holds inside the shape: a flat fill would make every interior token a noise-only target, so the shape
# carries stripes that move with it (period in pixels, amplitude in 0..255 units). Predicting a hidden shape token
# then needs the shape's position, outline and motion -- exactly what the classes are about. The amplitude keeps
# every shape pixel within 45 of its base colour, far from the grey background.
STRIPE_PERIOD_RANGE = (4.0, 8.0)
STRIPE_AMPLITUDE = 26.0
_SPLIT_CODES = {"train": 0, "val": 1}
_CSV_COLUMNS_VIDEO = ["path", "label", "num_frames", "fps", "width", "height", "duration", "source"]
_CSV_COLUMNS_FRAMES = ["path", "start", "num_frames", "label", "fps", "width", "height", "duration", "source"]


@dataclass(frozen=True)
class DemoConfig:
    """Parameters of a demo set; stored in ``demo.json`` next to the manifests.

    Attributes:
        num_train: Number of training clips (balanced over the classes; a smaller set is a prefix of a larger one).
        num_val: Number of validation clips.
        seed: Seed every clip is derived from.
        size: Frame height and width in pixels (even, for yuv420p).
        frames: Frames per clip.
        fps: Frame rate written into the H.264 files.
        jpeg_quality: Quality of the frame-folder JPEGs.
        crf: libx264 constant rate factor (lower = closer to the drawn frames).
    """

    num_train: int = 480
    num_val: int = 120
    seed: int = 0
    size: int = 64
    frames: int = 32
    fps: int = 16
    jpeg_quality: int = 90
    crf: int = 18

    def validate(self) -> None:
        """Raise ``ValueError`` naming the offending argument when a value cannot make a usable set."""
        if self.num_train < len(CLASS_NAMES):
            raise ValueError(f"num_train={self.num_train}: need at least one clip per class ({len(CLASS_NAMES)})")
        if self.num_val < 0:
            raise ValueError(f"num_val={self.num_val}: must be >= 0")
        if self.size < 32 or self.size % 2:
            raise ValueError(f"size={self.size}: must be an even number >= 32 (H.264 yuv420p needs even sizes)")
        if self.frames < 4:
            raise ValueError(f"frames={self.frames}: must be >= 4 so that motion is visible")
        if self.fps <= 0:
            raise ValueError(f"fps={self.fps}: must be > 0")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality={self.jpeg_quality}: must be in 1..100")


@dataclass(frozen=True)
class ClipSpec:
    """Random parameters of one clip (all in pixels / pixel units, y grows downwards).

    Attributes:
        label: Class id into ``CLASS_NAMES``.
        half_size: Half the side (square), radius (disc) or half height (triangle).
        x0, y0: Centre at frame 0.
        vx, vy: Velocity in pixels per frame (``vy < 0`` moves up).
        colour: RGB of the shape, 0..255.
        seed: Seed of the background of this clip.
        stripe_period: Wavelength of the stripes painted on the shape, in pixels.
        stripe_angle: Direction of the stripes, radians.
        stripe_phase: Phase of the stripes at the shape's centre, radians.
    """

    label: int
    half_size: float
    x0: float
    y0: float
    vx: float
    vy: float
    colour: tuple[float, float, float]
    seed: int
    stripe_period: float = 6.0
    stripe_angle: float = 0.0
    stripe_phase: float = 0.0


def _clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODES[split], index])


def _split_labels(num: int, seed: int, split: str) -> np.ndarray:
    """Class ids of the first ``num`` clips of a split: each block of ``len(CLASS_NAMES)`` clips holds every class
    once, in a seeded order. Counts differ by at most one, and a smaller set is a prefix of a larger one."""
    num_classes = len(CLASS_NAMES)
    num_blocks = -(-num // num_classes)
    blocks = [
        np.random.default_rng([seed, _SPLIT_CODES[split], 1 << 30, b]).permutation(num_classes)
        for b in range(num_blocks)
    ]
    return np.concatenate(blocks)[:num] if blocks else np.zeros(0, dtype=np.int64)


def sample_clip_spec(label: int, size: int, frames: int, rng: np.random.Generator) -> ClipSpec:
    """Draw the random parameters of one clip of class ``label`` so the shape stays fully in view."""
    direction = DIRECTIONS[label % len(DIRECTIONS)]
    half = rng.uniform(*HALF_SIZE_RANGE) * size
    margin = half + 1.0
    free = size - 2 * margin  # room for the centre to travel
    travel = rng.uniform(*TRAVEL_RANGE) * free
    vy = travel / (frames - 1) * (-1.0 if direction == "up" else 1.0)
    y_start = rng.uniform(margin, margin + free - travel)  # top of the travelled span
    y0 = y_start + travel if direction == "up" else y_start
    drift = rng.uniform(-0.25, 0.25) * travel  # sideways drift, smaller than the vertical travel
    x_lo, x_hi = margin + max(0.0, -drift), size - margin - max(0.0, drift)
    x0 = rng.uniform(x_lo, x_hi)
    hue, sat, val = rng.uniform(0, 1), rng.uniform(0.65, 1.0), rng.uniform(0.8, 1.0)
    colour = tuple(float(c) * 255.0 for c in _hsv_to_rgb(hue, sat, val))
    seed = int(rng.integers(2**31))
    stripes = rng.uniform(*STRIPE_PERIOD_RANGE), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
    return ClipSpec(
        label,
        float(half),
        float(x0),
        float(y0),
        float(drift / (frames - 1)),
        float(vy),
        colour,
        seed,
        *(float(v) for v in stripes),
    )


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A linear colour gradient of random direction around a grey-ish base. Returns (H, W, 3) float, within 15..240.

    Grey-ish (channels within about 40 of each other) so that every shape colour stays far from it.
    """
    centred = np.arange(size, dtype=np.float64) - (size - 1) / 2
    yy, xx = np.meshgrid(centred, centred, indexing="ij")  # (H, W)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy  # (H, W)
    ramp /= np.abs(ramp).max()  # -1..1
    base = rng.uniform(115, 140) + rng.uniform(-8, 8, size=3)  # (3,)
    half_range = rng.uniform(*BACKGROUND_HALF_RANGE) * rng.uniform(0.85, 1.15, size=3)  # (3,) slightly coloured
    return base + ramp[..., None] * half_range  # (H, W, 3)


def _coverage(shape: str, dx: np.ndarray, dy: np.ndarray, half: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of a shape centred at the origin, from a signed distance (1-pixel ramp)."""
    if shape == "square":
        dist = np.maximum(np.abs(dx), np.abs(dy)) - half
    elif shape == "disc":
        dist = np.sqrt(dx**2 + dy**2) - half
    elif shape == "triangle":  # apex up at (0, -half), base from (-half, half) to (half, half)
        side = (2 * np.abs(dx) - (dy + half)) / np.sqrt(5.0)
        dist = np.maximum(dy - half, side)
    else:
        raise ValueError(f"unknown shape {shape!r}; allowed: {SHAPES}")
    return np.clip(0.5 - dist, 0.0, 1.0)


def render_clip(spec: ClipSpec, size: int, frames: int) -> np.ndarray:
    """Draw one clip, all frames at once. Returns uint8 (T, H, W, 3)."""
    rng = np.random.default_rng(spec.seed)
    background = _background(size, rng)  # (H, W, 3)
    t = np.arange(frames, dtype=np.float64)[:, None, None]  # (T, 1, 1)
    coords = np.arange(size, dtype=np.float64) + 0.5  # pixel centres
    dx = coords[None, None, :] - (spec.x0 + spec.vx * t)  # (T, 1, W)
    dy = coords[None, :, None] - (spec.y0 + spec.vy * t)  # (T, H, 1)
    shape = SHAPES[spec.label // len(DIRECTIONS)]
    alpha = _coverage(shape, dx, dy, spec.half_size)[..., None]  # (T, H, W, 1)
    wave = np.cos(spec.stripe_angle) * dx + np.sin(spec.stripe_angle) * dy  # (T, H, W), moves with the shape
    stripes = STRIPE_AMPLITUDE * np.sin(2 * np.pi * wave / spec.stripe_period + spec.stripe_phase)[..., None]
    colour = np.clip(np.asarray(spec.colour) + stripes, 0.0, 255.0)  # (T, H, W, 3)
    video = background[None] * (1.0 - alpha) + colour * alpha  # (T, H, W, 3)
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)


def clip_specs(split: str, num: int, config: DemoConfig) -> list[ClipSpec]:
    """The specs of every clip of a split, in manifest order."""
    labels = _split_labels(num, config.seed, split)
    return [
        sample_clip_spec(int(label), config.size, config.frames, _clip_rng(config.seed, split, i))
        for i, label in enumerate(labels)
    ]


def write_h264(path: Path, video: np.ndarray, fps: int, crf: int = 18) -> None:
    """Write uint8 (T, H, W, 3) RGB frames as an H.264 (yuv420p) MP4 with PyAV, deterministically."""
    import av  # imported here so that importing this module stays cheap

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = video.shape[2], video.shape[1]
        stream.pix_fmt = "yuv420p"
        # One thread: multi-threaded x264 may produce different bytes run to run.
        stream.options = {"crf": str(crf), "preset": "medium", "threads": "1", "bf": "0"}
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_frame_folder(folder: Path, video: np.ndarray, quality: int = 90) -> None:
    """Write uint8 (T, H, W, 3) frames as ``img_00001.jpg``, ``img_00002.jpg``, ... in ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(video, start=1):
        Image.fromarray(frame).save(folder / DEFAULT_FRAME_TEMPLATE.format(i), quality=quality)


def _clip_name(split: str, index: int) -> str:
    return f"{split}_{index:05d}"


def _write_one(job: tuple[Path, str, int, ClipSpec, DemoConfig]) -> None:
    out, split, index, spec, config = job
    video = render_clip(spec, config.size, config.frames)
    name = _clip_name(split, index)
    write_h264(out / "videos" / split / f"{name}.mp4", video, config.fps, config.crf)
    write_frame_folder(out / "frames" / split / name, video, config.jpeg_quality)


def _manifest_rows(
    split: str, specs: list[ClipSpec], config: DemoConfig, frames: bool, labelled: bool
) -> Iterator[dict]:
    duration = f"{config.frames / config.fps:.6g}"
    for i, spec in enumerate(specs):
        name = _clip_name(split, i)
        row = {
            "path": f"frames/{split}/{name}" if frames else f"videos/{split}/{name}.mp4",
            "start": 1,
            "num_frames": config.frames,
            "label": CLASS_NAMES[spec.label] if labelled else "",
            "fps": config.fps,
            "width": config.size,
            "height": config.size,
            "duration": duration,
            "source": SOURCE_NAME,
        }
        columns = _CSV_COLUMNS_FRAMES if frames else _CSV_COLUMNS_VIDEO
        yield {k: row[k] for k in columns if labelled or k != "label"}


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_demo_dataset(
    out: str | os.PathLike, config: DemoConfig | None = None, workers: int | None = None, progress: bool = False
) -> dict[str, Path]:
    """Generate the demo set under ``out`` (created if needed; existing demo files are overwritten).

    Args:
        out: Output folder.
        config: Generation parameters (defaults: ``DemoConfig()``).
        workers: Processes drawing and encoding clips (default: all CPU cores; 0 or 1 = in this process).
        progress: Show a tqdm progress bar.

    Returns:
        The written manifests and label map by name (``"train"``, ``"val"``, ``"train_unlabeled"``,
        ``"train_frames"``, ``"val_frames"``, ``"train_unlabeled_frames"``, ``"labels"``).
    """
    config = config or DemoConfig()
    config.validate()
    out = Path(out)
    splits = {"train": clip_specs("train", config.num_train, config), "val": clip_specs("val", config.num_val, config)}
    for split in splits:
        (out / "videos" / split).mkdir(parents=True, exist_ok=True)
        (out / "frames" / split).mkdir(parents=True, exist_ok=True)
    jobs = [(out, split, i, spec, config) for split, specs in splits.items() for i, spec in enumerate(specs)]
    _run_jobs(jobs, workers if workers is not None else (os.cpu_count() or 1), progress)

    written = {"labels": out / "labels.txt"}
    written["labels"].write_text("".join(f"{name}\n" for name in CLASS_NAMES), encoding="utf-8")
    for split, specs in splits.items():
        variants = [(split, True)] + ([(f"{split}_unlabeled", False)] if split == "train" else [])
        for name, labelled in variants:
            for frames, suffix in ((False, ""), (True, "_frames")):
                rows = list(_manifest_rows(split, specs, config, frames, labelled))
                if rows:
                    written[name + suffix] = out / f"{name}{suffix}.csv"
                    _write_csv(written[name + suffix], rows)
    info = {
        "version": DATA_VERSION,
        "config": asdict(config),
        "classes": list(CLASS_NAMES),
        "frame_template": DEFAULT_FRAME_TEMPLATE,
    }
    (out / "demo.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return written


def _run_jobs(jobs: list, workers: int, progress: bool) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="demo clips", unit="clip", disable=not progress)
    if workers <= 1:
        for job in jobs:
            _write_one(job)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(_write_one, jobs, chunksize=8):
                bar.update()
    bar.close()
