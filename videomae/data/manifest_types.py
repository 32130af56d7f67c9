"""The manifest data types: rows, a read manifest, and the error that names file and line."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "CSV_COLUMNS",
    "LIST_FORMATS",
    "Manifest",
    "ManifestError",
    "ManifestFormatError",
    "ManifestRow",
    "join_data_root",
]

CSV_COLUMNS = ("path", "start", "num_frames", "label", "source", "text", "fps", "width", "height", "duration")
LIST_FORMATS = ("path", "path_label", "path_start_total", "folder_total_label")


def join_data_root(root: str | None, path: str) -> str:
    """A manifest path as the dataset opens it: relative paths joined to ``data_root`` (when it is set)."""
    return os.path.join(root, path) if root and not os.path.isabs(path) else path


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


class ManifestFormatError(ManifestError):
    """The file as a whole cannot be read (encoding, header, separator, format, no rows): no row can be trusted,
    as opposed to a :class:`ManifestError` about some rows that a cleaned copy could drop."""


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
