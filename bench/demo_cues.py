"""What an encoder's frozen features keep of each thing a demo clip is drawn with, by linear probes per cue.

``videomae demo-data`` draws every clip from a seeded :class:`~videomae.data.demo_render.ClipSpec`, so each row of a
demo manifest (its file is named ``<split>_<index>``) can be given, besides its class, the values it was drawn with.
Each cue is cut into a few equal bins and probed on the same cached features as the class:

* ``shape`` (3) and ``direction`` (2, video set only): the class's two halves;
* ``hue`` (6 bins of the shape's hue), ``stripes`` (4 bins of the stripe angle, modulo a half turn) and ``size``
  (3 bins of the shape's half size): drawn at random per clip, unrelated to the class. A contrastive encoder whose
  two views share them can tell instances apart by them alone, which makes them its shortcut.

An encoder that keeps a nuisance cue much better than its random twin while keeping the shape no better has
learnt the shortcut, not the class.
"""

from __future__ import annotations

import colorsys
import csv
import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from videomae.data.demo import DemoConfig, clip_specs
from videomae.data.demo_render import DIRECTIONS, SHAPES, ClipSpec, clip_direction, clip_shape
from videomae.evaluation.probes import fit_linear_probe

__all__ = ["CUES", "cue_labels", "cue_scores"]

CUES = {"shape": len(SHAPES), "direction": len(DIRECTIONS), "hue": 6, "stripes": 4, "size": 3}
"""Each cue and its number of classes."""
_ROW_NAME = re.compile(r"(train|val)_(\d+)")
_HALF_SIZE_BINS = (0.24 * 64, 0.34 * 64)  # the drawn range at 64 px (demo_render.HALF_SIZE_RANGE)


def _bin(value: float, low: float, high: float, bins: int) -> int:
    return min(bins - 1, max(0, int((value - low) / (high - low) * bins)))


def _spec_cues(spec: ClipSpec, size: int) -> dict[str, int]:
    hue = colorsys.rgb_to_hsv(*(c / 255.0 for c in spec.colour))[0]
    scale = size / 64
    return {
        "shape": SHAPES.index(clip_shape(spec)),
        "direction": DIRECTIONS.index(clip_direction(spec)),
        "hue": _bin(hue, 0.0, 1.0, CUES["hue"]),
        "stripes": _bin(spec.stripe_angle % math.pi, 0.0, math.pi, CUES["stripes"]),
        "size": _bin(spec.half_size, _HALF_SIZE_BINS[0] * scale, _HALF_SIZE_BINS[1] * scale, CUES["size"]),
    }


def cue_labels(demo: Path, manifest: Path) -> dict[str, torch.Tensor]:
    """Per row of a demo ``manifest`` (in file order, as the probe's features), the class id of every cue."""
    meta = json.loads((demo / "demo.json").read_text())
    config = DemoConfig(**meta["config"])
    with open(manifest, newline="") as f:
        rows = [_ROW_NAME.search(Path(row["path"]).stem) for row in csv.DictReader(f)]
    if any(m is None for m in rows):
        raise ValueError(f"{manifest}: a row's file is not named <split>_<index>; not a demo manifest")
    split = rows[0].group(1)
    count = {"train": config.num_train, "val": config.num_val}[split]
    specs = clip_specs(split, count, config)
    cues = [_spec_cues(specs[int(m.group(2))], config.size) for m in rows]
    return {cue: torch.tensor([c[cue] for c in cues]) for cue in CUES}


def cue_scores(
    report: dict[str, Any], demo: Path, manifests: tuple[str, str], cues: tuple[str, ...] = tuple(CUES)
) -> dict[str, float]:
    """Val top-1 of a linear probe per cue on the cached features of a ``videomae probe`` report (``manifests``:
    its train and val files under ``demo``, in the order the probe read them)."""
    feats = [load_file(report["splits"][s]["cache_file"])[report["pool"]] for s in ("train", "val")]
    labels = [cue_labels(demo, demo / m) for m in manifests]
    return {
        cue: fit_linear_probe(feats[0], labels[0][cue], feats[1], labels[1][cue], num_classes=CUES[cue]).accuracy
        for cue in cues
    }
