"""Labels: the rule that turns a manifest's raw labels into class ids, and class-name matching shared by manifest
merging and checkpoint head remapping.

The rule (:data:`LABEL_RULE`, also in ``data_lists/SCHEMA.md``): the labels of one manifest are either all integer
class ids or all class names. A label of digits only (``3``, ``-1``) is an id; any other number (``1.5``, ``3.0``,
``1e3``, ``+2``) is refused, never taken as a name; a file that mixes ids and names is refused with the lines of
each kind, since ``3`` next to ``dog`` could be class 3 or a class called "3".
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from videomae.data.manifest_types import ManifestRow

if TYPE_CHECKING:
    from videomae.data.manifest_table import ManifestTable

__all__ = [
    "LABEL_RULE",
    "label_kind",
    "label_rule_violation",
    "merge_label_spaces",
    "normalize_class_name",
    "resolve_labels",
]

LABEL_RULE = "a manifest's labels are all integer class ids (0, 1, ...) or all class names"
_ID = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def normalize_class_name(name: str) -> str:
    """Key for matching class names across datasets: case, quotes, underscores and spacing ignored.

    Label files of the same classes differ in case, quoting and underscores vs spaces (``air_drumming``,
    ``"air drumming"``, ``Air drumming``); Kinetics-710 merges Kinetics-400/600/700 by name.
    ``"Playing_Guitar "`` -> ``"playing guitar"``.
    """
    return " ".join(name.strip().strip("\"'").replace("_", " ").lower().split())


def label_kind(raw: str) -> str:
    """``"id"`` (digits only, optionally negative), ``"number"`` (any other number: refused) or ``"name"``."""
    if _ID.fullmatch(raw):
        return "id"
    return "number" if _NUMBER.fullmatch(raw) else "name"


def label_rule_violation(labels: list[str]) -> str | None:
    """Why raw labels (not yet in a manifest, e.g. ``manifest build``'s folder names) break :data:`LABEL_RULE`,
    naming a few; ``None`` when they follow it."""
    by_kind: dict[str, list[str]] = {"id": [], "number": [], "name": []}
    for label in labels:
        by_kind[label_kind(label)].append(label)
    if by_kind["number"]:
        return f"{sorted(set(by_kind['number']))[:3]} are numbers but not integers: {LABEL_RULE}"
    if by_kind["id"] and by_kind["name"]:
        return (
            f"{sorted(set(by_kind['id']))[:3]} are class ids and {sorted(set(by_kind['name']))[:3]} class names: "
            f"{LABEL_RULE}; rename one kind"
        )
    return None


def resolve_labels(
    rows: list[ManifestRow], names: list[str] | None, errors: list[tuple[int, str]]
) -> tuple[list[ManifestRow], list[str] | None]:
    """Turn raw label strings into ids by :data:`LABEL_RULE`, appending ``(line, reason)`` for every refused label.

    Ids stay ids (checked against ``names`` when given); class names map through ``names``, or through the sorted
    unique names of the file without a label map. A refused label becomes ``None``.

    Returns:
        The rows (labels now ids or ``None``) and the class names (``names``, the sorted names, or ``None``).
    """
    labelled = [r for r in rows if r.label is not None]
    by_kind: dict[str, list[ManifestRow]] = {"id": [], "number": [], "name": []}
    for r in labelled:
        by_kind[label_kind(str(r.label))].append(r)
    for r in by_kind["number"]:
        whole = re.fullmatch(r"(-?[0-9]+)\.0*", str(r.label))
        hint = (
            f" ({whole.group(1)} written as a float, as pandas writes an integer column with empty cells)"
            if whole
            else ""
        )
        errors.append(
            (
                r.line,
                f"label {r.label!r} is a number but not an integer{hint}: {LABEL_RULE}; write the class id or "
                "the class name",
            )
        )
        r.label = None
    ids, named = by_kind["id"], by_kind["name"]
    if ids and named:  # the smaller group is refused, each row naming the first lines of the other kind
        ids_refused = len(ids) <= len(named)
        few, many = (ids, named) if ids_refused else (named, ids)
        kind, other = ("class id", "class name") if ids_refused else ("class name", "class id")
        where = ("line " if len(many) == 1 else "lines ") + ", ".join(str(r.line) for r in many[:3])
        where += f", ... ({len(many)} rows)" if len(many) > 3 else ""
        for r in few:
            errors.append(
                (
                    r.line,
                    f"label {r.label!r} is a {kind} but other rows use {other}s ({where}): "
                    f"{LABEL_RULE}; write this one as a {other}",
                )
            )
            r.label = None
        ids, named = ([], named) if ids_refused else (ids, [])
    if not named:
        for r in ids:
            r.label = int(r.label)
            if r.label < 0:
                errors.append((r.line, f"label={r.label} must be >= 0"))
            elif names is not None and r.label >= len(names):
                errors.append((r.line, f"label={r.label} is outside the label map ({len(names)} classes)"))
        return rows, names
    if names is None:
        names = sorted({str(r.label) for r in named})
    index = {n: i for i, n in enumerate(names)}
    for r in named:
        if str(r.label) not in index:
            hint = difflib.get_close_matches(str(r.label), names, n=1)
            errors.append(
                (r.line, f"unknown class name {r.label!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
            )
            r.label = None
        else:
            r.label = index[str(r.label)]
    return rows, names


def merge_label_spaces(
    manifests: Sequence[ManifestTable], label_names: Sequence[str] | None
) -> tuple[list[str] | None, np.ndarray]:
    """One label space for several manifests: by class name when they name their classes (as Kinetics-710 merges
    400/600/700), else the integer labels as they are.

    Args:
        manifests: the sources, in order.
        label_names: a fixed class list (default: the sorted union of the sources' class names).

    Returns:
        The class names (``None``: integer labels without names) and every row's id in that space, concatenated
        over the sources (``int64``, -1 for unlabelled rows).

    Raises:
        ValueError: some sources name their classes and others have bare integer labels, or a source has classes
            that ``label_names`` lacks.
    """
    labelled = [m for m in manifests if (m.labels >= 0).any()]
    named = [m for m in labelled if m.label_names is not None]
    if not named and label_names is None:
        return None, np.concatenate([m.labels for m in manifests])
    if len(named) != len(labelled):
        unnamed = [m.path for m in labelled if m.label_names is None]
        raise ValueError(
            f"cannot merge labels: {unnamed} have integer labels without class names while other "
            "sources name their classes; give those manifests class-name labels or a label map"
        )
    names = list(label_names) if label_names is not None else sorted({n for m in named for n in m.label_names})
    index = {n: i for i, n in enumerate(names)}
    merged = []
    for m in manifests:
        labels = m.labels
        if m.label_names:  # old id -> new id, unlabelled rows stay -1
            missing = [n for n in m.label_names if n not in index]
            if missing:
                raise ValueError(f"{m.path}: classes {missing[:10]} are not in the given label_names")
            remap = np.array([index[n] for n in m.label_names], np.int64)
            labels = np.where(labels >= 0, remap[np.maximum(labels, 0)], -1)
        merged.append(labels)
    return names, np.concatenate(merged)
