"""Fine-tuning augmentation: RandAugment alike on every frame, one random-erasing box through the clip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest import HEIGHT
from helpers import csv_manifest
from PIL import Image
from timm.data.auto_augment import rand_augment_transform

from videomae.data.datasets import VideoClipDataset
from videomae.data.decoding import read_frames
from videomae.data.sampling import sample_train_indices
from videomae.data.transforms import IMAGENET_MEAN, IMAGENET_STD, TrainTransform

RA = "rand-m7-n4-mstd0.5-inc1"  # the VideoMAE fine-tuning setting
SIZE = 64
SQUARE = dict(input_size=SIZE, scales=(1.0,), hflip_prob=0.0)  # a 64 x 64 clip passes crop and resize unchanged


def textured_clip(num_frames: int = 4, same: bool = False, seed: int = 0) -> torch.Tensor:
    """uint8 [T, 64, 64, 3]: random blocks (so every op visibly changes pixels), one image or a new one per frame."""
    gen = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 256, (1 if same else num_frames, 8, 8, 3), generator=gen, dtype=torch.uint8)
    clip = blocks.repeat_interleave(8, dim=1).repeat_interleave(8, dim=2)  # (T or 1, 64, 64, 3)
    return clip.expand(num_frames, -1, -1, -1).contiguous() if same else clip


def normalized(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, C] -> float [C, T, H, W], ImageNet-normalised, written out without the library's helper."""
    x = torch.from_numpy(frames).float().permute(3, 0, 1, 2) / 255
    return (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def test_identical_frames_stay_identical_and_are_augmented():
    clip = textured_clip(same=True)
    transform = TrainTransform(**SQUARE, rand_augment=RA)
    changed = 0
    for seed in range(8):
        seed_all(seed)
        out = transform(clip)  # (C, T, H, W)
        for t in range(1, 4):
            assert torch.equal(out[:, t], out[:, 0])
        changed += not torch.allclose(out, normalized(clip.numpy()), atol=1e-5)
    assert changed >= 6  # 4 ops at p=0.5 each: an unchanged clip is rare


def test_different_frames_get_the_ops_of_the_first_frame():
    """Each frame equals timm's RandAugment on that frame alone with the RNG state the first frame started from."""
    clip = textured_clip(seed=1)
    transform = TrainTransform(**SQUARE, rand_augment=RA)
    # Independent reference: timm's transform built here with the release's video settings.
    reference = rand_augment_transform(RA, {"translate_const": int(SIZE * 0.45), "interpolation": Image.BICUBIC})
    for seed in range(6):
        seed_all(seed)
        got = transform(clip)
        expected = []
        for frame in clip.numpy():
            random.seed(seed)
            np.random.seed(seed)
            expected.append(np.asarray(reference(Image.fromarray(frame))))
        torch.testing.assert_close(got, normalized(np.stack(expected)))
        # after the clip, the generators stand where one image's augmentation leaves them
        random.seed(seed)
        np.random.seed(seed)
        reference(Image.fromarray(clip[0].numpy()))
        after_one_image = (random.random(), np.random.random())
        seed_all(seed)
        transform(clip)
        assert (random.random(), np.random.random()) == after_one_image


def test_seeded_reproducibility():
    clip = textured_clip(seed=2)
    transform = TrainTransform(input_size=48, rand_augment=RA, reprob=0.5)  # crops, resizes, flips too
    runs = []
    for seed in (3, 3, 4):
        seed_all(seed)
        runs.append(transform(clip))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def box_of(mask: torch.Tensor) -> tuple[int, int, int, int]:
    rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def test_random_erasing_one_box_through_every_frame():
    clip = textured_clip(seed=3)
    erased_t, plain_t = TrainTransform(**SQUARE, reprob=1.0), TrainTransform(**SQUARE)
    boxes = set()
    for seed in range(5):
        seed_all(seed)
        erased = erased_t(clip)
        seed_all(seed)
        plain = plain_t(clip)
        changed = erased != plain  # (C, T, H, W)
        top, bottom, left, right = box_of(changed.any(dim=(0, 1)))
        box = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        box[top:bottom, left:right] = True
        for c in range(3):
            for t in range(4):
                assert torch.equal(changed[c, t], box)  # the same rectangle in every frame and channel
        area = (bottom - top) * (right - left) / SIZE**2
        assert 0.02 * 0.9 <= area <= 1 / 3 * 1.1  # timm's default area range
        noise = erased[:, :, top:bottom, left:right]  # 'pixel' mode: standard normal values, after normalisation
        assert abs(noise.mean().item()) < 0.2 and 0.8 < noise.std().item() < 1.2
        assert torch.equal(erased[:, :, ~box], plain[:, :, ~box])
        boxes.add((top, bottom, left, right))
    assert len(boxes) > 1


def test_defaults_consume_no_python_or_numpy_randomness_and_match_the_plain_pipeline():
    clip = textured_clip(seed=4)
    seed_all(5)
    py_state, np_state = random.getstate(), np.random.get_state()
    out = TrainTransform(**SQUARE)(clip)
    assert random.getstate() == py_state
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state))
    torch.testing.assert_close(out, normalized(clip.numpy()))
    gen_a, gen_b = torch.Generator().manual_seed(6), torch.Generator().manual_seed(6)
    assert torch.equal(
        TrainTransform(48)(clip, generator=gen_a),
        TrainTransform(48, rand_augment=None, reprob=0.0)(clip, generator=gen_b),
    )


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match=r"rand_augment='rand-x3' is not a timm RandAugment string"):
        TrainTransform(rand_augment="rand-x3")
    with pytest.raises(ValueError, match=r"rand_augment='autoaug'"):
        TrainTransform(rand_augment="autoaug")
    with pytest.raises(ValueError, match=r"reprob=1.5 must be in \[0, 1\]"):
        TrainTransform(reprob=1.5)


def test_dataset_passes_augmentation_through(tmp_path, media):
    m = csv_manifest(tmp_path / "m.csv", [(media["h264"], "x")])
    common = dict(num_frames=4, sampling_rate=2, input_size=HEIGHT, hflip_prob=0.5)
    ds = VideoClipDataset(m, **common, rand_augment=RA, reprob=1.0)
    assert ds.train_transform.rand_augment.config == RA and ds.train_transform.reprob == 1.0
    seed_all(0)
    got = ds[0]["video"]
    seed_all(0)  # the same draws by hand: clip start, then the transform
    frames = read_frames(media["h264"], sample_train_indices(64, 4, 2))
    expected = TrainTransform(HEIGHT, hflip_prob=0.5, rand_augment=RA, reprob=1.0)(frames)
    assert torch.equal(got, expected)
    plain = VideoClipDataset(m, **common)
    assert plain.train_transform.rand_augment is None and plain.train_transform.erase is None
