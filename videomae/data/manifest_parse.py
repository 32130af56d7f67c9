"""Manifest text -> rows: format detection, the CSV and list-format parsers, header and number checks.

Each parser returns rows whose ``label`` may still be a raw string (resolved by
:func:`videomae.data.labels.resolve_labels`), plus a list of ``(line, reason)``.
"""

from __future__ import annotations

import csv
import difflib
import io

from videomae.data.manifest_types import CSV_COLUMNS, LIST_FORMATS, ManifestError, ManifestRow

__all__ = ["detect_format", "parse_csv", "parse_list"]

_INT_COLUMNS = {"start": 0, "num_frames": 1, "width": 1, "height": 1}  # column -> smallest allowed value
_FLOAT_COLUMNS = ("fps", "duration")


def detect_format(path: str, text: str) -> str:
    lines = [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if not lines:
        raise ManifestError(path, [(0, "no rows")])
    first = next(csv.reader([lines[0][1]]))
    if "path" in [c.strip().lower() for c in first] or "," in lines[0][1]:
        return "csv"
    widths = {len(ln.split()) for _, ln in lines}
    if len(widths) > 1:
        bad = [
            (i, f"{len(ln.split())} columns, the first line has {len(lines[0][1].split())}")
            for i, ln in lines
            if len(ln.split()) != len(lines[0][1].split())
        ]
        raise ManifestError(path, bad)
    width = widths.pop()
    if width == 1:
        return "path"
    if width == 2:
        return "path_label"
    if width == 3:
        cols = [ln.split() for _, ln in lines]
        if any(c[2] == "-1" for c in cols) or all(c[1] in ("0", "1") for c in cols):
            return "path_start_total"
        return "folder_total_label"
    raise ManifestError(
        path,
        [
            (
                lines[0][0],
                f"{width} space-separated columns: not a known list format "
                f"({', '.join(LIST_FORMATS)}); use a CSV with a header",
            )
        ],
    )


def parse_csv(path: str, text: str) -> tuple[list[ManifestRow], list[tuple[int, str]]]:
    errors: list[tuple[int, str]] = []
    rows: list[ManifestRow] = []
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    for fields in reader:
        line = reader.line_num
        if not any(f.strip() for f in fields):
            continue
        if header is None:
            header = [f.strip().lower() for f in fields]
            problems = _check_header(header)
            if problems:
                raise ManifestError(path, [(line, p) for p in problems])
            continue
        if len(fields) != len(header):
            errors.append((line, f"{len(fields)} columns, the header has {len(header)}"))
            continue
        values = dict(zip(header, (f.strip() for f in fields)))
        row = ManifestRow(path=values.pop("path"), line=line)
        if not row.path:
            errors.append((line, "empty path"))
        for col in CSV_COLUMNS[1:]:
            raw = values.pop(col, "")
            if raw == "":
                continue
            if col in _INT_COLUMNS:
                value = _parse_int(raw, col, _INT_COLUMNS[col], line, errors)
            elif col in _FLOAT_COLUMNS:
                value = _parse_float(raw, col, line, errors)
            else:
                value = raw
            setattr(row, col, value)
        row.extra = values
        rows.append(row)
    if header is None:
        raise ManifestError(path, [(0, "no header and no rows")])
    return rows, errors


def _check_header(header: list[str]) -> list[str]:
    problems = []
    if "path" not in header:
        problems.append(f"the CSV header has no 'path' column (found: {', '.join(header)})")
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        problems.append(f"duplicate columns in the header: {dupes}")
    if "" in header:
        problems.append("empty column name in the header")
    for col in header:
        if col in CSV_COLUMNS or not col:
            continue
        close = difflib.get_close_matches(col, CSV_COLUMNS, n=1, cutoff=0.8)
        if close:
            problems.append(
                f"column {col!r} looks like a misspelling of {close[0]!r}; rename it "
                f"(known columns: {', '.join(CSV_COLUMNS)})"
            )
    return problems


def parse_list(path: str, text: str, format: str) -> tuple[list[ManifestRow], list[tuple[int, str]]]:
    width = {"path": 1, "path_label": 2, "path_start_total": 3, "folder_total_label": 3}[format]
    errors: list[tuple[int, str]] = []
    rows: list[ManifestRow] = []
    for line, ln in enumerate(text.splitlines(), 1):
        fields = ln.split()
        if not fields:
            continue
        if len(fields) != width:
            errors.append((line, f"{len(fields)} columns, format {format!r} has {width}"))
            continue
        row = ManifestRow(path=fields[0], line=line)
        if format == "path_label":
            row.label = fields[1]  # type: ignore[assignment]  # resolved in resolve_labels
        elif format == "path_start_total":
            row.start = _parse_int(fields[1], "start", 0, line, errors)
            if fields[2] != "-1":
                row.num_frames = _parse_int(fields[2], "total", 1, line, errors)
        elif format == "folder_total_label":
            row.num_frames = _parse_int(fields[1], "total", 1, line, errors)
            row.label = fields[2]  # type: ignore[assignment]
        rows.append(row)
    return rows, errors


def _parse_int(raw: str, col: str, minimum: int, line: int, errors: list[tuple[int, str]]) -> int | None:
    try:
        value = int(raw)
    except ValueError:
        errors.append((line, f"{col}={raw!r} is not an integer"))
        return None
    if value < minimum:
        errors.append((line, f"{col}={value} must be >= {minimum}"))
        return None
    return value


def _parse_float(raw: str, col: str, line: int, errors: list[tuple[int, str]]) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        errors.append((line, f"{col}={raw!r} is not a number"))
        return None
    if not value > 0 or value == float("inf"):
        errors.append((line, f"{col}={raw} must be a positive finite number"))
        return None
    return value
