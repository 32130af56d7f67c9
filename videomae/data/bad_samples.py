"""Record clips that fail to load, without stopping the run unless failures keep coming.

Each failure is counted; the first time a manifest row fails it is logged (``logging``, with manifest file and
line) and appended to ``<run_dir>/bad_samples.csv``. DataLoader workers are separate processes, so the file is
shared through an exclusive ``fcntl.flock``: under the lock a worker reads the rows other processes appended since
it last looked (each process reads each byte once, so recording N bad rows costs O(N), not O(N^2)) and appends only
new ones. Every bad row therefore appears once in the file, however many workers, epochs or restarts meet it.
Without a ``run_dir`` rows are logged once per process.
"""

from __future__ import annotations

import csv
import fcntl
import io
import logging
import os

from videomae.data.manifest import ManifestRow

__all__ = [
    "BAD_SAMPLES_FILE",
    "BadSampleLog",
    "RecordedRows",
    "TooManyBadSamples",
    "append_row_once",
    "read_bad_samples",
    "read_rows",
]

BAD_SAMPLES_FILE = "bad_samples.csv"
_COLUMNS = ("manifest", "line", "path", "error")
logger = logging.getLogger(__name__)


class TooManyBadSamples(RuntimeError):
    """Too many clips in a row failed to load: the data (or its storage) is broken, stop the run."""


class BadSampleLog:
    """Counts, logs and records failed clips for one dataset (one instance per worker process after fork).

    Args:
        run_dir: folder of the run (``bad_samples.csv`` goes there); ``None`` records nothing on disk.
        max_consecutive: raise :class:`TooManyBadSamples` when this many loads in a row failed in one process.
    """

    def __init__(self, run_dir: str | os.PathLike | None = None, max_consecutive: int = 20):
        if max_consecutive < 1:
            raise ValueError(f"max_consecutive_failures={max_consecutive} must be >= 1")
        self.path = os.path.join(os.fspath(run_dir), BAD_SAMPLES_FILE) if run_dir is not None else None
        self.max_consecutive = max_consecutive
        self.count = 0
        self.consecutive = 0
        self._seen: set[tuple[str, int, str]] = set()

    def record(self, row: ManifestRow, error: BaseException, outcome: str = "replaced by another clip") -> None:
        """Count one failure of ``row``; log and append it the first time. Raises after too many in a row.

        ``outcome`` says in the log line what the dataset does instead of the clip.
        """
        self.count += 1
        self.consecutive += 1
        key = (row.manifest, row.line, row.path)
        if key not in self._seen:
            self._seen.add(key)
            if self.path is None or append_row_once(self.path, key, getattr(error, "reason", error)):
                logger.warning(
                    "bad sample %s:%d (%s): %s; %s",
                    row.manifest,
                    row.line,
                    row.path,
                    getattr(error, "reason", error),
                    outcome,
                )
        if self.consecutive >= self.max_consecutive:
            raise TooManyBadSamples(
                f"{self.consecutive} clips in a row failed to load (last: {row.manifest}:{row.line} {row.path}: "
                f"{error}). The data or its storage looks broken"
                + (f"; see {self.path}" if self.path else "")
                + ". Check the manifest with `videomae manifest check`, or raise max_consecutive_failures."
            )

    def success(self) -> None:
        """A clip loaded: reset the consecutive-failure count."""
        self.consecutive = 0


class RecordedRows:
    """The rows of one CSV file that :func:`append_row_once` writes, as this process last read them: the keys and
    the byte offset read up to, so each call reads only what other processes appended since."""

    def __init__(self) -> None:
        self.keys: set[tuple[str, int, str]] = set()
        self.offset = 0

    def catch_up(self, f: io.TextIOBase) -> None:
        """Read the rows appended after :attr:`offset` (the caller holds the file's lock: it ends at a row)."""
        f.seek(self.offset)
        for record in csv.reader(io.StringIO(f.read(), newline="")):
            if record and tuple(record) != _COLUMNS:
                self.keys.add((record[0], int(record[1]), record[2]))
        self.offset = f.tell()


_RECORDED: dict[str, RecordedRows] = {}  # per process (a forked worker starts from its parent's, then catches up)


def append_row_once(path: str, key: tuple[str, int, str], reason: object, recorded: RecordedRows | None = None) -> bool:
    """Append the manifest row ``key = (manifest, line, path)`` with ``reason`` to the CSV file ``path`` (columns
    ``manifest, line, path, error``) unless some process already did; returns whether this call wrote it.

    ``recorded``: what this process knows of the file (default: one per path and process)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    recorded = recorded if recorded is not None else _RECORDED.setdefault(os.path.abspath(path), RecordedRows())
    with open(path, "a+", encoding="utf-8", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            if f.seek(0, os.SEEK_END) < recorded.offset:  # the file was replaced or cut: read it again
                recorded.keys.clear()
                recorded.offset = 0
            recorded.catch_up(f)
            if key in recorded.keys:
                return False
            writer = csv.writer(f, lineterminator="\n")
            if f.tell() == 0:
                writer.writerow(_COLUMNS)
            writer.writerow([key[0], key[1], key[2], " ".join(str(reason).split())])
            f.flush()
            recorded.keys.add(key)
            recorded.offset = f.tell()
            return True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a file :func:`append_row_once` writes (empty when it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def read_bad_samples(run_dir: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of ``<run_dir>/bad_samples.csv`` (empty when nothing failed)."""
    return read_rows(os.path.join(os.fspath(run_dir), BAD_SAMPLES_FILE))
