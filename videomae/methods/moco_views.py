"""MoCo v3's photometric view augmentation, on the device, for a whole batch at once.

The loader gives each view its crop (and flip); here each view gets the paper's asymmetric photometric recipe (BYOL's,
as the release's ``main_moco.py``): colour jitter (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1, in a random
order) with probability 0.8, grayscale 0.2, Gaussian blur (sigma 0.1-2) 1.0 on view 1 and 0.1 on view 2,
solarisation 0 on view 1 and 0.2 on view 2. Every parameter is drawn per sample from the run's generator, so one
batch costs a fixed number of kernels whatever its size, and no value goes back to the host. A clip gets one set of
parameters for all its frames. The operations are those of ``torchvision.transforms.v2.functional`` (the tests
compare them for fixed parameters) on pixels in 0..1: the batch is un-normalised first and normalised again after.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from videomae.data.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["ViewParams", "ViewRecipe", "apply_view", "blur_kernel_size", "draw_view_params", "augment_views"]

_GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
_IDENTITY = (1.0, 1.0, 1.0, 0.0)  # the jitter factors that change nothing


@dataclass(frozen=True)
class ViewRecipe:
    """The probabilities and ranges of one view's augmentation."""

    jitter_prob: float = 0.8
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    """Strengths of brightness, contrast, saturation (factors in ``[1 - s, 1 + s]``) and hue (shift in ``[-s, s]``)."""
    grayscale_prob: float = 0.2
    blur_prob: float = 1.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = 0.0


@dataclass
class ViewParams:
    """Per-sample parameters of one view's augmentation (``n`` samples, all on the batch's device)."""

    order: torch.Tensor
    """long ``[n, 4]``: the jitter operations (indices into ``JITTER_OPS``) in the order they are applied."""
    factors: torch.Tensor
    """float ``[n, 4]``: brightness, contrast, saturation factors and the hue shift."""
    jitter: torch.Tensor
    """bool ``[n]``: colour jitter applied."""
    grayscale: torch.Tensor
    """bool ``[n]``."""
    sigma: torch.Tensor
    """float ``[n]``: the blur's sigma."""
    blur: torch.Tensor
    """bool ``[n]``."""
    solarize: torch.Tensor
    """bool ``[n]``."""


@functools.lru_cache(maxsize=64)
def _const(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A constant on the device, made once: a host-to-device copy per step would wait for the device."""
    return torch.tensor(values, dtype=dtype, device=device)


def draw_view_params(n: int, recipe: ViewRecipe, generator: torch.Generator, device: torch.device) -> ViewParams:
    """Draw ``n`` samples' parameters of ``recipe`` from ``generator`` (on ``device``, as the generator)."""

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=device)

    strength = _const(tuple(recipe.jitter), device, torch.float32)  # (4,)
    centre = _const(_IDENTITY, device, torch.float32)
    low, high = recipe.blur_sigma
    return ViewParams(
        order=torch.argsort(uniform(n, 4), dim=1),
        factors=centre + strength * (2 * uniform(n, 4) - 1),
        jitter=uniform(n) < recipe.jitter_prob,
        grayscale=uniform(n) < recipe.grayscale_prob,
        sigma=low + (high - low) * uniform(n),
        blur=uniform(n) < recipe.blur_prob,
        solarize=uniform(n) < recipe.solarize_prob,
    )


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1, 1)  # broadcast over (C, T, H, W)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luma ``[n, 1, T, H, W]`` of RGB clips ``[n, 3, T, H, W]``."""
    weights = _const(_GRAY, x.device, x.dtype).view(1, 3, 1, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * x + (1 - factor) * other).clamp_(0, 1)


