"""Manifest text -> rows: line cleaning, format detection, the CSV and list-format parsers, header and number checks.

:func:`parse_text` is the one entry point (``read_manifest`` and ``manifest check`` both use it); the parsers
return rows whose ``label`` is still the raw string, resolved by :func:`videomae.data.labels.resolve_labels`.
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Sequence

from videomae.data.labels import resolve_labels
from videomae.data.manifest_lines import clean_lines, csv_records, line_content, multiline_quote, split_lines
from videomae.data.manifest_types import CSV_COLUMNS, LIST_FORMATS, ManifestError, ManifestFormatError, ManifestRow

__all__ = [
    "LIST_FIELDS",
    "check_header",
    "detect_format",
    "list_value",
    "parse_csv",
    "parse_list",
    "parse_text",
    "parse_value",
    "three_column_format",
]

_INT_COLUMNS = {"start": 0, "num_frames": 1, "width": 1, "height": 1}  # column -> smallest allowed value
_FLOAT_COLUMNS = ("fps", "duration")
_MULTILINE_COLUMNS = ("text",)  # standard columns where a quoted line break is content, not a misplaced quote
_OTHER_SEPARATORS = ((";", "semicolons"), ("\t", "tabs"), (None, "spaces"))


def parse_text(
    path: str, text: str, format: str = "auto", names: Sequence[str] | None = None, max_errors: int = 20
) -> tuple[list[ManifestRow], list[str] | None, str]:
    """Parse and validate a manifest's text (without a byte-order mark).

    Args:
        path: the file, for messages.
        text: its content.
        format: ``"auto"``, ``"csv"`` or one of :data:`LIST_FORMATS`.
        names: the label map, if any.
        max_errors: how many problems the error message lists.

    Returns:
        The rows (paths as written, ``line`` set), the class names, and the format.

    Raises:
        ManifestFormatError: the file as a whole is unusable (header, separator, format, no rows).
        ManifestError: some rows are bad; every problem has its line.
    """
    lines = split_lines(text)
    contents, errors = clean_lines(lines)
    first = next((n for n, line in enumerate(lines, 1) if line_content(line).strip()), 0)
    if any(n == first for n, _ in errors):  # the header (or the line the format is detected from) is damaged
        raise ManifestFormatError(path, [e for e in errors if e[0] == first])
    if format == "auto":
        format = detect_format(path, contents)
    rows, row_errors = parse_csv(path, contents) if format == "csv" else parse_list(path, contents, format)
    errors += row_errors
    if not rows and not errors:
        raise ManifestFormatError(path, [(0, "no rows")])
    rows, label_names = resolve_labels(rows, list(names) if names is not None else None, errors)
    if errors:
        errors.sort(key=lambda e: e[0])
        raise ManifestError(path, errors, max_report=max_errors)
    return rows, label_names, format


def detect_format(path: str, contents: list[str]) -> str:
    """The format of line contents by the rule of ``videomae.data.manifest``; refuses other separators."""
    lines = [(i, ln) for i, ln in enumerate(contents, 1) if ln.strip()]
    if not lines:
        raise ManifestFormatError(path, [(0, "no rows")])
    first = next(csv.reader([lines[0][1]]))
    if "path" in [c.strip().lower() for c in first] or "," in lines[0][1]:
        return "csv"
    _refuse_other_separators(path, lines)
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
        return three_column_format({c[1] for c in cols}, {c[2] for c in cols})
    raise ManifestFormatError(
        path,
        [
            (
                lines[0][0],
                f"{width} space-separated columns: not a known list format "
                f"({', '.join(LIST_FORMATS)}); use a CSV with a header",
            )
        ],
    )


def three_column_format(seconds: set[str], thirds: set[str]) -> str:
    """The rule for three-column lists, from the values of their second and third columns."""
    return "path_start_total" if "-1" in thirds or seconds <= {"0", "1"} else "folder_total_label"


def _refuse_other_separators(path: str, lines: list[tuple[int, str]]) -> None:
    """A first line without a comma that is a header split by ``;``, tabs or spaces (it names ``path`` and
    another column), or a file whose every line holds the same number of ``;``, is a CSV export with another
    separator: refused, never read as a list whose first row is the header."""
    number, first = lines[0]
    for sep, name in _OTHER_SEPARATORS:
        cells = [c.strip().strip('"').lower() for c in first.split(sep)]
        if len(cells) > 1 and "path" in cells and any(c in CSV_COLUMNS for c in cells if c != "path"):
            raise ManifestFormatError(
                path,
                [
                    (
                        number,
                        f"the header {first.strip()!r} is separated by {name}: manifests are comma-separated; "
                        "use commas (e.g. export the CSV with ',' as the delimiter)",
                    )
                ],
            )
    counts = {ln.count(";") for _, ln in lines}
    if len(counts) == 1 and counts != {0}:
        raise ManifestFormatError(
            path,
            [
                (
                    number,
                    "every line is separated by semicolons: manifests are comma-separated CSV (with a header) or "
                    "space-separated lists; use commas",
                )
            ],
        )


def parse_csv(path: str, contents: list[str]) -> tuple[list[ManifestRow], list[tuple[int, str]]]:
    """Rows of a CSV manifest; each row's ``line`` is the line its record starts on."""
    records, errors = csv_records(contents)
    rows: list[ManifestRow] = []
    header: list[str] | None = None
    header_line = 0
    for record in records:
        fields, line = record.fields, record.first
        if not any(f.strip() for f in fields):
            continue
        if header is None:
            header, header_line = [f.strip().lower() for f in fields], line
            problems = check_header(header)
            if problems:
                raise ManifestFormatError(path, [(line, p) for p in problems])
            continue
        span = f" (one record over lines {record.first}-{record.last})" if record.last > record.first else ""
        if len(fields) != len(header):
            errors.append((line, f"{len(fields)} columns, the header has {len(header)}{span}"))
            continue
        values = dict(zip(header, (f.strip() for f in fields)))
        broken = [c for c in header if c in CSV_COLUMNS and c not in _MULTILINE_COLUMNS and "\n" in values[c]]
        if broken:
            opened = multiline_quote(contents, record.first, record.last)
            errors.append(
                (
                    opened[0] if opened else line,
                    f'column {broken[0]!r} holds a line break: a quote (") '
                    f"opens on this line and closes on line {record.last}; "
                    "close it on this line or remove it",
                )
            )
            continue
        row = ManifestRow(path=values.pop("path"), line=line)
        if not row.path:
            errors.append((line, "empty path"))
        for col in CSV_COLUMNS[1:]:
            raw = values.pop(col, "")
            if raw != "":
                setattr(row, col, parse_value(col, raw, line, errors))
        row.extra = values
        rows.append(row)
    early = [e for e in errors if header is None or e[0] <= header_line]
    if header is None or early:  # the header itself is not valid CSV: nothing after it can be trusted
        raise ManifestFormatError(path, early or [(0, "no header and no rows")])
    return rows, errors


