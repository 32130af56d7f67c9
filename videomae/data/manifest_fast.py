"""The fast path of :func:`~videomae.data.manifest.read_manifest_table`: a manifest read with numpy.

It takes a file only when every line is one record with the same number of fields (after a CSV header), no field
has leading or trailing whitespace (lists: fields separated by single spaces), and every value passes the
line-by-line parser's own rules; then it gives the rows that parser would give. Everything else (a record over
several lines, a NUL byte, old Mac line endings, tabs in a list, any invalid value...) returns ``None`` and the
caller reads the file line by line, which accepts what it can and names the line of every problem. So this module
holds no rule of its own: values are checked by :func:`~videomae.data.manifest_parse.parse_value` /
:func:`~videomae.data.manifest_parse.list_value`, labels by :func:`~videomae.data.labels.resolve_labels` and the
three-column list rule by :func:`~videomae.data.manifest_parse.three_column_format`, each applied once per
*distinct* value of a column; the conditions above only decide which files are simple enough to read in bulk.

The work is a few passes of numpy over the file's bytes: line ends and separators are found with ``flatnonzero``,
the separators of line ``i`` give its fields, and columns are gathered into the buffers of a
:class:`~videomae.data.manifest_table.ManifestTable`. CSV lines that hold a quote are parsed one by one with
:mod:`csv` (as the line-by-line parser does) and their fields appended to the buffer.
"""

from __future__ import annotations

import csv
import math
import re

import numpy as np

from videomae.data.labels import resolve_labels
from videomae.data.manifest_parse import (
    LIST_FIELDS,
    check_header,
    detect_format,
    list_value,
    parse_value,
    three_column_format,
)
from videomae.data.manifest_table import FLOAT_COLUMNS, INT_COLUMNS, TEXT_COLUMNS, ManifestTable, StringColumn
from videomae.data.manifest_types import ManifestError, ManifestRow

__all__ = ["fast_table"]

_NEWLINE, _CR, _SPACE, _COMMA, _QUOTE, _SEMICOLON = 10, 13, 32, 44, 34, 59
_ASCII_SPACE = np.zeros(256, bool)
_ASCII_SPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True  # what str.strip() and str.split() see below 0x80
_LIST_BREAKS = _ASCII_SPACE.copy()
_LIST_BREAKS[[_NEWLINE, _CR, _SPACE]] = False  # line endings (\r only in \r\n) and the separator
_UNICODE_SPACE = re.compile(r"[^\S\r\n ]")  # any other whitespace, as str.split() sees it
_CHUNK = 1 << 16  # rows per gather step: bounds the temporary index arrays
_MAX_VALUE_BYTES = 64  # value columns wider than this are left to the line-by-line parser
_STANDARD = frozenset(("path",) + TEXT_COLUMNS + INT_COLUMNS + FLOAT_COLUMNS)


class _NotSimple(Exception):
    """The file is not one the fast path reads; the line-by-line parser takes it."""


def fast_table(path: str, format: str, names: list[str] | None, data_root: str | None) -> ManifestTable | None:
    """The table of a simple manifest (see the module docstring), or ``None`` to read it line by line.

    Args:
        path: the manifest file.
        format: ``"auto"``, ``"csv"`` or a list format.
        names: the label map, if any.
        data_root: prefix of relative paths (joined when a row is read).
    """
    try:
        with open(path, "rb") as f:
            data = f.read().removeprefix(b"\xef\xbb\xbf")
        buf = np.frombuffer(data, np.uint8)
        text = data.decode("utf-8") if buf.size and buf.max() >= 0x80 else None  # invalid: the careful reader names it
        lines = _lines(data, buf)
        starts, stops, _ = lines
        first = data[starts[0] : stops[0]].decode()
        detected = detect_format(path, [first]) if format == "auto" else format  # CSV or not: the first line decides
        if detected == "csv":
            header = [f.strip().lower() for f in next(csv.reader([first + "\n"], strict=True))]
            if check_header(header):
                raise _NotSimple
            return _csv_table(path, data, buf, lines, header, names, data_root)
        return _list_table(path, data, buf, text, lines, detected, format == "auto", names, data_root)
    except (OSError, UnicodeDecodeError, ManifestError, csv.Error, _NotSimple):
        return None


