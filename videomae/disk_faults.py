"""Say why a write failed when the storage refused it: disk full, quota, read-only file system, file-size limit.

The writers we use hide the cause: torch's zip writer reports a full disk as ``unexpected pos 5504 vs 5396`` or
``basic_ios::clear: iostream error`` (no errno), safetensors as ``I/O error: ... (os error 28)``. After a failed
write, :func:`name_write_fault` looks for the cause: an ``errno`` in the exception or its chain (or in the
message), else the storage itself: a read-only mount, a file at the process's file-size limit (``ulimit -f``),
less than :data:`LOW_SPACE` free, and last a small probe write next to the file, whose errno names a quota. It
returns a :class:`DiskWriteError` whose message starts with the cause and the path (``no space left on PATH``),
or None when the storage is fine (the failure is then not a disk fault and the original error stands).
"""

from __future__ import annotations

import errno
import os
import re
import resource
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "LOW_SPACE",
    "DiskWriteError",
    "WriteGuard",
    "name_write_fault",
    "naming_write_faults",
    "process_umask",
    "write_atomic",
    "write_text_atomic",
]

LOW_SPACE = 1 << 20
"""Free bytes below which a failed write is put down to a full disk."""

_CAUSES = {
    errno.ENOSPC: "no space left on {path}",
    errno.EDQUOT: "disk quota exceeded on {path}",
    errno.EROFS: "read-only file system: {path}",
    errno.EFBIG: "file size limit reached writing {path}",
}
_OS_ERROR = re.compile(r"\b(?:os error|errno) (\d+)\b", re.IGNORECASE)


class SaveFailed(RuntimeError):
    """A collective save (checkpoint, export) failed on some rank; raised alike on every rank, naming what failed
    where and what was kept."""


class DiskWriteError(OSError):
    """A write the storage refused; ``str()`` names the cause and the path (``no space left on PATH``)."""

    def __init__(self, code: int, message: str, path: str | os.PathLike) -> None:
        super().__init__(code, message, os.fspath(path))
        self.message = message

    def __str__(self) -> str:
        return self.message


def _errno_in(error: BaseException) -> int | None:
    """A storage errno carried by ``error`` or its causes (attribute first, then ``os error N`` in the text)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        code = getattr(error, "errno", None)
        if code in _CAUSES:
            return code
        match = _OS_ERROR.search(str(error))
        if match and int(match.group(1)) in _CAUSES:
            return int(match.group(1))
        error = error.__cause__ or error.__context__
    return None


def _existing_folder(path: Path) -> Path:
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _probe(folder: Path, size: int) -> int | None:
    """Write ``size`` bytes to a scratch file in ``folder`` and sync; the errno if the storage refuses."""
    probe = folder / f".write_probe.{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"\0" * size)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        return err.errno if err.errno in _CAUSES else None
    finally:
        probe.unlink(missing_ok=True)
    return None


def _storage_errno(path: Path) -> int | None:
    """The storage's reason to refuse a write to ``path`` now (None: it accepts writes)."""
    folder = _existing_folder(path)
    stats = os.statvfs(folder)
    if stats.f_flag & os.ST_RDONLY:
        return errno.EROFS
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and path.is_file() and path.stat().st_size >= limit:
        return errno.EFBIG
    if stats.f_bavail * stats.f_frsize < LOW_SPACE:
        return errno.ENOSPC
    # Stay under the file-size limit: past it the probe itself would be the fault (or get SIGXFSZ).
    size = LOW_SPACE if limit == resource.RLIM_INFINITY else min(LOW_SPACE, max(limit - 1, 0))
    return _probe(folder, size) if size else None


def _free_space(path: Path) -> str:
    try:
        stats = os.statvfs(_existing_folder(path))
    except OSError:
        return ""
    free, total = stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize
    return f"{_size(free)} free of {_size(total)}"


def _size(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} bytes"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            break
    return f"{n:.1f} {unit}"


def name_write_fault(path: str | os.PathLike, error: BaseException) -> DiskWriteError | None:
    """The storage fault behind ``error``, raised while writing ``path``; None when the storage is not at fault.

    Args:
        path: the file (or folder) being written.
        error: what the writer raised (an ``OSError``, torch's ``RuntimeError``, a ``SafetensorError``, ...).
    """
    path = Path(path)
    code = _errno_in(error)
    if code is None:
        try:
            code = _storage_errno(path)
        except OSError:
            return None
    if code is None:
        return None
    message = _CAUSES[code].format(path=path)
    if code == errno.EFBIG:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        message += (
            " (the file system's largest file)"
            if limit == resource.RLIM_INFINITY
            else f" (this process may write files of at most {_size(limit)}: `ulimit -f`)"
        )
    elif code in (errno.ENOSPC, errno.EDQUOT):
        free = _free_space(path)
        message += f" ({free})" if free else ""
    return DiskWriteError(code, f"{message} [{type(error).__name__}: {error}]", path)


@contextmanager
def naming_write_faults(path: str | os.PathLike) -> Iterator[None]:
    """Re-raise a failure inside the block as :class:`DiskWriteError` when the storage is at fault."""
    try:
        yield
    except Exception as err:
        fault = None if isinstance(err, DiskWriteError) else name_write_fault(path, err)
        if fault is None:
            raise
        raise fault from err


def write_atomic(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp)`` to write a file next to ``path``, then rename it to ``path`` with the mode the umask gives.

    A failed write leaves nothing at ``path`` (an older file there stays) and no partial file behind; a storage
    fault is raised as :class:`DiskWriteError`.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    try:
        with naming_write_faults(tmp):
            write(str(tmp))
            # Writers that stage through a private temporary file (safetensors) leave mode 0600: give the file the
            # mode a plain open() would, so exports are shared as the user's umask says.
            os.chmod(tmp, 0o666 & ~process_umask())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def process_umask() -> int:
    """This process's file-mode creation mask (read from ``/proc`` where it is shown, else set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no way to read it without setting it; restored at once
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through :func:`write_atomic`, synced to the storage before the rename."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    return write_atomic(path, write)


class WriteGuard:
    """Runs writes of one rank inside collective code, keeping the first failure instead of raising it.

    Every rank then goes on through the same collectives and the failure is settled together afterwards
    (a rank raising in the middle would leave the others waiting forever). After a failure further writes
    are skipped: the folder is abandoned anyway.
    """

    def __init__(self) -> None:
        self.error: Exception | None = None

    def call(self, path: str | os.PathLike, write: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``write(*args, **kwargs)``, which writes ``path``; a failure is kept (named when it is the disk's)."""
        if self.error is not None:
            return None
        try:
            return write(*args, **kwargs)
        except Exception as err:
            self.error = name_write_fault(path, err) or err
            return None

    def describe(self) -> str | None:
        """The kept failure in words (None when every write succeeded)."""
        if self.error is None or isinstance(self.error, DiskWriteError):
            return None if self.error is None else str(self.error)
        return f"{type(self.error).__name__}: {self.error}"
