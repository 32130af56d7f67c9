"""The fast path of :func:`~videomae.data.manifest.read_manifest_table`: a CSV manifest read with numpy.

It takes a file only when every line after the header is one record with the header's number of fields, no field
has leading or trailing whitespace, and every value passes the line-by-line parser's own rules; then it gives the
rows that parser would give. Everything else (list formats, blank lines, a record over several lines, a NUL byte,
old Mac line endings, any invalid value) returns ``None`` and the caller reads the file line by line, which
accepts what it can and names the line of every problem. So this module holds no rule of its own: values are
checked by :func:`~videomae.data.manifest_parse.parse_value` and labels by
:func:`~videomae.data.labels.resolve_labels`, each applied once per *distinct* value of the column; the conditions
above only decide which files are simple enough to read in bulk.

The work is a few passes of numpy over the file's bytes: line ends and commas are found with ``flatnonzero``, the
commas of line ``i`` give its fields, and columns are gathered into the buffers of a
:class:`~videomae.data.manifest_table.ManifestTable`. Lines that hold a quote are parsed one by one with :mod:`csv`
(as the line-by-line parser does) and their fields appended to the buffer.
"""

from __future__ import annotations

import csv
import math

import numpy as np

from videomae.data.labels import resolve_labels
from videomae.data.manifest_parse import check_header, detect_format, parse_value
from videomae.data.manifest_table import FLOAT_COLUMNS, INT_COLUMNS, ManifestTable, StringColumn
from videomae.data.manifest_types import ManifestError, ManifestRow

__all__ = ["fast_csv_table"]

_NEWLINE, _CR, _COMMA, _QUOTE = 10, 13, 44, 34
_ASCII_SPACE = np.zeros(256, bool)
_ASCII_SPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True  # what str.strip() removes below 0x80
_CHUNK = 1 << 16  # rows per gather step: bounds the temporary index arrays
_MAX_VALUE_BYTES = 64  # value columns wider than this are left to the line-by-line parser
_STANDARD = frozenset(("path", "source", "text") + INT_COLUMNS + FLOAT_COLUMNS)


class _NotSimple(Exception):
    """The file is not one the fast path reads; the line-by-line parser takes it."""


def fast_csv_table(path: str, format: str, names: list[str] | None, data_root: str | None) -> ManifestTable | None:
    """The table of a simple CSV manifest (see the module docstring), or ``None`` to read it line by line.

    Args:
        path: the manifest file.
        format: ``"auto"`` or ``"csv"``.
        names: the label map, if any.
        data_root: prefix of relative paths (joined when a row is read).
    """
    try:
        with open(path, "rb") as f:
            data = f.read().removeprefix(b"\xef\xbb\xbf")
        buf = np.frombuffer(data, np.uint8)
        if buf.size and buf.max() >= 0x80:
            data.decode("utf-8")  # the line-by-line reader names the byte
        return _table(path, data, buf, format, names, data_root)
    except (OSError, UnicodeDecodeError, _NotSimple):
        return None


def _table(
    path: str, data: bytes, buf: np.ndarray, format: str, names: list[str] | None, root: str | None
) -> ManifestTable:
    starts, stops, numbers_of_lines = _lines(data, buf)
    header = _header(path, data[starts[0] : stops[0]].decode(), format)
    fs, fe, buf = _fields(data, buf, starts, stops, len(header))
    _check_edges(buf, fs, fe)
    columns = dict(zip(header, zip(fs, fe)))
    numbers = {}
    for col in INT_COLUMNS + FLOAT_COLUMNS:
        if col in columns and col != "label":
            values, inverse = _distinct(buf, *columns[col])
            errors: list[tuple[int, str]] = []
            parsed = [parse_value(col, v, 0, errors) if v else None for v in values]
            if errors:
                raise _NotSimple
            absent, dtype = (math.nan, np.float64) if col in FLOAT_COLUMNS else (-1, np.int64)
            numbers[col] = np.array([absent if v is None else v for v in parsed], dtype)[inverse]
    label_names = names
    if "label" in columns:
        values, inverse = _distinct(buf, *columns["label"])
        distinct = [ManifestRow(path="", label=v or None) for v in values]  # type: ignore[arg-type]
        errors = []
        distinct, label_names = resolve_labels(distinct, names, errors)
        if errors:
            raise _NotSimple
        numbers["label"] = np.array([-1 if r.label is None else r.label for r in distinct], np.int64)[inverse]
    paths = _gather(buf, *columns["path"])
    if (np.diff(paths.offsets) == 0).any():
        raise _NotSimple  # an empty path: the line-by-line parser names it
    return ManifestTable(
        path=path,
        format="csv",
        label_names=label_names,
        paths=paths,
        lines=numbers_of_lines[1:],
        numbers=numbers,
        texts={col: _gather(buf, *columns[col]) for col in ("source", "text") if col in columns},
        extra={col: _gather(buf, *span) for col, span in columns.items() if col not in _STANDARD},
        data_root=root,
    )


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


def _header(path: str, first: str, format: str) -> list[str]:
    try:
        if format == "auto" and detect_format(path, [first]) != "csv":
            raise _NotSimple
        header = [f.strip().lower() for f in next(csv.reader([first + "\n"], strict=True))]
    except (ManifestError, csv.Error) as e:
        raise _NotSimple from e
    if check_header(header):
        raise _NotSimple
    return header


def _fields(
    data: bytes, buf: np.ndarray, starts: np.ndarray, stops: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(field starts, field stops, buffer)``, each ``[width, rows]``; the fields of lines with quotes are parsed
    by :mod:`csv` and appended to the buffer."""
    quoted = np.zeros(len(starts), bool)  # line j holds the positions starts[j] <= p < stops[j]
    quoted[np.searchsorted(stops, np.flatnonzero(buf == _QUOTE), side="right")] = True
    commas = np.flatnonzero(buf == _COMMA)
    line_of = np.searchsorted(stops, commas, side="right")
    keep = ~quoted[line_of] & (line_of > 0)
    commas, line_of = commas[keep], line_of[keep]
    plain = ~quoted
    plain[0] = False
    if (np.bincount(line_of, minlength=len(starts))[plain] != width - 1).any():
        raise _NotSimple  # a wrong number of columns: the line-by-line parser names the line
    fs = np.empty((width, len(starts) - 1), np.int64)
    fe = np.empty_like(fs)
    lines = np.flatnonzero(plain)
    cuts = commas.reshape(len(lines), width - 1).T  # (width - 1, plain rows)
    fs[0, lines - 1], fs[1:, lines - 1] = starts[lines], cuts + 1
    fe[:-1, lines - 1], fe[-1, lines - 1] = cuts, stops[lines]
    appended, at = [], len(buf)
    for line in np.flatnonzero(quoted[1:]) + 1:
        try:
            record = next(csv.reader([data[starts[line] : stops[line]].decode() + "\n"], strict=True))
        except csv.Error as e:  # also a quoted line break: the record goes on past this line
            raise _NotSimple from e
        if len(record) != width:
            raise _NotSimple
        for j, value in enumerate(record):
            encoded = value.encode()
            fs[j, line - 1], at = at, at + len(encoded)
            fe[j, line - 1] = at
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
