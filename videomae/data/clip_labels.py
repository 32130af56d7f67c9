"""Labels of scanned clips for ``videomae manifest build``: the class folder a clip sits in, or a mapping file."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

__all__ = ["clip_label", "read_path_label_map"]


def read_path_label_map(path: str) -> dict[str, str]:
    """A clip -> label mapping: JSON object, or CSV with a ``label`` column and a ``path`` (or ``name``) column."""
    text = Path(path).read_text(encoding="utf-8")
    if path.lower().endswith(".json"):
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object {{clip: label}}, got {type(data).__name__}")
        return {str(k): str(v) for k, v in data.items()}
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip().lower() for c in reader.fieldnames or []]
    key = "path" if "path" in columns else "name" if "name" in columns else None
    if key is None or "label" not in columns:
        raise ValueError(
            f"{path}: a label mapping CSV needs a 'label' column and a 'path' or 'name' column "
            f"(found: {', '.join(columns) or 'no header'})"
        )
    mapping = {}
    for row in reader:
        row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
        mapping[row[key]] = row["label"]
    return mapping


def clip_label(rel: str, from_subfolders: bool, mapping: dict[str, str] | None) -> str | None:
    """The label of clip ``rel`` (relative to the scanned root): its first folder (``<class>/clip.mp4``,
    ``<class>/xxx.jpg``) with ``from_subfolders``, else its entry in ``mapping`` (by relative path, relative path
    without extension, file name, or file name without extension); ``None`` when it has none."""
    if from_subfolders:
        return rel.split("/", 1)[0] if "/" in rel else None
    return _lookup_label(mapping, rel) if mapping is not None else None


def _lookup_label(mapping: dict[str, str], rel: str) -> str | None:
    base = rel.rsplit("/", 1)[-1]
    for key in (rel, os.path.splitext(rel)[0], base, os.path.splitext(base)[0]):
        if key in mapping:
            return mapping[key]
    return None
