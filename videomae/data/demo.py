"""The embedded demo set: short clips of a moving shape whose class needs both appearance and motion.

Each clip shows one shape (square, disc or triangle) moving up or down over a static grey-ish colour gradient
of random direction. The class is the (shape, direction) pair, so a model that sees only one frame (appearance)
or only the motion of a blob (direction) is right at most half or a third of the time. Colour, size, speed,
position, a small sideways drift and the background change from clip to clip, so none of them is a shortcut.
Motion is vertical on purpose: a horizontal flip (a common augmentation) never changes the label.

Every clip also gives one still image (a frame drawn per clip) for image methods, labelled by its shape alone: a
single frame shows the shape but not the motion, so the image classes are the shapes (``labels_images.txt``).
Every row has a caption in its ``text`` column stating the colour, the shape and (clips) the direction in one of
a few phrasings (:mod:`videomae.data.demo_captions`).

Everything is derived from ``(seed, split, clip index)``, so the same arguments give byte-identical manifests,
JPEG, PNG and H.264 files (libx264 runs single-threaded, which makes its output deterministic) with the same
NumPy / Pillow / FFmpeg builds, and a smaller set is a prefix of a larger one with the same seed.

Layout written under ``OUT``::

    labels.txt                    class names, line i = class id i
    labels_images.txt             image class names (the shapes)
    demo.json                     the generation parameters and DATA_VERSION
    train.csv, val.csv            labelled H.264 clips (label = class name)
    train_unlabeled.csv           the training clips without labels, for pretraining
    train_frames.csv, val_frames.csv, train_unlabeled_frames.csv   the same clips as JPEG frame folders
    train_images.csv, val_images.csv, train_images_unlabeled.csv   one PNG frame per clip, labelled by shape
    videos/{split}/{split}_{i:05d}.mp4
    frames/{split}/{split}_{i:05d}/img_{:05d}.jpg   (1-based, like the original frame lists)
    images/{split}/{shape}/{split}_{i:05d}.png      (the ImageNet folder layout)
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

from videomae.data.demo_captions import image_caption, video_caption
from videomae.data.demo_render import (
    CLASS_NAMES,
    DIRECTIONS,
    SHAPES,
    ClipSpec,
    clip_direction,
    clip_shape,
    render_clip,
    sample_clip_spec,
)
from videomae.data.readers import DEFAULT_FRAME_TEMPLATE

__all__ = [
    "CLASS_NAMES",
    "DATA_VERSION",
    "DIRECTIONS",
    "IMAGE_CLASS_NAMES",
    "SHAPES",
    "ClipExtras",
    "ClipSpec",
    "DemoConfig",
    "clip_extras",
    "clip_specs",
    "render_clip",
    "sample_clip_spec",
    "write_demo_dataset",
    "write_frame_folder",
    "write_h264",
]

IMAGE_CLASS_NAMES: tuple[str, ...] = SHAPES
"""Classes of the still images: a single frame shows the shape, not the direction."""
# Bumped whenever the drawing or the files written change, so scripts can tell an outdated demo folder (stored in
# demo.json). 5: still images and captions added; the clips are those of 4.
DATA_VERSION = 5
SOURCE_NAME = "demo"
_SPLIT_CODES = {"train": 0, "val": 1}
_CSV_COLUMNS = {
    "videos": ["path", "label", "num_frames", "fps", "width", "height", "duration", "source", "text"],
    "frames": ["path", "start", "num_frames", "label", "fps", "width", "height", "duration", "source", "text"],
    "images": ["path", "label", "num_frames", "width", "height", "source", "text"],
}


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


def _clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODES[split], index])


@dataclass(frozen=True)
class ClipExtras:
    """What a clip gives besides its frames: the frame kept as its still image, and the two captions."""

    frame: int
    caption: str
    image_caption: str


def clip_extras(split: str, index: int, spec: ClipSpec, config: DemoConfig) -> ClipExtras:
    """The still image's frame and the captions of clip ``index`` of ``split``, from their own generator (the
    clip's draws stay those of earlier versions)."""
    rng = np.random.default_rng([config.seed, _SPLIT_CODES[split], 1 << 29, index])
    shape, direction = clip_shape(spec), clip_direction(spec)
    frame = int(rng.integers(config.frames))
    return ClipExtras(frame, video_caption(spec.colour, shape, direction, rng), image_caption(spec.colour, shape, rng))


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