def _csv_table(path: str, data: bytes, buf: np.ndarray, lines, header: list[str], names, root) -> ManifestTable:
    starts, stops, numbers_of_lines = lines
    fs, fe, buf = _fields(data, buf, starts, stops, len(header), first_row=1, sep=_COMMA)
    _check_edges(buf, fs, fe)
    columns = dict(zip(header, zip(fs, fe)))
    numbers = {}
    for col in INT_COLUMNS + FLOAT_COLUMNS:
        if col in columns and col != "label":
            values, inverse = _distinct(buf, *columns[col])
            errors: list[tuple[int, str]] = []
            parsed = [parse_value(col, v, 0, errors) if v else None for v in values]
            numbers[col] = _column(col, parsed, inverse, errors)
    label_names = names
    if "label" in columns:
        numbers["label"], label_names = _labels(*_distinct(buf, *columns["label"]), names)
    return ManifestTable(
        path=path,
        format="csv",
        label_names=label_names,
        paths=_paths(buf, *columns["path"]),
        lines=numbers_of_lines[1:],
        numbers=numbers,
        texts={col: _gather(buf, *columns[col]) for col in TEXT_COLUMNS if col in columns},
        extra={col: _gather(buf, *span) for col, span in columns.items() if col not in _STANDARD},
        data_root=root,
    )


def _list_table(
    path: str, data: bytes, buf: np.ndarray, text: str | None, lines, format: str, auto: bool, names, root
) -> ManifestTable:
    """A list file whose fields are separated by single spaces (where ``str.split()`` finds the same fields)."""
    starts, stops, numbers_of_lines = lines
    if _LIST_BREAKS[buf].any() or (text is not None and _UNICODE_SPACE.search(text)):
        raise _NotSimple  # tabs, form feeds, unicode spaces: split() splits there too
    if auto and (buf == _SEMICOLON).any():
        raise _NotSimple  # the separator rule looks at every line: the careful reader applies it
    width = len(LIST_FIELDS[format])
    fs, fe, buf = _fields(data, buf, starts, stops, width, first_row=0, sep=_SPACE)
    if (fe <= fs).any():
        raise _NotSimple  # leading, trailing or double spaces
    distinct = [_distinct(buf, s, e) for s, e in zip(fs[1:], fe[1:])]
    if auto and width == 3:  # the rule looks at every line's values: here, at every distinct value
        format = three_column_format(set(distinct[0][0]), set(distinct[1][0]))
    numbers, label_names = {}, names
    for field, (values, inverse) in zip(LIST_FIELDS[format][1:], distinct):
        if field == "label":
            numbers["label"], label_names = _labels(values, inverse, names)
            continue
        errors: list[tuple[int, str]] = []
        parsed = [list_value(format, field, v, 0, errors) for v in values]
        col = parsed[0][0]
        numbers[col] = _column(col, [value for _, value in parsed], inverse, errors)
    return ManifestTable(
        path=path,
        format=format,
        label_names=label_names,
        paths=_paths(buf, fs[0], fe[0]),
        lines=numbers_of_lines,
        numbers=numbers,
        data_root=root,
    )


def _column(col: str, parsed: list, inverse: np.ndarray, errors: list[tuple[int, str]]) -> np.ndarray:
    """A number column from its parsed distinct values (``None``: absent)."""
    if errors:
        raise _NotSimple  # the careful reader names every line
    absent, dtype = (math.nan, np.float64) if col in FLOAT_COLUMNS else (-1, np.int64)
    return np.array([absent if v is None else v for v in parsed], dtype)[inverse]


def _labels(values: list[str], inverse: np.ndarray, names: list[str] | None) -> tuple[np.ndarray, list[str] | None]:
    """Label ids from the distinct raw labels, by :func:`resolve_labels`; and the class names."""
    distinct = [ManifestRow(path="", label=v or None) for v in values]  # type: ignore[arg-type]
    errors: list[tuple[int, str]] = []
    distinct, label_names = resolve_labels(distinct, names, errors)
    if errors:
        raise _NotSimple
    return np.array([-1 if r.label is None else r.label for r in distinct], np.int64)[inverse], label_names


def _paths(buf: np.ndarray, fs: np.ndarray, fe: np.ndarray) -> StringColumn:
    if (fe <= fs).any():
        raise _NotSimple  # an empty path: the careful reader names it
    return _gather(buf, fs, fe)


