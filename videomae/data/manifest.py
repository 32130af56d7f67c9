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
  row, else ``folder_total_label``. Pass ``format=`` to override the rule. A header separated by ``;``, tabs or
  spaces, or rows that are all ``;``-separated, is refused ("use commas"), never read as a list.

Lines end at ``\n`` or ``\r\n``, or at ``\r`` in a file without any ``\n`` (old Mac OS); a stray ``\r`` inside a line
or a NUL byte refuses that line (:mod:`videomae.data.manifest_lines`). A quote that never closes is reported at the
line where it opens. Labels follow :data:`videomae.data.labels.LABEL_RULE`: all integer ids or all class names.

Every row is validated before training starts; all problems are collected and raised together as one
:class:`ManifestError` naming the file, the line and the reason (:class:`ManifestFormatError` when the file as a
whole cannot be read).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence

from videomae.data.manifest_parse import parse_text
from videomae.data.manifest_types import (
    CSV_COLUMNS,
    LIST_FORMATS,
    Manifest,
    ManifestError,
    ManifestFormatError,
    ManifestRow,
)

__all__ = [
    "CSV_COLUMNS",
    "LIST_FORMATS",
    "Manifest",
    "ManifestError",
    "ManifestFormatError",
    "ManifestRow",
    "manifest_from_text",
    "read_label_map",
    "read_manifest",
    "read_manifest_text",
    "write_manifest",
]


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
    text = read_manifest_text(path)
    return manifest_from_text(
        path, text.removeprefix("\ufeff"), data_root, format=format, label_map=label_map, max_errors=max_errors
    )


def read_manifest_text(path: str | os.PathLike) -> str:
    """A manifest file's text, as stored (line endings and a byte-order mark kept).

    Raises:
        ManifestFormatError: missing, unreadable, or not UTF-8.
    """
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except FileNotFoundError:
        raise ManifestFormatError(os.fspath(path), [(0, "file not found")]) from None
    except UnicodeDecodeError as e:
        raise ManifestFormatError(os.fspath(path), [(0, f"not UTF-8 text ({e.reason} at byte {e.start})")]) from None
    except OSError as e:  # a folder, no permission, an I/O error
        raise ManifestFormatError(os.fspath(path), [(0, f"cannot be read ({e.strerror or e})")]) from None


def manifest_from_text(
    path: str,
    text: str,
    data_root: str | os.PathLike | None = None,
    *,
    format: str = "auto",
    label_map: str | os.PathLike | Sequence[str] | None = None,
    max_errors: int = 20,
) -> Manifest:
    """:func:`read_manifest` on text already read (``path`` names it in messages); a spreadsheet's byte-order mark
    must already be removed."""
    names = read_label_map(label_map) if isinstance(label_map, (str, os.PathLike)) else label_map
    rows, label_names, format = parse_text(path, text, format, names, max_errors)
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

    Only columns that some row uses are written; ``extra`` columns follow the standard ones. The file is written
    atomically (a temporary file renamed over ``path``): a reader never sees half a manifest.
    """
    from videomae.disk_faults import write_text_atomic

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
    write_text_atomic(path, out.getvalue())
