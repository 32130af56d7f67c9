"""Manifests held as columns: a few numpy arrays per manifest, nothing per row.

A list of :class:`ManifestRow` objects costs close to a kilobyte a row (1.2-1.65 GB for the 1.35 M clips of the
VideoMAE V2 hybrid), and a DataLoader worker that only reads the rows still copies every page they sit on, because
reading an object writes its reference count (copy-on-read after ``fork``). A :class:`ManifestTable` keeps each
column as one array: integers as ``int64`` with -1 for "absent" (every integer column is >= 0 when present), floats
as ``float64`` with NaN, strings as one UTF-8 ``bytes`` buffer plus ``int64`` offsets (:class:`StringColumn`).
Reading row ``i`` slices those buffers and builds a short-lived :class:`ManifestRow`; nothing shared is written.

:func:`~videomae.data.manifest.read_manifest_table` reads well-formed files (CSV, or lists separated by single
spaces) with numpy (:mod:`videomae.data.manifest_fast`) and any other file with the line-by-line parser of
:func:`~videomae.data.manifest.read_manifest`, which also gives every error its line; both end in the same table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from videomae.data.manifest_types import Manifest, ManifestRow, join_data_root

__all__ = ["FLOAT_COLUMNS", "INT_COLUMNS", "TEXT_COLUMNS", "ManifestTable", "RowsView", "StringColumn"]

INT_COLUMNS = ("start", "num_frames", "label", "width", "height")
"""Integer columns of a table (``int64``, -1: absent)."""
FLOAT_COLUMNS = ("fps", "duration")
"""Float columns of a table (``float64``, NaN: absent)."""
TEXT_COLUMNS = ("source", "text")
"""Standard string columns of a table (``""``: absent, ``None`` in a row)."""


class StringColumn:
    """Strings as one UTF-8 buffer and ``int64`` offsets: string ``i`` is ``data[offsets[i]:offsets[i + 1]]``.

    Args:
        data: the concatenated UTF-8 bytes.
        offsets: ``int64 [n + 1]``, starting at 0 and ending at ``len(data)``.
    """

    __slots__ = ("data", "offsets")

    def __init__(self, data: bytes, offsets: np.ndarray):
        if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(data):
            raise ValueError(f"offsets must run from 0 to len(data)={len(data)}")
        self.data, self.offsets = data, offsets

    @classmethod
    def from_strings(cls, strings: Iterable[str]) -> StringColumn:
        """The column of ``strings``, in order."""
        encoded = [s.encode() for s in strings]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), out=offsets[1:])
        return cls(b"".join(encoded), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.data[self.offsets[i] : self.offsets[i + 1]].decode()

    def nbytes(self) -> int:
        """Bytes held: the buffer and the offsets."""
        return len(self.data) + self.offsets.nbytes


class RowsView(Sequence):
    """A read-only sequence of rows made on access by ``row(i)``; holds nothing per row (mutating a row it
    returned changes nothing)."""

    def __init__(self, row: Callable[[int], ManifestRow], length: int):
        self._row, self._len = row, length

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._row(j) for j in range(*i.indices(self._len))]
        if not -self._len <= i < self._len:
            raise IndexError(f"row {i} out of range ({self._len} rows)")
        return self._row(i % self._len)


@dataclass(eq=False)
class ManifestTable:
    """One manifest's rows as columns (see the module docstring).

    Attributes:
        path: the manifest file (named by every row it gives).
        format: ``"csv"`` or one of the list formats.
        label_names: class names indexed by label id, as in :class:`Manifest`.
        paths: the ``path`` column as written (relative paths are joined to ``data_root`` in :meth:`row`).
        lines: ``int64``: the 1-based line of each row in the file.
        numbers: the columns of :data:`INT_COLUMNS` and :data:`FLOAT_COLUMNS` that some row uses.
        texts: ``source`` and ``text`` when some row uses them (``""``: absent).
        extra: the other CSV columns, as written.
        data_root: prefix of relative paths.
    """

    path: str
    format: str
    label_names: list[str] | None
    paths: StringColumn
    lines: np.ndarray
    numbers: dict[str, np.ndarray] = field(default_factory=dict)
    texts: dict[str, StringColumn] = field(default_factory=dict)
    extra: dict[str, StringColumn] = field(default_factory=dict)
    data_root: str | None = None

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def labels(self) -> np.ndarray:
        """``int64 [n]`` class ids, -1 for unlabelled rows."""
        return self.numbers["label"] if "label" in self.numbers else np.full(len(self), -1, np.int64)

    def row(self, i: int) -> ManifestRow:
        """Row ``i`` (0-based) as a fresh :class:`ManifestRow`, its path joined to ``data_root``."""
        values: dict = {}
        for col, array in self.numbers.items():
            value = array[i]
            if col in FLOAT_COLUMNS:
                if not math.isnan(value):
                    values[col] = float(value)
            elif value >= 0:
                values[col] = int(value)
        for col, strings in self.texts.items():
            values[col] = strings[i] or None
        return ManifestRow(
            path=join_data_root(self.data_root, self.paths[i]),
            line=int(self.lines[i]),
            manifest=self.path,
            extra={col: strings[i] for col, strings in self.extra.items()},
            **values,
        )

    @property
    def rows(self) -> RowsView:
        """The rows as a sequence made on access."""
        return RowsView(self.row, len(self))

    def nbytes(self) -> int:
        """Bytes held by the columns."""
        strings = [self.paths, *self.texts.values(), *self.extra.values()]
        return self.lines.nbytes + sum(a.nbytes for a in self.numbers.values()) + sum(s.nbytes() for s in strings)

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> ManifestTable:
        """The columns of an already read :class:`Manifest` (paths already joined to its data root)."""
        rows = manifest.rows
        numbers = {}
        for col in INT_COLUMNS + FLOAT_COLUMNS:
            values = [getattr(r, col) for r in rows]
            if any(v is not None for v in values):
                absent, dtype = (math.nan, np.float64) if col in FLOAT_COLUMNS else (-1, np.int64)
                numbers[col] = np.array([absent if v is None else v for v in values], dtype)
        texts = {
            col: StringColumn.from_strings(getattr(r, col) or "" for r in rows)
            for col in TEXT_COLUMNS
            if any(getattr(r, col) for r in rows)
        }
        extra_columns = list(dict.fromkeys(k for r in rows for k in r.extra))
        return cls(
            path=manifest.path,
            format=manifest.format,
            label_names=manifest.label_names,
            paths=StringColumn.from_strings(r.path for r in rows),
            lines=np.array([r.line for r in rows], np.int64),
            numbers=numbers,
            texts=texts,
            extra={k: StringColumn.from_strings(r.extra.get(k, "") for r in rows) for k in extra_columns},
        )
