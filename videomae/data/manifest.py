"""Read, validate and write clip manifests.

Two kinds of file are read:

* **CSV with a header** (the format ``videomae manifest build`` writes). Required column ``path``; optional
  ``start``, ``num_frames``, ``label`` (integer id or class name), ``source``, ``text``, ``fps``, ``width``,
  ``height``, ``duration``. Other columns are kept, unchanged, in :attr:`ManifestRow.extra` and written back by
  :func:`write_manifest`, so data engineers can carry their own bookkeeping (``split``, ``youtube_id``...). A
  column whose name is a near-miss of a known one (``lable``, ``num_frame``) is refused, so a typo never silently
  turns into an ignored column.
* **The original space-separated list files** of VideoMAE / VideoMAE V2:

  ============================  ==========================  ============================================
  format name                   line                        used for
  ============================  ==========================  ============================================
  ``path``                      ``path``                    unlabelled list
  ``path_label``                ``path label``              fine-tuning on video files (Kinetics)
  ``path_start_total``          ``path start total``        pretraining lists (``total=-1``: whole video)
  ``folder_total_label``        ``folder total label``      fine-tuning on frame folders (SSv2)
  ============================  ==========================  ============================================

  ``format="auto"`` detects the kind: a first line that parses as a CSV header with a ``path`` column (or with a
  comma) is CSV; otherwise the column count decides (1, 2, 3). Three columns are ambiguous; the rule is: it is
  ``path_start_total`` when the third column is ``-1`` on some row or the second column is ``0`` or ``1`` on every
  row, else ``folder_total_label``. Pass ``format=`` to override the rule.

Every row is validated before training starts; all problems are collected and raised together as one
:class:`ManifestError` naming the file, the line and the reason.
"""

from __future__ import annotations

import csv
import difflib
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "CSV_COLUMNS",
    "LIST_FORMATS",
    "Manifest",
    "ManifestError",
    "ManifestRow",
    "read_label_map",
    "read_manifest",
    "write_manifest",
]

CSV_COLUMNS = ("path", "start", "num_frames", "label", "source", "text", "fps", "width", "height", "duration")
LIST_FORMATS = ("path", "path_label", "path_start_total", "folder_total_label")
_INT_COLUMNS = {"start": 0, "num_frames": 1, "width": 1, "height": 1}  # column -> smallest allowed value
_FLOAT_COLUMNS = ("fps", "duration")


class ManifestError(ValueError):
    """A manifest (or label map) that cannot be used.

    Attributes:
        file: the manifest path.
        line: 1-based line of the first problem (0 when the problem is the whole file).
        reason: what is wrong with that line.
        errors: every ``(line, reason)`` found, in file order.
    """

    def __init__(self, file: str, errors: Sequence[tuple[int, str]], max_report: int = 20):
        self.file = str(file)
        self.errors = list(errors)
        self.line, self.reason = self.errors[0]
        shown = [f"  {self.file}:{line}: {reason}" for line, reason in self.errors[:max_report]]
        if len(self.errors) > max_report:
            shown.append(f"  ... and {len(self.errors) - max_report} more")
        super().__init__(f"{len(self.errors)} problem(s) in manifest {self.file}:\n" + "\n".join(shown))


@dataclass
class ManifestRow:
    """One clip of a manifest.

    Attributes:
        path: the video file or frame folder, already joined to ``data_root`` when it was relative.
        start: first frame index (frame folders: index of the first file; videos: frames before it are skipped).
        num_frames: number of frames from ``start`` on (``None``: unknown, count when reading).
        label: class id (``None``: unlabelled). With class names, the id indexes ``Manifest.label_names``.
        source, text, fps, width, height, duration: optional metadata columns.
        line: 1-based line in the manifest file (0 for rows made in code).
        manifest: the manifest file the row came from.
        extra: any other CSV columns, as strings.
    """

    path: str
    start: int | None = None
    num_frames: int | None = None
    label: int | None = None
    source: str | None = None
    text: str | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    line: int = 0
    manifest: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class Manifest:
    """The rows of one manifest file plus its label space.

    Attributes:
        rows: the clips, in file order.
        label_names: class names indexed by label id, when labels were names or a label map was given.
        path: the manifest file.
        format: ``"csv"`` or one of :data:`LIST_FORMATS`.
    """

    rows: list[ManifestRow]
    label_names: list[str] | None
    path: str
    format: str = "csv"

    def __len__(self) -> int:
        return len(self.rows)


def read_label_map(path: str | os.PathLike) -> list[str]:
    """Read a label map: one class name per line, the line order gives the ids (0-based). Blank lines skipped."""
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ManifestError(str(path), [(0, f"duplicate class names in label map: {dupes[:10]}")])
    if not names:
        raise ManifestError(str(path), [(0, "label map is empty")])
    return names