def _lines(data: bytes, buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start, stop (line ending excluded) and 1-based number of every line that is not empty (the line-by-line
    parser skips those too); refuses NUL bytes and ``\\r`` other than in ``\\r\\n``."""
    if not buf.size or not buf.all():
        raise _NotSimple
    ends = np.flatnonzero(buf == _NEWLINE)
    if not data.endswith(b"\n"):
        ends = np.append(ends, len(buf))
    starts = np.concatenate(([0], ends[:-1] + 1))
    crlf = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == _CR)
    if np.count_nonzero(buf == _CR) != np.count_nonzero(crlf):
        raise _NotSimple
    stops = ends - crlf
    filled = np.flatnonzero(stops > starts)
    if len(filled) < 2:
        raise _NotSimple  # no rows: the line-by-line parser says so
    return starts[filled], stops[filled], filled + 1


def _fields(
    data: bytes, buf: np.ndarray, starts: np.ndarray, stops: np.ndarray, width: int, first_row: int, sep: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(field starts, field stops, buffer)``, each ``[width, rows]``, of the lines from ``first_row`` on, split at
    ``sep``; with commas, the lines that hold a quote are parsed by :mod:`csv` and their fields appended to the
    buffer."""
    quoted = np.zeros(len(starts), bool)  # line j holds the positions starts[j] <= p < stops[j]
    if sep == _COMMA:
        quoted[np.searchsorted(stops, np.flatnonzero(buf == _QUOTE), side="right")] = True
        quoted[:first_row] = False
    cuts = np.flatnonzero(buf == sep)
    line_of = np.searchsorted(stops, cuts, side="right")
    keep = ~quoted[line_of] & (line_of >= first_row)
    cuts, line_of = cuts[keep], line_of[keep]
    plain = ~quoted
    plain[:first_row] = False
    if (np.bincount(line_of, minlength=len(starts))[plain] != width - 1).any():
        raise _NotSimple  # a wrong number of columns: the line-by-line parser names the line
    fs = np.empty((width, len(starts) - first_row), np.int64)
    fe = np.empty_like(fs)
    lines = np.flatnonzero(plain)
    rows = lines - first_row
    cuts = cuts.reshape(len(lines), width - 1).T  # (width - 1, plain rows)
    fs[0, rows], fs[1:, rows] = starts[lines], cuts + 1
    fe[:-1, rows], fe[-1, rows] = cuts, stops[lines]
    appended, at = [], len(buf)
    for line in np.flatnonzero(quoted):
        try:
            record = next(csv.reader([data[starts[line] : stops[line]].decode() + "\n"], strict=True))
        except csv.Error as e:  # also a quoted line break: the record goes on past this line
            raise _NotSimple from e
        if len(record) != width:
            raise _NotSimple
        for j, value in enumerate(record):
            encoded = value.encode()
            fs[j, line - first_row], at = at, at + len(encoded)
            fe[j, line - first_row] = at
            appended.append(encoded)
    if appended:
        buf = np.concatenate((buf, np.frombuffer(b"".join(appended), np.uint8)))
    return fs, fe, buf


def _check_edges(buf: np.ndarray, fs: np.ndarray, fe: np.ndarray) -> None:
    """Refuses fields with leading or trailing whitespace (the line-by-line parser strips them)."""
    filled = fe > fs
    first, last = buf[fs[filled]], buf[fe[filled] - 1]
    if _ASCII_SPACE[first].any() or _ASCII_SPACE[last].any():
        raise _NotSimple
    wide = (first >= 0x80) | (last >= 0x80)
    for s, e in zip(fs[filled][wide], fe[filled][wide]):  # non-ASCII edges: unicode spaces are stripped too
        value = buf[s:e].tobytes().decode()
        if value != value.strip():
            raise _NotSimple


def _gather(buf: np.ndarray, fs: np.ndarray, fe: np.ndarray) -> StringColumn:
    """The fields ``buf[fs[i]:fe[i]]`` as one contiguous column."""
    lengths = fe - fs
    offsets = np.zeros(len(fs) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    out = np.empty(int(offsets[-1]), np.uint8)
    for a in range(0, len(fs), _CHUNK):
        b = min(a + _CHUNK, len(fs))
        lo, hi = offsets[a], offsets[b]
        out[lo:hi] = buf[np.arange(lo, hi) + np.repeat(fs[a:b] - offsets[a:b], lengths[a:b])]
    return StringColumn(out.tobytes(), offsets)


def _distinct(buf: np.ndarray, fs: np.ndarray, fe: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The distinct values of a column and, per row, the index of its value."""
    lengths = fe - fs
    width = int(lengths.max())
    if width > _MAX_VALUE_BYTES:
        raise _NotSimple
    words = max(-(-width // 8), 1)
    padded = np.zeros((len(fs), 8 * words), np.uint8)  # NUL padding: the file holds no NUL byte
    steps = np.arange(width)
    for a in range(0, len(fs), _CHUNK):
        b = min(a + _CHUNK, len(fs))
        inside = steps < lengths[a:b, None]
        padded[a:b, :width][inside] = buf[(fs[a:b, None] + steps)[inside]]
    # sorting 8-byte keys is fast, sorting strings is not: one key per value, exact for values of <= 8 bytes
    keys = padded.view(np.uint64)  # (rows, words)
    key = keys[:, 0].copy()
    for j in range(1, words):
        key = key * np.uint64(0x100000001B3) ^ keys[:, j]
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    if words > 1 and not (padded == padded[first][inverse]).all():  # two values share a key
        _, first, inverse = np.unique(padded.view(f"V{8 * words}").ravel(), return_index=True, return_inverse=True)
        inverse = inverse.ravel()
    return [padded[i].tobytes().rstrip(b"\0").decode() for i in first], inverse
