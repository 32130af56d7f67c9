"""The embedded demo set: deterministic, balanced, decodable by every backend, and labels that match the pixels."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from videomae.data.decoding import probe_video, read_frames
from videomae.data.demo import (
    CLASS_NAMES,
    DATA_VERSION,
    DIRECTIONS,
    IMAGE_CLASS_NAMES,
    SHAPES,
    ClipSpec,
    DemoConfig,
    clip_extras,
    clip_specs,
    render_clip,
    write_demo_dataset,
)
from videomae.data.demo_captions import COLOUR_NAMES, colour_name
from videomae.data.images import decode_image_file
from videomae.data.manifest import read_manifest
from videomae.data.manifest_tools import build_manifest

SMALL = DemoConfig(num_train=12, num_val=6, seed=3, size=64, frames=16)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    write_demo_dataset(out, SMALL, workers=0)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(demo_dir, tmp_path):
    write_demo_dataset(tmp_path, SMALL, workers=2)  # a process pool must not change a byte either
    again, first = _files(tmp_path), _files(demo_dir)
    assert sorted(again) == sorted(first)
    assert [name for name in first if again[name] != first[name]] == []
    # two label maps, json, 9 manifests; per clip a video, its frames and its still image
    n_files = 2 + 1 + 9 + (SMALL.num_train + SMALL.num_val) * (1 + SMALL.frames + 1)
    assert len(first) == n_files


def test_other_seed_changes_the_clips():
    a = clip_specs("train", 6, SMALL)
    b = clip_specs("train", 6, DemoConfig(**{**SMALL.__dict__, "seed": 4}))
    assert [s.x0 for s in a] != [s.x0 for s in b]


def test_classes_are_balanced_and_a_smaller_set_is_a_prefix():
    labels = [s.label for s in clip_specs("train", 50, DemoConfig(num_train=50))]
    counts = Counter(labels)
    assert sorted(counts) == list(range(len(CLASS_NAMES)))
    assert max(counts.values()) - min(counts.values()) <= 1
    small = clip_specs("train", 7, DemoConfig(num_train=7))
    assert small == clip_specs("train", 50, DemoConfig(num_train=50))[:7]


def test_classes_need_shape_and_direction():
    # every shape occurs with every direction, so neither alone determines the class
    assert len(CLASS_NAMES) == len(SHAPES) * len(DIRECTIONS) == len(set(CLASS_NAMES))
    assert {c.rsplit("_", 1)[0] for c in CLASS_NAMES} == set(SHAPES)
    assert {c.rsplit("_", 1)[1] for c in CLASS_NAMES} == set(DIRECTIONS)


def test_manifests_and_label_map(demo_dir):
    names = (demo_dir / "labels.txt").read_text().split()
    assert names == list(CLASS_NAMES)
    specs = {"train": clip_specs("train", SMALL.num_train, SMALL), "val": clip_specs("val", SMALL.num_val, SMALL)}
    for split, specs_ in specs.items():
        videos = read_manifest(demo_dir / f"{split}.csv", demo_dir, label_map=demo_dir / "labels.txt")
        frames = read_manifest(demo_dir / f"{split}_frames.csv", demo_dir, label_map=demo_dir / "labels.txt")
        assert [r.label for r in videos.rows] == [s.label for s in specs_] == [r.label for r in frames.rows]
        assert all(Path(r.path).is_file() and r.path.endswith(".mp4") for r in videos.rows)
        assert all(Path(r.path).is_dir() and r.start == 1 and r.num_frames == SMALL.frames for r in frames.rows)
    for name in ("train_unlabeled", "train_unlabeled_frames"):
        unlabeled = read_manifest(demo_dir / f"{name}.csv", demo_dir)
        assert len(unlabeled) == SMALL.num_train and all(r.label is None for r in unlabeled.rows)
    with open(demo_dir / "train.csv", newline="") as f:
        assert next(csv.reader(f))[:2] == ["path", "label"]
    info = json.loads((demo_dir / "demo.json").read_text())
    assert info["config"]["seed"] == 3 and info["classes"] == list(CLASS_NAMES) and info["version"] == DATA_VERSION


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_videos_decode_to_the_drawn_frames(demo_dir, backend):
    spec = clip_specs("train", 1, SMALL)[0]
    drawn = render_clip(spec, SMALL.size, SMALL.frames).astype(np.float32)  # (T, H, W, 3)
    path = demo_dir / "videos" / "train" / "train_00000.mp4"
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height, info.fps) == (SMALL.frames, SMALL.size, SMALL.size, SMALL.fps)
    video = read_frames(path, list(range(SMALL.frames)), backend=backend).numpy().astype(np.float32)
    assert video.shape == drawn.shape
    # lossy H.264 (yuv420p): close on average, identical backends
    assert np.abs(video - drawn).mean() < 3.0
    folder = demo_dir / "frames" / "train" / "train_00000"
    assert probe_video(folder).num_frames == SMALL.frames
    assert sorted(p.name for p in folder.iterdir())[:2] == ["img_00001.jpg", "img_00002.jpg"]
    jpeg = read_frames(folder, list(range(SMALL.frames))).numpy().astype(np.float32)
    assert np.abs(jpeg - drawn).mean() < 3.0


def background_patches(video: np.ndarray, spec: ClipSpec, patch: int = 8, tubelet: int = 2) -> np.ndarray:
    """Tokens of ``video`` (T, H, W, 3) that the shape's box (plus a 2 px margin) never touches, as pixels
    ``(N_bg, tubelet * patch * patch, 3)`` in the pretraining objective's token layout."""
    frames, size = video.shape[0], video.shape[1]
    tokens = video.reshape(frames // tubelet, tubelet, size // patch, patch, size // patch, patch, 3)
    tokens = tokens.transpose(0, 2, 4, 1, 3, 5, 6).reshape(frames // tubelet, size // patch, size // patch, -1, 3)
    keep = np.ones(tokens.shape[:3], dtype=bool)  # (T', H', W')
    reach = spec.half_size + 2.0
    for t in range(frames):
        cx, cy = spec.x0 + spec.vx * t, spec.y0 + spec.vy * t
        rows = np.arange(size // patch)
        hit_y = (rows * patch < cy + reach) & ((rows + 1) * patch > cy - reach)  # (H',)
        hit_x = (rows * patch < cx + reach) & ((rows + 1) * patch > cx - reach)  # (W',)
        keep[t // tubelet] &= ~(hit_y[:, None] & hit_x[None, :])
    return tokens[keep]


def context_loss(tokens: np.ndarray) -> float:
    """The objective's normalised-pixel MSE when every token is predicted by the average normalised token of
    the clip: what a model that copies visible context can reach (predicting zero gives about 1)."""
    normalised = (tokens - tokens.mean(1, keepdims=True)) / (tokens.std(1, ddof=1, keepdims=True) + 1e-6)
    return float(((normalised - normalised.mean(0)) ** 2).mean())


def test_background_is_predictable_from_context(demo_dir):
    """Protects the demo's learnability: normalised-pixel targets of background tokens must be predictable from
    other tokens of the clip (a noisy or finely textured background leaves the pretraining loss at its
    predict-zero floor), and their contrast must be well above the H.264 error."""
    specs = clip_specs("train", SMALL.num_train, SMALL)
    losses, contrasts = [], []
    for i, spec in enumerate(specs):
        path = demo_dir / "videos" / "train" / f"train_{i:05d}.mp4"
        decoded = read_frames(path, list(range(SMALL.frames)), backend="pyav").numpy().astype(np.float64)
        tokens = background_patches(decoded, spec)
        assert len(tokens) >= 20
        losses.append(context_loss(tokens))
        drawn = background_patches(render_clip(spec, SMALL.size, SMALL.frames).astype(np.float64), spec)
        error = (tokens - drawn).std(1, ddof=1)  # (N_bg, 3) H.264 error per token and channel
        contrasts.append(np.median(drawn.std(1, ddof=1) / (error + 0.5)))
    assert max(losses) < 0.35, losses
    assert min(contrasts) > 2.0, contrasts


def test_context_loss_sees_unpredictable_backgrounds():
    """The check above is not vacuous: independent per-token noise scores about 1, a shared ramp about 0."""
    rng = np.random.default_rng(0)
    assert context_loss(rng.normal(size=(50, 128, 3))) > 0.95
    ramp = np.linspace(0, 1, 128)[None, :, None] * rng.uniform(1, 5, size=(50, 1, 3)) + rng.uniform(size=(50, 1, 3))
    assert context_loss(ramp) < 1e-6


def _hand_classify(video: np.ndarray, colour: tuple[float, float, float]) -> str:
    """Name a clip's class from pixels alone: segment the shape by its colour, then the bounding-box fill ratio
    gives the shape (square 1, disc pi/4, triangle 1/2) and the slope of the centroid's height the direction."""
    mask = np.linalg.norm(video - np.asarray(colour, np.float32), axis=-1) < 60  # (T, H, W)
    heights, fills = [], []
    for t, frame in enumerate(mask):
        yy, xx = np.nonzero(frame)
        if len(yy) < 10:
            continue
        (y0, y1), (x0, x1) = np.percentile(yy, [1, 99]), np.percentile(xx, [1, 99])
        inside = (yy >= y0) & (yy <= y1) & (xx >= x0) & (xx <= x1)
        fills.append(inside.sum() / ((y1 - y0 + 1) * (x1 - x0 + 1)))
        heights.append((t, yy.mean()))
    t, y = np.asarray(heights).T
    slope = np.polyfit(t, y, 1)[0]  # image rows grow downwards
    fill = float(np.median(fills))
    shape = "square" if fill > 0.9 else "disc" if fill > 0.65 else "triangle"
    return f"{shape}_{'down' if slope > 0 else 'up'}"


def test_labels_match_what_the_videos_show(demo_dir):
    """A learnability signal: a hand-written shape + motion rule recovers every label from the decoded files."""
    specs = clip_specs("train", SMALL.num_train, SMALL) + clip_specs("val", SMALL.num_val, SMALL)
    with open(demo_dir / "train.csv", newline="") as f, open(demo_dir / "val.csv", newline="") as g:
        rows = list(csv.DictReader(f)) + list(csv.DictReader(g))
    predicted = []
    for spec, row in zip(specs, rows):
        video = read_frames(demo_dir / row["path"], list(range(SMALL.frames)), backend="pyav").numpy()
        predicted.append(_hand_classify(video.astype(np.float32), spec.colour))
    assert predicted == [row["label"] for row in rows]


def test_shape_stays_in_view_and_moves_vertically():
    for spec in clip_specs("train", 60, DemoConfig(num_train=60)):
        cfg = DemoConfig()
        ys = spec.y0 + spec.vy * np.array([0, cfg.frames - 1])
        xs = spec.x0 + spec.vx * np.array([0, cfg.frames - 1])
        assert (ys - spec.half_size >= 0).all() and (ys + spec.half_size <= cfg.size).all()
        assert (xs - spec.half_size >= 0).all() and (xs + spec.half_size <= cfg.size).all()
        assert abs(spec.vy) > 2 * abs(spec.vx)
        assert (spec.vy < 0) == CLASS_NAMES[spec.label].endswith("_up")


@pytest.mark.parametrize("bad", [{"size": 63}, {"num_train": 2}, {"frames": 2}, {"num_val": -1}])
def test_bad_arguments_are_refused_by_name(tmp_path, bad):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        write_demo_dataset(tmp_path, DemoConfig(**bad))


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_still_images_are_frames_labelled_by_shape(demo_dir, tmp_path):
    assert (demo_dir / "labels_images.txt").read_text().split() == list(IMAGE_CLASS_NAMES) == list(SHAPES)
    for split, num in (("train", SMALL.num_train), ("val", SMALL.num_val)):
        specs = clip_specs(split, num, SMALL)
        images = read_manifest(demo_dir / f"{split}_images.csv", demo_dir, label_map=demo_dir / "labels_images.txt")
        assert [SHAPES[r.label] for r in images.rows] == [CLASS_NAMES[s.label].split("_")[0] for s in specs]
        for i, (row, spec) in enumerate(zip(images.rows, specs)):
            assert Path(row.path).parent.name == SHAPES[row.label] and row.num_frames == 1  # the ImageNet layout
            still = render_clip(spec, SMALL.size, SMALL.frames)[clip_extras(split, i, spec, SMALL).frame]
            assert np.array_equal(decode_image_file(row.path), still)  # PNG: the drawn frame exactly
        # the class folders give the same labels through `manifest build --labels-from-subfolders`
        built = build_manifest(demo_dir / "images" / split, tmp_path / f"{split}.csv", labels_from_subfolders=True,
                               workers=1, progress=False)  # fmt: skip
        by_path = {f"images/{split}/{r.path}": built.label_names[r.label] for r in built.rows}
        assert by_path == {str(Path(r.path).relative_to(demo_dir)): SHAPES[r.label] for r in images.rows}
    unlabeled = read_manifest(demo_dir / "train_images_unlabeled.csv", demo_dir)
    assert len(unlabeled) == SMALL.num_train and all(r.label is None and r.text for r in unlabeled.rows)


def test_captions_say_what_each_row_shows(demo_dir):
    phrasings = set()
    for name in ("train", "val", "train_unlabeled", "train_frames", "train_images", "val_images"):
        split = name.split("_")[0]
        specs = clip_specs(split, SMALL.num_train if split == "train" else SMALL.num_val, SMALL)
        rows = read_manifest(demo_dir / f"{name}.csv", demo_dir).rows
        assert len(rows) == len(specs)
        for row, spec in zip(rows, specs):
            shape, direction = CLASS_NAMES[spec.label].split("_")
            words = _words(row.text)
            assert shape in words and colour_name(spec.colour) in words, row.text
            if "images" in name:  # a still shows no motion
                assert not words & set(DIRECTIONS), row.text
            else:
                assert direction in words and not words & (set(DIRECTIONS) - {direction}), row.text
            assert CLASS_NAMES[spec.label] not in row.text
            colour = colour_name(spec.colour)
            phrasings.add(row.text.replace(colour, "C").replace(shape, "S").replace(direction, "D"))
    assert len(phrasings) >= 6  # several phrasings of clips and of images


def test_colour_names():
    named = {(255, 0, 0): "red", (255, 140, 0): "orange", (255, 240, 0): "yellow", (0, 200, 0): "green",
             (0, 230, 230): "cyan", (20, 40, 255): "blue", (150, 0, 255): "purple", (255, 0, 150): "pink"}  # fmt: skip
    assert {rgb: colour_name(rgb) for rgb in named} == named
    assert COLOUR_NAMES == tuple(named.values())  # each name once, around the wheel


def test_bench_cues_name_each_manifest_row_by_its_drawn_clip(demo_dir):
    """bench/demo_cues.py gives every manifest row the values of the clip it was drawn from (the methods bench
    probes them), in the file's row order, for the video and the image manifests alike."""
    from bench.demo_cues import CUES, cue_labels

    for split, specs in (("train", clip_specs("train", SMALL.num_train, SMALL)), ("val", clip_specs("val", 6, SMALL))):
        for manifest, names in ((f"{split}.csv", CLASS_NAMES), (f"{split}_images.csv", IMAGE_CLASS_NAMES)):
            rows = read_manifest(demo_dir / manifest, demo_dir)
            cues = cue_labels(demo_dir, demo_dir / manifest)
            assert set(cues) == set(CUES) and all(len(v) == len(rows) for v in cues.values())
            shapes = [
                names[r.label].split("_")[0]
                for r in read_manifest(
                    demo_dir / manifest,
                    demo_dir,
                    label_map=demo_dir / ("labels.txt" if names is CLASS_NAMES else "labels_images.txt"),
                ).rows
            ]
            assert cues["shape"].tolist() == [SHAPES.index(s) for s in shapes]
            index = [int(re.search(r"_(\d+)\.", r.path).group(1)) for r in rows.rows]
            directions = [DIRECTIONS.index(CLASS_NAMES[specs[i].label].split("_")[1]) for i in index]
            assert cues["direction"].tolist() == directions
            assert all(0 <= int(v) < CUES[c] for c, values in cues.items() for v in values)
