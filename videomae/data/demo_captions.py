"""Captions of the demo set: what a clip shows and how it moves, in a few phrasings.

A clip's caption names the shape's colour, the shape and its direction (``"a red disc moving up"``); an image's
names the colour and the shape (a single frame shows no motion). Every phrasing has the shape's name and the
direction as the plain words of the class names (``square``, ``disc``, ``triangle``, ``up``, ``down``), so text
models and class-name prompts meet the same words, but no caption is a class name itself. The phrasing is drawn
per clip from its own generator, so captions are deterministic from the seed and leave the clips' draws alone.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np

__all__ = ["COLOUR_NAMES", "IMAGE_TEMPLATES", "VIDEO_TEMPLATES", "colour_name", "image_caption", "video_caption"]

VIDEO_TEMPLATES: tuple[str, ...] = (
    "a {colour} {shape} moving {direction}",
    "a {colour} {shape} moves {direction} over a grey gradient",
    "the {shape} goes {direction}; it is {colour}",
    "{colour} {shape} sliding {direction} across the frame",
    "a video of a {shape} drifting {direction}, coloured {colour}",
)
"""Phrasings of clip captions (``{colour}``, ``{shape}``, ``{direction}``)."""
IMAGE_TEMPLATES: tuple[str, ...] = (
    "a {colour} {shape}",
    "a {colour} {shape} on a grey gradient",
    "a picture of a {shape}, coloured {colour}",
    "the {shape} is {colour}",
)
"""Phrasings of image captions (``{colour}``, ``{shape}``)."""
# Upper hue bounds (0..1 around the colour wheel) of each name; the demo's colours are saturated and bright.
_HUES = ((0.04, "red"), (0.11, "orange"), (0.18, "yellow"), (0.45, "green"), (0.54, "cyan"), (0.72, "blue"),
         (0.80, "purple"), (0.93, "pink"), (1.01, "red"))  # fmt: skip
COLOUR_NAMES: tuple[str, ...] = tuple(dict.fromkeys(name for _, name in _HUES))
"""Every colour a caption can name, once each, around the colour wheel."""


def colour_name(rgb: Sequence[float]) -> str:
    """The common name of a saturated colour given as RGB in 0..255, by its hue."""
    hue = colorsys.rgb_to_hsv(*(c / 255.0 for c in rgb))[0]
    return next(name for bound, name in _HUES if hue < bound)


def video_caption(colour: Sequence[float], shape: str, direction: str, rng: np.random.Generator) -> str:
    """A clip's caption in one of :data:`VIDEO_TEMPLATES`, chosen by ``rng``."""
    template = VIDEO_TEMPLATES[int(rng.integers(len(VIDEO_TEMPLATES)))]
    return template.format(colour=colour_name(colour), shape=shape, direction=direction)


def image_caption(colour: Sequence[float], shape: str, rng: np.random.Generator) -> str:
    """An image's caption in one of :data:`IMAGE_TEMPLATES`, chosen by ``rng``."""
    template = IMAGE_TEMPLATES[int(rng.integers(len(IMAGE_TEMPLATES)))]
    return template.format(colour=colour_name(colour), shape=shape)
