"""Still images as one-frame clips, the random resized crop, and captions reaching the batch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from videomae.config import ConfigError, load_config
from videomae.data.bad_samples import read_bad_samples
from videomae.data.datasets import VideoClipDataset, collate_clips
from videomae.data.decoding import probe_video
from videomae.data.images import decode_image_file, is_image_path
from videomae.data.transforms import IMAGENET_MEAN, IMAGENET_STD, TrainTransform, random_resized_crop_box


def _pixels(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _normalised(pixels: np.ndarray) -> torch.Tensor:
    """``uint8 [H, W, 3]`` -> float ``[3, H, W]`` normalised with ImageNet statistics (independent of our code)."""
    x = torch.from_numpy(pixels).permute(2, 0, 1).double() / 255
    return ((x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)).float()


def test_every_image_kind_decodes_as_pil_does(tmp_path):
    rgb = _pixels(21, 34)
    files = {
        "a.png": Image.fromarray(rgb),
        "b.BMP": Image.fromarray(rgb),
        "c.webp": Image.fromarray(rgb),
        "d.JPG": Image.fromarray(rgb),
        "grey.png": Image.fromarray(rgb[..., 0]),
        "alpha.png": Image.fromarray(np.dstack([rgb, rgb[..., :1]])),
        "palette.png": Image.fromarray(rgb).quantize(16),
    }
    for name, img in files.items():
        img.save(tmp_path / name, **({"lossless": True} if name.endswith("webp") else {}))
        assert is_image_path(tmp_path / name)
        expected = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        assert np.array_equal(decode_image_file(tmp_path / name), expected), name
    wide = (rgb.astype(np.uint16) << 8) | 0xAB  # 16-bit channels: scaled down to their high byte
    Image.fromarray(wide[..., 0]).save(tmp_path / "deep.png")
    assert np.array_equal(decode_image_file(tmp_path / "deep.png"), np.repeat(rgb[..., :1], 3, axis=2))
    assert probe_video(tmp_path / "a.png") == probe_video(tmp_path / "d.JPG")
    assert (probe_video(tmp_path / "a.png").num_frames, probe_video(tmp_path / "a.png").width) == (1, 34)
    assert not is_image_path(tmp_path / "clip.mp4") and not is_image_path("photo.jpg.mp4")


def test_an_image_row_is_a_one_frame_clip_repeated_over_time(tmp_path):
    rgb = _pixels(32, 32, seed=1)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    (tmp_path / "m.csv").write_text("path,label,text\nx.png,cat,a cat\n")
    expected = _normalised(rgb)
    for num_frames in (1, 3):
        ds = VideoClipDataset(tmp_path / "m.csv", data_root=tmp_path, num_frames=num_frames, sampling_rate=4,
                              input_size=32, train=False)  # fmt: skip
        sample = ds[0]
        assert sample["video"].shape == (3, num_frames, 32, 32) and sample["valid"] and sample["text"] == "a cat"
        for t in range(num_frames):
            assert torch.allclose(sample["video"][:, t], expected, atol=1e-5)
    # training: a random resized crop of the one frame, same shape
    ds = VideoClipDataset(tmp_path / "m.csv", data_root=tmp_path, num_frames=1, sampling_rate=1, input_size=16,
                          crop="random_resized", num_sample=2)  # fmt: skip
    assert ds[0]["video"].shape == (2, 3, 1, 16, 16) and ds[0]["label"] == 0


def test_a_corrupt_image_is_logged_and_replaced(tmp_path, caplog):
    Image.fromarray(_pixels(32, 32)).save(tmp_path / "good.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is no JPEG")
    (tmp_path / "m.csv").write_text("path,label\nbad.jpg,a\ngood.png,b\n")
    run = tmp_path / "run"
    ds = VideoClipDataset(tmp_path / "m.csv", data_root=tmp_path, num_frames=1, sampling_rate=1, input_size=32,
                          run_dir=run)  # fmt: skip
    with caplog.at_level("WARNING", logger="videomae.data.bad_samples"):
        sample = ds[0]
    assert sample["index"] == 1 and sample["bad_rows"] == [0] and ds.bad.count == 1
    (bad,) = read_bad_samples(run)
    assert bad["line"] == "2" and bad["path"] == str(tmp_path / "bad.jpg") and "cannot decode image" in bad["error"]
    assert f"{tmp_path / 'm.csv'}:2" in caplog.records[0].getMessage()
    evaluation = VideoClipDataset(tmp_path / "m.csv", data_root=tmp_path, num_frames=1, sampling_rate=1,
                                  input_size=32, train=False)  # fmt: skip
    assert evaluation[0]["valid"] is False and evaluation[0]["video"].shape == (3, 1, 32, 32)


@pytest.mark.parametrize("size", [(224, 224), (50, 70), (10, 300), (300, 12)])
def test_random_resized_crop_boxes_are_torchvisions(size):
    h, w = size
    frame = torch.zeros(3, h, w)
    for seed in range(100):
        torch.manual_seed(seed)
        expected = RandomResizedCrop.get_params(frame, [0.2, 1.0], [3 / 4, 4 / 3])
        torch.manual_seed(seed)
        assert random_resized_crop_box(h, w, (0.2, 1.0), (3 / 4, 4 / 3)) == tuple(expected)


def test_random_resized_crop_boxes_obey_their_bounds_and_their_seed():
    h, w, scale, ratio = 120, 160, (0.2, 1.0), (3 / 4, 4 / 3)
    gen = torch.Generator().manual_seed(0)
    boxes = [random_resized_crop_box(h, w, scale, ratio, gen) for _ in range(3000)]
    for top, left, ch, cw in boxes:
        assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w
        # each side is the drawn real side rounded to a pixel (at most 0.5 away), whose area share and ratio
        # lie in the ranges: so the rounded box is within half a pixel per side of them
        assert (cw + 0.5) * (ch + 0.5) >= scale[0] * h * w and (cw - 0.5) * (ch - 0.5) <= scale[1] * h * w
        assert (cw + 0.5) / (ch - 0.5) >= ratio[0] and (cw - 0.5) / (ch + 0.5) <= ratio[1]
    areas = np.array([ch * cw / (h * w) for _, _, ch, cw in boxes])
    log_ratios = np.array([math.log(cw / ch) for _, _, ch, cw in boxes])
    assert areas.min() < 0.22 and areas.max() > 0.95  # the whole range is drawn
    assert log_ratios.min() < math.log(0.77) and log_ratios.max() > math.log(1.3)
    again = [random_resized_crop_box(h, w, scale, ratio, torch.Generator().manual_seed(0)) for _ in range(1)]
    assert again[0] == boxes[0]
    other = torch.Generator().manual_seed(1)
    assert [random_resized_crop_box(h, w, scale, ratio, other) for _ in range(20)] != boxes[:20]


def test_random_resized_crop_transform_is_torchvisions_resized_crop():
    clip = torch.from_numpy(np.stack([_pixels(48, 64, seed=s) for s in range(2)]))  # (T, H, W, C)
    transform = TrainTransform(
        24, hflip_prob=0.0, crop="random_resized", crop_scale=(0.3, 0.9), interpolation="bicubic"
    )
    out = transform(clip, generator=torch.Generator().manual_seed(5))
    top, left, h, w = random_resized_crop_box(48, 64, (0.3, 0.9), (3 / 4, 4 / 3), torch.Generator().manual_seed(5))
    frames = TF.resized_crop(clip.permute(0, 3, 1, 2), top, left, h, w, [24, 24], InterpolationMode.BICUBIC)
    for t in range(2):
        assert torch.allclose(out[:, t], _normalised(frames[t].permute(1, 2, 0).numpy()), atol=1e-5)
    assert torch.equal(out, transform(clip, generator=torch.Generator().manual_seed(5)))  # seeded: repeatable
    with pytest.raises(ValueError, match="crop_scale"):
        TrainTransform(24, crop="random_resized", crop_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="crop='centre'"):
        TrainTransform(24, crop="centre")


def test_crop_keys_are_checked_by_the_config():
    def config(*overrides: str):
        return load_config(None, ["train.max_steps=1", *overrides])

    cfg = config("data.crop=random_resized", "data.crop_scale=[0.08,1.0]", "data.interpolation=bicubic")
    assert (cfg.data.crop, cfg.data.crop_scale, cfg.data.interpolation) == ("random_resized", [0.08, 1.0], "bicubic")
    assert config().data.crop == "multiscale"  # existing configs keep VideoMAE's crop
    refused = {"data.crop_scale": "[0.5,0.2]", "data.crop_ratio": "[0,1]", "data.crop": "centre"}
    for key, value in refused.items():
        with pytest.raises(ConfigError, match=key):
            config(f"{key}={value}")


def test_captions_reach_the_batch_through_worker_processes(tmp_path):
    for name in ("a", "b", "c"):
        Image.fromarray(_pixels(16, 16)).save(tmp_path / f"{name}.png")
    (tmp_path / "m.csv").write_text('path,text\na.png,"a red disc, moving up"\nb.png,\nc.png,ünïcode ☃\n')
    ds = VideoClipDataset(tmp_path / "m.csv", data_root=tmp_path, num_frames=1, sampling_rate=1, input_size=16,
                          num_sample=2)  # fmt: skip
    loader = DataLoader(ds, batch_size=3, num_workers=1, collate_fn=collate_clips)
    (batch,) = list(loader)
    assert batch["text"] == ["a red disc, moving up"] * 2 + [""] * 2 + ["ünïcode ☃"] * 2  # one per view
    assert batch["video"].shape == (6, 3, 1, 16, 16)
