"""Captioned copies of the demo manifests for MAE-CLIP tests (until ``videomae demo-data`` writes captions itself):
each row's ``text`` says what its class shows, in one of a few phrasings.

Not a test module: test modules import from here (tests/ is on sys.path under pytest's default import mode).
"""

from __future__ import annotations

import csv
from pathlib import Path

PHRASINGS = ("a {shape} moving {dir}", "the {shape} goes {dir}", "a {shape} drifting {dir} slowly", "{shape}, {dir}")


def caption(label: str, row: int) -> str:
    """A caption of a demo class name (``square_up``), phrased by ``row``."""
    shape, direction = label.split("_")
    return PHRASINGS[row % len(PHRASINGS)].format(shape=shape, dir=direction)


def captioned_manifest(source: Path, out: Path) -> Path:
    """``source`` (a labelled demo manifest) with a ``text`` column of captions, written to ``out``."""
    with source.open(newline="") as f:
        rows = list(csv.DictReader(f))
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys([*rows[0], "text"])))  # demo rows carry text now
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({**row, "text": caption(row["label"], i)})
    return out