def read_manifest(
    path: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    *,
    format: str = "auto",
    label_map: str | os.PathLike | Sequence[str] | None = None,
    max_errors: int = 20,
) -> Manifest:
    """Read and validate a manifest.

    Args:
        path: the manifest file (CSV with a header, or one of the original space-separated lists).
        data_root: prefix joined to relative paths.
        format: ``"auto"``, ``"csv"`` or one of :data:`LIST_FORMATS` (see the module docstring for the rule).
        label_map: class names (a file with one per line, or a list) fixing name -> id; required order for
            integer labels to get names. Without it, class-name labels get ids from the sorted unique names.
        max_errors: how many problems the error message lists (all are in ``ManifestError.errors``).

    Returns:
        The validated :class:`Manifest`.

    Raises:
        ManifestError: malformed rows (wrong column count, non-integer or negative numbers, empty path, unknown
            class names...), with every problem's line number.
    """
    path = os.fspath(path)
    if format != "auto" and format != "csv" and format not in LIST_FORMATS:
        raise ValueError(f"format={format!r}: expected 'auto', 'csv' or one of {LIST_FORMATS}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: spreadsheet exports start with a BOM
            text = f.read()
    except FileNotFoundError:
        raise ManifestError(path, [(0, "file not found")]) from None
    except UnicodeDecodeError as e:
        raise ManifestError(path, [(0, f"not UTF-8 text ({e.reason} at byte {e.start})")]) from None
    names = read_label_map(label_map) if isinstance(label_map, (str, os.PathLike)) else label_map
    names = list(names) if names is not None else None

    if format == "auto":
        format = _detect_format(path, text)
    if format == "csv":
        raw, errors = _parse_csv(path, text)
    else:
        raw, errors = _parse_list(path, text, format)
    if not raw and not errors:
        errors.append((0, "no rows"))
    rows, label_names = _finish_labels(raw, names, errors)
    if errors:
        errors.sort(key=lambda e: e[0])
        raise ManifestError(path, errors, max_report=max_errors)
    root = os.fspath(data_root) if data_root is not None else None
    for row in rows:
        row.manifest = path
        if root and not os.path.isabs(row.path):
            row.path = os.path.join(root, row.path)
    return Manifest(rows=rows, label_names=label_names, path=path, format=format)


def write_manifest(
    rows: Iterable[ManifestRow],
    path: str | os.PathLike,
    *,
    label_names: Sequence[str] | None = None,
    data_root: str | os.PathLike | None = None,
) -> None:
    """Write rows as a CSV manifest that :func:`read_manifest` reads back to the same rows.

    Args:
        rows: the clips.
        path: output file (parent folders are created).
        label_names: when given, labels are written as class names instead of ids.
        data_root: paths under this folder are written relative to it.

    Only columns that some row uses are written; ``extra`` columns follow the standard ones.
    """
    rows = list(rows)
    root = os.path.abspath(os.fspath(data_root)) if data_root is not None else None
    used = [c for c in CSV_COLUMNS if c == "path" or any(getattr(r, c) is not None for r in rows)]
    extra_cols: list[str] = []
    for r in rows:
        extra_cols += [k for k in r.extra if k not in extra_cols]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(used + extra_cols)
    for r in rows:
        values = []
        for c in used:
            v = getattr(r, c)
            if c == "path" and root is not None:
                absolute = os.path.abspath(v)
                if absolute.startswith(root + os.sep):
                    v = os.path.relpath(absolute, root)
            elif c == "label" and v is not None and label_names is not None:
                v = label_names[v]
            values.append("" if v is None else str(v))
        writer.writerow(values + [r.extra.get(k, "") for k in extra_cols])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(out.getvalue())


# ---------------------------------------------------------------------------------------------------------------
# parsing helpers; each returns rows whose `label` may still be a raw string, plus a list of (line, reason)


def _detect_format(path: str, text: str) -> str:
    lines = [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if not lines:
        raise ManifestError(path, [(0, "no rows")])
    first = next(csv.reader([lines[0][1]]))
    if "path" in [c.strip().lower() for c in first] or "," in lines[0][1]:
        return "csv"
    widths = {len(ln.split()) for _, ln in lines}
    if len(widths) > 1:
        bad = [(i, f"{len(ln.split())} columns, the first line has {len(lines[0][1].split())}") for i, ln in lines
               if len(ln.split()) != len(lines[0][1].split())]
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
    raise ManifestError(path, [(lines[0][0], f"{width} space-separated columns: not a known list format "
                                             f"({', '.join(LIST_FORMATS)}); use a CSV with a header")])


def _parse_csv(path: str, text: str) -> tuple[list[ManifestRow], list[tuple[int, str]]]:
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
            problems.append(f"column {col!r} looks like a misspelling of {close[0]!r}; rename it "
                            f"(known columns: {', '.join(CSV_COLUMNS)})")
    return problems


def _parse_list(path: str, text: str, format: str) -> tuple[list[ManifestRow], list[tuple[int, str]]]:
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
            row.label = fields[1]  # type: ignore[assignment]  # resolved in _finish_labels
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


def _finish_labels(
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
            errors.append((r.line, f"unknown class name {r.label!r}" + (f" (did you mean {hint[0]!r}?)" if hint
                                                                          else "")))
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
