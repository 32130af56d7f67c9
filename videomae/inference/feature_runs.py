"""What makes ``extract-features`` restartable and shardable: the recorded settings, completed files, rank indices.

A run writes ``features.json`` (model and preprocessing) before any feature, each ``.npy`` atomically, and each
rank's index rows to ``features.rank<r>.csv``; rank 0 joins those into ``features.csv`` once every rank is done.
A rerun into the same folder keeps the ``.npy`` files already there only while ``features.json`` is unchanged: a
folder whose features came from other settings is refused, since mixing them would corrupt the set.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from videomae.disk_faults import write_atomic

__all__ = [
    "FEATURE_INDEX",
    "FEATURE_SETTINGS",
    "FeatureFile",
    "FeatureSettingsError",
    "check_settings",
    "completed_clips",
    "join_indices",
    "rank_index",
    "read_index",
    "save_features",
    "weights_digest",
    "write_index",
]

FEATURE_INDEX = "features.csv"
FEATURE_SETTINGS = "features.json"
INDEX_FIELDS = ("index", "path", "file", "num_clips", "error")


class FeatureSettingsError(ValueError):
    """An output folder holds features made with other settings."""


@dataclass
class FeatureFile:
    """One manifest row's entry in ``features.csv`` (``file`` and ``num_clips`` empty/0 for an unreadable video).

    ``reused`` (not written to the index) marks a file a previous run had already completed.
    """

    index: int
    path: str
    file: str
    num_clips: int
    error: str = ""
    reused: bool = field(default=False, compare=False)


def weights_digest(source: str | os.PathLike) -> str:
    """sha256 of the weights file ``source`` (of its weight files, by name, for a folder; ``""`` when unreadable)."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix in (".safetensors", ".bin", ".pth", ".pt"))
    else:
        files = [source] if source.is_file() else []
    if not files:
        return ""
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def check_settings(out: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Refuse ``out`` when its ``features.json`` records other settings (unless ``overwrite``), else record them.

    Raises:
        FeatureSettingsError: naming the settings that differ and the fix.
    """
    path = out / FEATURE_SETTINGS
    if path.is_file() and not overwrite:
        try:
            before = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise FeatureSettingsError(f"{path}: unreadable ({err}); use a new output folder or --overwrite") from err
        changed = sorted(k for k in settings.keys() | before.keys() if before.get(k) != settings.get(k))
        if changed:
            diffs = "; ".join(f"{k}: {before.get(k)!r} there, {settings.get(k)!r} now" for k in changed)
            raise FeatureSettingsError(
                f"{path}: the features there were made with other settings ({diffs}); mixing them would corrupt "
                "the set: write to a new output folder, or pass --overwrite to redo every video"
            )
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(settings, indent=2) + "\n"))


def completed_clips(path: Path) -> int | None:
    """Clip count of a complete ``.npy`` at ``path`` (``None`` when absent or unreadable)."""
    try:
        return int(np.load(path, mmap_mode="r").shape[0])
    except (OSError, ValueError):
        return None


def save_features(path: Path, features: np.ndarray) -> None:
    """``np.save`` through a temporary file and a rename: a ``.npy`` that exists is always complete."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to the temporary name
            np.save(f, features)

    write_atomic(path, write)


def rank_index(out: Path, rank: int) -> Path:
    """Rank ``rank``'s part of the index."""
    return out / f"features.rank{rank}.csv"


def write_index(path: Path, entries: list[FeatureFile]) -> None:
    """``entries`` as an index CSV (atomically)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=INDEX_FIELDS, lineterminator="\n", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(asdict(e) for e in entries)

    write_atomic(path, write)


def read_index(path: Path) -> list[FeatureFile]:
    """The entries of an index CSV."""
    with open(path, newline="", encoding="utf-8") as f:
        return [
            FeatureFile(int(r["index"]), r["path"], r["file"], int(r["num_clips"]), r["error"])
            for r in csv.DictReader(f)
        ]


def join_indices(out: Path, world_size: int) -> list[FeatureFile]:
    """Join the ranks' index parts into ``features.csv`` in manifest order and remove the parts."""
    entries = [e for rank in range(world_size) for e in read_index(rank_index(out, rank))]
    entries.sort(key=lambda e: e.index)
    write_index(out / FEATURE_INDEX, entries)
    for rank in range(world_size):
        rank_index(out, rank).unlink()
    return entries
