"""The probe log that lets an interrupted ``videomae manifest build`` resume: ``OUT.probed.jsonl``.

The first line is a header holding the build's identity (the arguments that choose and probe the clips: folder,
frame template, extensions, shard); each further line is one probed clip, appended and flushed as its result
arrives (and synced to the storage every few seconds), so a build killed at any moment loses only the clips being
probed then. A rerun of the same command reads the log back and probes only the clips it lacks; a log whose
header names another build is refused (it would mix two builds' clips) with the fix. A killed writer can leave
its last line cut short: that line is dropped and its clip probed again. Clips that timed out are probed again
only when the rerun allows more time (``--timeout``), so a FIFO is not waited on at every resume.

The log is locked while a build writes it (``flock``), so two copies of the same command (a requeued SLURM task
whose first run still lives) never interleave their lines.
"""

from __future__ import annotations

import errno
import json
import os
import time
from dataclasses import asdict, fields

from videomae.data.manifest_probe import ProbeResult

__all__ = ["PROBED_SUFFIX", "ProbeLog", "probe_log_path"]

PROBED_SUFFIX = ".probed.jsonl"
_FORMAT = "videomae-manifest-probes/1"
_SYNC_EVERY_S = 5.0
_RESULT_FIELDS = {f.name for f in fields(ProbeResult)}


def probe_log_path(output: str | os.PathLike) -> str:
    """The probe log of the build writing ``output``."""
    return os.fspath(output) + PROBED_SUFFIX


class ProbeLog:
    """The clips probed so far by the build writing ``output``; opened (created or resumed) and locked.

    Attributes:
        path: the log file.
        done: relative path -> result of every clip in the log.
        dropped: damaged lines left out (their clips are probed again).
    """

    def __init__(self, output: str | os.PathLike, identity: dict):
        self.path = probe_log_path(output)
        self.done: dict[str, ProbeResult] = {}
        self.dropped = 0
        self._timeouts: dict[str, float | None] = {}
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._file = open(self.path, "a+", encoding="utf-8", newline="")
        try:
            self._lock()
            self._file.seek(0)
            header = self._file.readline()
            if header:
                self._check_header(header, identity)
                last = self._load()
                if not last.endswith("\n"):  # a line cut short by a kill: end it, so the next one starts clean
                    self._file.write("\n")
            else:
                self._file.write(json.dumps({"format": _FORMAT, **identity}) + "\n")
            self._file.flush()
        except BaseException:
            self._file.close()
            raise
        self._synced = time.monotonic()

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no lock
            return
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"{self.path} is being written by another build of the same output (same command still running?): "
                "wait for it to finish, or stop it; this one would resume from its log"
            ) from None
        except OSError as e:  # a file system without locks (some network mounts): go on unlocked
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise

    def _check_header(self, line: str, identity: dict) -> None:
        try:
            header = json.loads(line)
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.pop("format", None) != _FORMAT:
            raise ValueError(f"{self.path}: not a probe log of videomae manifest build; delete it or choose another -o")
        if header != identity:
            differ = ", ".join(
                f"{k}: {header.get(k)!r} there, {identity.get(k)!r} now"
                for k in sorted(set(header) | set(identity))
                if header.get(k) != identity.get(k)
            )
            raise ValueError(
                f"{self.path} holds the probes of another build ({differ}): rerun that command to finish it, "
                f"or delete {self.path} to start this build from scratch"
            )

    def _load(self) -> str:
        """Read the result lines after the header (line by line: a million-clip log is never held as one string);
        returns the last line read."""
        line = "\n"
        for line in self._file:
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                rel = entry.pop("rel")
                timeout = entry.pop("timeout", None)
                result = ProbeResult(**{k: v for k, v in entry.items() if k in _RESULT_FIELDS})
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                self.dropped += 1
                continue
            self.done[rel] = result
            self._timeouts[rel] = timeout
        return line

    def result_for(self, rel: str, timeout: float | None) -> ProbeResult | None:
        """The logged result of clip ``rel``, or ``None`` when it must be probed: not logged yet, or timed out
        at a shorter ``timeout`` than this build allows (``None``/0: no limit)."""
        result = self.done.get(rel)
        if result is not None and result.timed_out:
            before = self._timeouts.get(rel)
            if not timeout or before is None or timeout > before:
                return None
        return result

    def record(self, rel: str, result: ProbeResult, timeout: float | None) -> None:
        """Append one clip's result (flushed at once; synced to the storage every few seconds)."""
        entry = {"rel": rel, **asdict(result)}
        if result.timed_out:
            entry["timeout"] = timeout
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()
        self.done[rel] = result
        if time.monotonic() - self._synced > _SYNC_EVERY_S:
            os.fsync(self._file.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        """Sync and close (and unlock) the log; it stays for a rerun to resume from."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def remove(self) -> None:
        """Close and delete the log (the build's output is written)."""
        self.close()
        os.unlink(self.path)