def parse_value(col: str, raw: str, line: int, errors: list[tuple[int, str]]) -> int | float | str | None:
    """A standard column's non-empty, stripped CSV field as its type (``label`` stays the raw string, resolved by
    :func:`~videomae.data.labels.resolve_labels`); a refused value appends ``(line, reason)`` and gives ``None``."""
    if col in _INT_COLUMNS:
        return _parse_int(raw, col, _INT_COLUMNS[col], line, errors)
    if col in _FLOAT_COLUMNS:
        return _parse_float(raw, col, line, errors)
    return raw


def check_header(header: list[str]) -> list[str]:
    """The problems of a CSV header (lower-cased, stripped names); empty when it is usable."""
    problems = []
    if "path" not in header:
        other = next((name for sep, name in _OTHER_SEPARATORS if sep and any(sep in c for c in header)), None)
        hint = f"; it looks separated by {other}: use commas" if other else ""
        problems.append(f"the CSV header has no 'path' column (found: {', '.join(header)}){hint}")
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


LIST_FIELDS = {
    "path": ("path",),
    "path_label": ("path", "label"),
    "path_start_total": ("path", "start", "total"),
    "folder_total_label": ("path", "total", "label"),
}
"""The fields of each list format, in line order."""


def list_value(format: str, field: str, raw: str, line: int, errors: list[tuple[int, str]]) -> tuple[str, object]:
    """A list-format field as ``(ManifestRow attribute, value)``; ``label`` stays the raw string (resolved by
    :func:`~videomae.data.labels.resolve_labels`); a refused value appends ``(line, reason)`` and gives ``None``."""
    if field == "start":
        return "start", _parse_int(raw, "start", 0, line, errors)
    if field == "total":
        if format == "path_start_total" and raw == "-1":  # -1: the whole video
            return "num_frames", None
        return "num_frames", _parse_int(raw, "total", 1, line, errors)
    return field, raw


def parse_list(path: str, contents: list[str], format: str) -> tuple[list[ManifestRow], list[tuple[int, str]]]:
    """Rows of one of the original space-separated list formats."""
    fields_of = LIST_FIELDS[format]
    errors: list[tuple[int, str]] = []
    rows: list[ManifestRow] = []
    for line, ln in enumerate(contents, 1):
        fields = ln.split()
        if not fields:
            continue
        if len(fields) != len(fields_of):
            errors.append((line, f"{len(fields)} columns, format {format!r} has {len(fields_of)}"))
            continue
        row = ManifestRow(path=fields[0], line=line)
        for name, raw in zip(fields_of[1:], fields[1:]):
            attr, value = list_value(format, name, raw, line, errors)
            setattr(row, attr, value)
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
