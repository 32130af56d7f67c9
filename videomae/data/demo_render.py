"""Drawing the demo clips (:mod:`videomae.data.demo`): the classes, each clip's random parameters, its frames."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "CLASS_NAMES",
    "DIRECTIONS",
    "SHAPES",
    "ClipSpec",
    "clip_direction",
    "clip_shape",
    "render_clip",
    "sample_clip_spec",
]

SHAPES: tuple[str, ...] = ("square", "disc", "triangle")
DIRECTIONS: tuple[str, ...] = ("up", "down")
CLASS_NAMES: tuple[str, ...] = tuple(f"{shape}_{direction}" for shape in SHAPES for direction in DIRECTIONS)
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


def clip_shape(spec: ClipSpec) -> str:
    """The shape a clip of ``spec`` shows."""
    return SHAPES[spec.label // len(DIRECTIONS)]


def clip_direction(spec: ClipSpec) -> str:
    """The direction a clip of ``spec`` moves in."""
    return DIRECTIONS[spec.label % len(DIRECTIONS)]


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
    alpha = _coverage(clip_shape(spec), dx, dy, spec.half_size)[..., None]  # (T, H, W, 1)
    wave = np.cos(spec.stripe_angle) * dx + np.sin(spec.stripe_angle) * dy  # (T, H, W), moves with the shape
    stripes = STRIPE_AMPLITUDE * np.sin(2 * np.pi * wave / spec.stripe_period + spec.stripe_phase)[..., None]
    colour = np.clip(np.asarray(spec.colour) + stripes, 0.0, 255.0)  # (T, H, W, 3)
    video = background[None] * (1.0 - alpha) + colour * alpha  # (T, H, W, 3)
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)
