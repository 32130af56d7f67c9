"""Clip transforms on whole ``uint8 [T, H, W, C]`` tensors: one crop, one ``F.interpolate``, one normalisation.

The training transform reproduces the original ``GroupMultiScaleCrop`` (TSN / VideoMAE) on the whole clip at
once: a crop size drawn from ``scales`` x the short side (height and width scale indices at most ``max_distort``
apart, sizes within 3 px of ``input_size`` snapped to it), placed at one of 13 fixed offsets (corners, centre,
edge midpoints, quarter points), resized to ``input_size`` with antialiased bilinear interpolation on uint8 (as
PIL's bilinear resize of the original), optionally flipped, then normalised with ImageNet mean/std. Fine-tuning
adds timm's RandAugment (the same ops and magnitudes on every frame, :class:`ClipRandAugment`) and random erasing
(one box through all frames, after normalisation).

``crop="random_resized"`` replaces the multi-scale crop by torchvision's ``RandomResizedCrop`` box (area share
from ``crop_scale``, aspect ratio log-uniform in ``crop_ratio``, ten tries then a centre crop), the MAE / MoCo v3
image augmentation, drawn from the same per-sample generator so a resumed run sees the same crops.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data.auto_augment import rand_augment_transform
from timm.data.random_erasing import RandomErasing

__all__ = [
    "CROPS",
    "INTERPOLATIONS",
    "ClipRandAugment",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EvalTransform",
    "TrainTransform",
    "multi_scale_crop_box",
    "normalize_clip",
    "random_resized_crop_box",
    "resize_uint8",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROPS = ("multiscale", "random_resized")
"""Training crops: VideoMAE's ``GroupMultiScaleCrop`` or the ``RandomResizedCrop`` of MAE / MoCo v3."""
INTERPOLATIONS = ("bilinear", "bicubic")
"""Antialiased resize modes (VideoMAE resizes bilinearly; the MAE release's crops are bicubic)."""


def multi_scale_crop_box(
    height: int,
    width: int,
    input_size: int,
    scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66),
    max_distort: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """Draw a ``GroupMultiScaleCrop`` box.

    Returns:
        ``(top, left, crop_h, crop_w)`` in pixels of the input frame.
    """
    base = min(height, width)
    sizes = [int(base * s) for s in scales]
    sizes = [input_size if abs(s - input_size) < 3 else s for s in sizes]
    pairs = [(sizes[i], sizes[j]) for i in range(len(sizes)) for j in range(len(sizes)) if abs(i - j) <= max_distort]
    crop_h, crop_w = pairs[_randint(len(pairs), generator)]
    crop_h, crop_w = min(crop_h, height), min(crop_w, width)
    h_step, w_step = (height - crop_h) // 4, (width - crop_w) // 4
    # (h_mult, w_mult) of the original's offsets: 4 corners, centre, 4 edge midpoints, 4 quarter points
    offsets = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2), (2, 0), (2, 4), (4, 2), (0, 2), (1, 1), (1, 3), (3, 1), (3, 3)]
    hm, wm = offsets[_randint(len(offsets), generator)]
    return hm * h_step, wm * w_step, crop_h, crop_w


def random_resized_crop_box(
    height: int,
    width: int,
    scale: Sequence[float] = (0.2, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """Draw a ``RandomResizedCrop`` box: the draws and arithmetic of torchvision's ``RandomResizedCrop.get_params``
    (``generator=None`` gives its boxes for the same global seed), from ``generator`` when one is given.

    Args:
        height, width: the frame.
        scale: range of the box area as a share of the frame's.
        ratio: range of the box's width / height, drawn log-uniformly.
        generator: source of the draws (torch's global generator by default).

    Returns:
        ``(top, left, crop_h, crop_w)`` in pixels of the input frame.
    """
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator))
            return top, left, h, w
    # ten misses (extreme frame shapes): the largest centred box whose ratio is within bounds
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _randint(n: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(0, n, (1,), generator=generator))