def _image_path(split: str, index: int, spec: ClipSpec) -> str:
    return f"images/{split}/{clip_shape(spec)}/{_clip_name(split, index)}.png"


def _write_one(job: tuple[Path, str, int, ClipSpec, DemoConfig, int]) -> None:
    from PIL import Image

    out, split, index, spec, config, still = job
    video = render_clip(spec, config.size, config.frames)
    name = _clip_name(split, index)
    write_h264(out / "videos" / split / f"{name}.mp4", video, config.fps, config.crf)
    write_frame_folder(out / "frames" / split / name, video, config.jpeg_quality)
    Image.fromarray(video[still]).save(out / _image_path(split, index, spec))


def _manifest_rows(
    split: str, specs: list[ClipSpec], extras: list[ClipExtras], config: DemoConfig, kind: str, labelled: bool
) -> Iterator[dict]:
    """Rows of the ``kind`` (``videos``, ``frames`` or ``images``) manifest of ``split``."""
    duration = f"{config.frames / config.fps:.6g}"
    for i, (spec, extra) in enumerate(zip(specs, extras)):
        name = _clip_name(split, i)
        if kind == "images":
            row = {
                "path": _image_path(split, i, spec),
                "label": clip_shape(spec),
                "num_frames": 1,
                "width": config.size,
                "height": config.size,
                "source": SOURCE_NAME,
                "text": extra.image_caption,
            }
        else:
            row = {
                "path": f"frames/{split}/{name}" if kind == "frames" else f"videos/{split}/{name}.mp4",
                "start": 1,
                "num_frames": config.frames,
                "label": CLASS_NAMES[spec.label],
                "fps": config.fps,
                "width": config.size,
                "height": config.size,
                "duration": duration,
                "source": SOURCE_NAME,
                "text": extra.caption,
            }
        yield {k: row[k] for k in _CSV_COLUMNS[kind] if labelled or k != "label"}


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
        The written manifests and label maps by name (``"train"``, ``"val"``, ``"train_unlabeled"``,
        ``"train_frames"``, ``"val_frames"``, ``"train_unlabeled_frames"``, ``"train_images"``, ``"val_images"``,
        ``"train_images_unlabeled"``, ``"labels"``, ``"labels_images"``).
    """
    config = config or DemoConfig()
    config.validate()
    out = Path(out)
    splits = {"train": clip_specs("train", config.num_train, config), "val": clip_specs("val", config.num_val, config)}
    extras = {split: [clip_extras(split, i, s, config) for i, s in enumerate(specs)] for split, specs in splits.items()}
    folders = [out / kind / split for kind in ("videos", "frames") for split in splits]
    for folder in folders + [out / "images" / split / shape for split in splits for shape in SHAPES]:
        folder.mkdir(parents=True, exist_ok=True)
    jobs = [
        (out, split, i, spec, config, extras[split][i].frame)
        for split, specs in splits.items()
        for i, spec in enumerate(specs)
    ]
    _run_jobs(jobs, workers if workers is not None else (os.cpu_count() or 1), progress)

    written = {"labels": out / "labels.txt", "labels_images": out / "labels_images.txt"}
    written["labels"].write_text("".join(f"{name}\n" for name in CLASS_NAMES), encoding="utf-8")
    written["labels_images"].write_text("".join(f"{name}\n" for name in IMAGE_CLASS_NAMES), encoding="utf-8")
    for split, specs in splits.items():
        for kind, suffix in (("videos", ""), ("frames", "_frames"), ("images", "_images")):
            variants = [(split + suffix, True)]
            if split == "train":
                variants.append((f"train_unlabeled{suffix}" if kind != "images" else "train_images_unlabeled", False))
            for name, labelled in variants:
                rows = list(_manifest_rows(split, specs, extras[split], config, kind, labelled))
                if rows:
                    written[name] = out / f"{name}.csv"
                    _write_csv(written[name], rows)
    info = {
        "version": DATA_VERSION,
        "config": asdict(config),
        "classes": list(CLASS_NAMES),
        "image_classes": list(IMAGE_CLASS_NAMES),
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