def _shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of RGB clips ``[n, 3, T, H, W]`` by ``shift`` (fractions of a turn, per sample)."""
    value, argmax = x.max(dim=1, keepdim=True)  # (n, 1, T, H, W)
    chroma = value - x.min(dim=1, keepdim=True).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    r, g, b = x.unbind(dim=1)
    # hue in sixths of a turn, by the channel that is largest (ties: red, then green)
    sector = torch.stack([(g - b) / safe[:, 0], (b - r) / safe[:, 0] + 2, (r - g) / safe[:, 0] + 4], dim=1)
    hue = sector.gather(1, argmax) / 6.0
    hue = torch.where(chroma > 0, hue, torch.zeros_like(hue))
    hue = torch.remainder(hue + shift, 1.0)
    saturation = chroma / torch.where(value > 0, value, torch.ones_like(value))
    # back to RGB: channel n is v - v * s * clamp(min(k, 4 - k), 0, 1) with k = (n + 6 h) mod 6, n = 5, 3, 1
    offsets = _const((5.0, 3.0, 1.0), x.device, x.dtype).view(1, 3, 1, 1, 1)
    k = torch.remainder(offsets + 6 * hue, 6.0)
    return (value - value * saturation * torch.minimum(k, 4 - k).clamp(0, 1)).clamp_(0, 1)


def blur_kernel_size(side: int) -> int:
    """The blur's (odd) kernel side for images of ``side`` pixels: about a tenth of it (23 at 224, as BYOL)."""
    return 2 * round(0.05 * side) + 1


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of clips ``[n, C, T, H, W]`` with one sigma per sample, reflect-padded as
    torchvision's ``gaussian_blur``."""
    n, c, t, h, w = x.shape
    size = blur_kernel_size(min(h, w))
    half = (size - 1) / 2
    grid = torch.linspace(-half, half, size, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (grid / sigma.view(-1, 1).to(x.dtype)) ** 2)  # (n, K)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c * t, dim=0)  # (n*C*T, K)
    planes = x.reshape(1, n * c * t, h, w)
    pad = size // 2
    planes = F.pad(planes, (pad, pad, pad, pad), mode="reflect")
    planes = F.conv2d(planes, kernel.view(-1, 1, 1, size), groups=n * c * t)  # along W
    planes = F.conv2d(planes, kernel.view(-1, 1, size, 1), groups=n * c * t)  # along H
    return planes.view(n, c, t, h, w)


def apply_view(x: torch.Tensor, p: ViewParams) -> torch.Tensor:
    """Augment clips ``[n, 3, T, H, W]`` of pixels in 0..1 with the per-sample parameters ``p``."""
    x = x.clamp(0, 1)
    identity = _const(_IDENTITY, x.device, x.dtype)
    for position in range(4):
        op = p.order[:, position : position + 1]  # (n, 1)
        active = p.jitter.view(-1, 1) & (op == torch.arange(4, device=x.device))  # (n, 4): which op runs here
        f = torch.where(active, p.factors.to(x.dtype), identity)  # identity factors for the others
        x = (_per_sample(f[:, 0]) * x).clamp_(0, 1)
        mean = _gray(x).mean(dim=(-2, -1), keepdim=True)  # per frame, as the image op on each frame
        x = _blend(x, mean, _per_sample(f[:, 1]))
        x = _blend(x, _gray(x), _per_sample(f[:, 2]))
        x = torch.where(_per_sample(active[:, 3]), _shift_hue(x, _per_sample(f[:, 3])), x)
    x = torch.where(_per_sample(p.grayscale), _gray(x).expand_as(x), x)
    x = torch.where(_per_sample(p.blur), _blur(x, p.sigma), x)
    return torch.where(_per_sample(p.solarize) & (x >= 0.5), 1 - x, x)


def augment_views(views: torch.Tensor, recipes: tuple[ViewRecipe, ...], generator: torch.Generator) -> torch.Tensor:
    """Augment normalised clips ``[V, B, 3, T, H, W]`` (view ``v`` with ``recipes[v]``) -> the same shape,
    normalised again (ImageNet mean/std, as the loader's)."""
    shape = (1, 3, 1, 1, 1)
    mean = _const(tuple(IMAGENET_MEAN), views.device, views.dtype).view(shape)
    std = _const(tuple(IMAGENET_STD), views.device, views.dtype).view(shape)
    out = []
    for clips, recipe in zip(views, recipes, strict=True):
        params = draw_view_params(clips.shape[0], recipe, generator, views.device)
        out.append((apply_view(clips * std + mean, params) - mean) / std)
    return torch.stack(out)