def resize_uint8(x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Antialiased resize (``bilinear`` or ``bicubic``) of a ``uint8 [T, C, H, W]`` clip, staying in uint8 (like
    PIL's resize).

    torch has a vectorised uint8 path for this on CPU, about 7x faster than resizing the float clip.
    """
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)


def _check_choice(key: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{key}={value!r}: expected one of {', '.join(allowed)}")


def normalize_clip(
    x: torch.Tensor, mean: Sequence[float], std: Sequence[float], out: torch.Tensor | None = None
) -> torch.Tensor:
    """``(x / 255 - mean) / std`` of a ``[T, C, H, W]`` clip (uint8 or float, any memory layout), returned as a
    contiguous float32 ``[C, T, H, W]``: one converting copy plus two in-place passes, instead of
    float -> normalise -> permute -> contiguous (about 5x less time on a 16 x 224 x 224 clip).

    Args:
        x: the clip.
        mean, std: per-channel statistics on the 0..1 pixel scale.
        out: contiguous float32 ``[C, T, H, W]`` to write into (e.g. one slot of a batch of repeated samples),
            saving an allocation and a later copy.
    """
    t, c, h, w = x.shape
    if out is None:
        out = torch.empty((c, t, h, w), dtype=torch.float32)
    elif out.shape != (c, t, h, w) or out.dtype != torch.float32 or not out.is_contiguous():
        raise ValueError(
            f"out must be a contiguous float32 tensor of shape {(c, t, h, w)}, got {out.dtype} {tuple(out.shape)}"
        )
    out.copy_(x.permute(1, 0, 2, 3))  # (C, T, H, W)
    scale, shift = _affine(tuple(mean), tuple(std))
    return out.mul_(scale).add_(shift)


@functools.lru_cache(maxsize=16)
def _affine(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` with ``x * scale + shift == (x / 255 - mean) / std``, each ``[C, 1, 1, 1]`` (built once:
    two small tensor constructions per clip are measurable next to a 64 px clip's whole transform)."""
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1, 1)
    return 1.0 / (255.0 * s), -m / s


class ClipRandAugment:
    """timm's RandAugment applied with the same ops and magnitudes to every frame of a clip.

    timm draws its choices from Python's ``random`` (whether an op fires, magnitude noise, sign, interpolation) and
    NumPy's global generator (which ops). Both states are saved before the first frame and restored before each
    following one, so every frame replays the first frame's draws; afterwards the generators stand where one
    image's augmentation leaves them.

    Args:
        config: timm RandAugment string, e.g. ``"rand-m7-n4-mstd0.5-inc1"`` (VideoMAE fine-tuning).
        input_size: frame side the ops see; translations reach 45% of it and resampling is bicubic, as the
            release's video RandAugment.
    """

    def __init__(self, config: str, input_size: int):
        hparams = {"translate_const": int(input_size * 0.45), "interpolation": Image.Resampling.BICUBIC}
        try:
            self.transform = rand_augment_transform(config, hparams)
        except (AssertionError, ValueError, IndexError, KeyError) as err:  # timm asserts on malformed strings
            raise ValueError(
                f"rand_augment={config!r} is not a timm RandAugment string such as 'rand-m7-n4-mstd0.5-inc1' "
                f"(sections after 'rand': m<int>, n<int>, p<float>, mstd<float>, mmax<int>, inc<0|1>) ({err!r})"
            ) from None
        self.config = config

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        """``uint8 [T, C, H, W]`` -> augmented ``uint8 [T, C, H, W]``."""
        frames = clip.permute(0, 2, 3, 1).numpy()  # (T, H, W, C)
        out = np.empty(frames.shape, dtype=np.uint8)
        py_state, np_state = random.getstate(), np.random.get_state()
        for t, frame in enumerate(frames):
            if t:
                random.setstate(py_state)
                np.random.set_state(np_state)
            out[t] = np.asarray(self.transform(Image.fromarray(np.ascontiguousarray(frame))))
        return torch.from_numpy(out).permute(0, 3, 1, 2)  # (T, C, H, W)


class TrainTransform:
    """Multi-scale (or random resized) crop + resize (+ RandAugment) + horizontal flip + normalisation (+ random
    erasing).

    Args:
        input_size: output height and width.
        scales: multi-scale crop sizes as fractions of the frame's short side.
        hflip_prob: probability of a horizontal flip (the original pretraining used none: set 0 for an exact
            reproduction; also set 0 for direction-sensitive labels such as Something-Something).
        max_distort: how many scale steps height and width may differ.
        mean, std: normalisation (0..1 pixel scale).
        rand_augment: timm RandAugment string (e.g. ``"rand-m7-n4-mstd0.5-inc1"``), applied alike to every frame
            after the crop (see :class:`ClipRandAugment`); ``None``: none.
        reprob: probability of random erasing: one box (timm's ``RandomErasing``, per-pixel normal values, at most
            one box) at the same place in every frame, drawn after normalisation.
        crop: ``multiscale`` (``scales``, ``max_distort``) or ``random_resized`` (``crop_scale``, ``crop_ratio``; see
            :func:`random_resized_crop_box`); one box for the whole clip either way.
        crop_scale, crop_ratio: area share and aspect-ratio range of ``random_resized`` boxes.
        interpolation: ``bilinear`` or ``bicubic`` resize of the crop (antialiased).

    Randomness: the crop and flip draw from ``generator`` (torch's global generator by default); RandAugment and
    random erasing use timm's sources (Python ``random``, NumPy, torch global), which the training loader seeds
    per sample.
    """

    def __init__(
        self,
        input_size: int = 224,
        scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66),
        hflip_prob: float = 0.5,
        max_distort: int = 1,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        rand_augment: str | None = None,
        reprob: float = 0.0,
        crop: str = "multiscale",
        crop_scale: Sequence[float] = (0.2, 1.0),
        crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
        interpolation: str = "bilinear",
    ):
        if not 0.0 <= reprob <= 1.0:
            raise ValueError(f"reprob={reprob} must be in [0, 1]")
        _check_choice("crop", crop, CROPS)
        _check_choice("interpolation", interpolation, INTERPOLATIONS)
        for key, (lo, hi), top in (("crop_scale", crop_scale, 1.0), ("crop_ratio", crop_ratio, math.inf)):
            if not 0 < lo <= hi <= top:
                raise ValueError(f"{key}={[lo, hi]}: expected [low, high] with 0 < low <= high <= {top}")
        self.crop, self.crop_scale, self.crop_ratio = crop, tuple(crop_scale), tuple(crop_ratio)
        self.interpolation = interpolation
        self.input_size = input_size
        self.scales = tuple(scales)
        self.hflip_prob = hflip_prob
        self.max_distort = max_distort
        self.mean, self.std = tuple(mean), tuple(std)
        self.rand_augment = ClipRandAugment(rand_augment, input_size) if rand_augment else None
        self.reprob = reprob
        # Frames become channels of one image ([C*T, H, W]), so timm draws a single box for the whole clip.
        self.erase = RandomErasing(reprob, mode="pixel", max_count=1, num_splits=0, device="cpu") if reprob else None

    def __call__(
        self, clip: torch.Tensor, generator: torch.Generator | None = None, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``uint8 [T, H, W, C]`` -> ``float32 [C, T, input_size, input_size]`` (written into ``out`` if given).

        The crop is a view and the resize stays in uint8, so the only float pass is the final normalisation.
        """
        _, h, w, _ = clip.shape
        if self.crop == "random_resized":
            top, left, ch, cw = random_resized_crop_box(h, w, self.crop_scale, self.crop_ratio, generator)
        else:
            top, left, ch, cw = multi_scale_crop_box(h, w, self.input_size, self.scales, self.max_distort, generator)
        x = clip[:, top : top + ch, left : left + cw].permute(0, 3, 1, 2)  # (T, C, ch, cw) uint8
        size = (self.input_size, self.input_size)
        if (ch, cw) != size:
            x = resize_uint8(x, size, self.interpolation)  # (T, C, S, S)
        if self.rand_augment is not None:
            x = self.rand_augment(x)
        if self.hflip_prob > 0 and float(torch.rand((), generator=generator)) < self.hflip_prob:
            x = x.flip(-1)
        x = normalize_clip(x, self.mean, self.std, out)  # (C, T, S, S)
        if self.erase is not None:
            c, t, s_h, s_w = x.shape
            self.erase(x.view(c * t, s_h, s_w))  # in place
        return x


class EvalTransform:
    """Short-side resize, then ``num_crops`` square crops along the long side (1: centre; 3: start/centre/end).

    Args:
        input_size: crop size.
        short_side_size: the short side after resizing (default ``input_size``).
        num_crops: spatial views per clip.
        mean, std: normalisation (0..1 pixel scale).
        interpolation: ``bilinear`` or ``bicubic`` resize (antialiased).
    """

    def __init__(
        self,
        input_size: int = 224,
        short_side_size: int | None = None,
        num_crops: int = 1,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: str = "bilinear",
    ):
        _check_choice("interpolation", interpolation, INTERPOLATIONS)
        self.interpolation = interpolation
        self.input_size = input_size
        self.short_side_size = short_side_size or input_size
        if self.short_side_size < input_size:
            raise ValueError(f"short_side_size={self.short_side_size} must be >= input_size={input_size}")
        if num_crops < 1:
            raise ValueError(f"num_crops={num_crops} must be >= 1")
        self.num_crops = num_crops
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        """``uint8 [T, H, W, C]`` -> ``float32 [num_crops, C, T, input_size, input_size]``."""
        views = [normalize_clip(crop, self.mean, self.std) for crop in self.crops(clip)]  # V x (C, T, S, S)
        return torch.stack(views)  # (V, C, T, S, S)

    def crops(self, clip: torch.Tensor) -> list[torch.Tensor]:
        """The resized crops before normalisation: ``uint8 [T, H, W, C]`` -> ``num_crops`` x ``uint8 [T, C, S, S]``
        views (normalise them with :meth:`normalize`, e.g. a few clips at a time out of a long video)."""
        _, h, w, _ = clip.shape
        s = self.short_side_size
        new_h, new_w = (s, max(s, round(w * s / h))) if h <= w else (max(s, round(h * s / w)), s)
        x = clip.permute(0, 3, 1, 2)  # (T, C, H, W) uint8
        if (new_h, new_w) != (h, w):
            x = resize_uint8(x, (new_h, new_w), self.interpolation)
        size = self.input_size
        return [x[:, :, top : top + size, left : left + size] for top, left in self.crop_offsets(new_h, new_w)]

    def normalize(self, crop: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``uint8 [T, C, S, S]`` -> ``float32 [C, T, S, S]`` with this transform's mean and std."""
        return normalize_clip(crop, self.mean, self.std, out)

    def crop_offsets(self, height: int, width: int) -> list[tuple[int, int]]:
        """``(top, left)`` of each crop in a ``height x width`` frame."""
        size = self.input_size
        mid_h, mid_w = (height - size) // 2, (width - size) // 2
        if self.num_crops == 1:
            return [(mid_h, mid_w)]
        n = self.num_crops - 1
        if width >= height:
            return [(mid_h, k * (width - size) // n) for k in range(self.num_crops)]
        return [(k * (height - size) // n, mid_w) for k in range(self.num_crops)]
