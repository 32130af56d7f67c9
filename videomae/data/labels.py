"""Labels: the rule that turns a manifest's raw labels into class ids, and class-name matching shared by manifest
merging and checkpoint head remapping."""

from __future__ import annotations

import difflib

from videomae.data.manifest_types import ManifestRow

__all__ = ["normalize_class_name", "resolve_labels"]


def normalize_class_name(name: str) -> str:
    """Key for matching class names across datasets: case, quotes, underscores and spacing ignored.

    Label files of the same classes differ in case, quoting and underscores vs spaces (``air_drumming``,
    ``"air drumming"``, ``Air drumming``); Kinetics-710 merges Kinetics-400/600/700 by name.
    ``"Playing_Guitar "`` -> ``"playing guitar"``.
    """
    return " ".join(name.strip().strip("\"'").replace("_", " ").lower().split())


def resolve_labels(
    rows: list[ManifestRow], names: list[str] | None, errors: list[tuple[int, str]]
) -> tuple[list[ManifestRow], list[str] | None]:
    """Turn raw label strings into ids: integers stay ids, class names map through ``names`` or sorted names."""
    raw = [r.label for r in rows if r.label is not None]
    as_ints = all(_is_int(str(v)) for v in raw)
    if as_ints:
        for r in rows:
            if r.label is None:
                continue
            r.label = int(r.label)
            if r.label < 0:
                errors.append((r.line, f"label={r.label} must be >= 0"))
            elif names is not None and r.label >= len(names):
                errors.append((r.line, f"label={r.label} is outside the label map ({len(names)} classes)"))
        return rows, names
    if names is None:
        names = sorted({str(v) for v in raw})
    index = {n: i for i, n in enumerate(names)}
    for r in rows:
        if r.label is None:
            continue
        if str(r.label) not in index:
            hint = difflib.get_close_matches(str(r.label), names, n=1)
            errors.append(
                (r.line, f"unknown class name {r.label!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
            )
            r.label = None
        else:
            r.label = index[str(r.label)]
    return rows, names


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True
