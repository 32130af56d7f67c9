"""Rank-aware logging and the metric sinks (``metrics.jsonl``, TensorBoard, progress bar) of rank 0."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from videomae.disk_faults import write_text_atomic

__all__ = ["AppendLineHandler", "MetricsWriter", "Progress", "setup_logging"]


def setup_logging(rank: int, log_file: str | Path | None = None, level: int = logging.INFO) -> None:
    """Log INFO and up on rank 0, only warnings and errors on other ranks; to stderr and to ``log_file``.

    Every rank appends its records to the one ``log_file`` (each line says its rank), so a warning of rank 3, or
    of one of its DataLoader workers, is in ``train.log`` too (:class:`AppendLineHandler`).
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(AppendLineHandler(log_file))
    logging.basicConfig(
        level=level if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


class AppendLineHandler(logging.Handler):
    """Appends each record to a file shared by several processes with one ``write`` on an ``O_APPEND`` descriptor.

    The kernel places each such write at the end of the file whole, so lines of concurrent ranks (and of their
    forked DataLoader workers, which inherit the descriptor) never interleave or overwrite each other on a local
    file system or a cluster file system with POSIX append (Lustre, GPFS). NFS emulates ``O_APPEND`` on each
    client: processes of one node stay line-atomic, lines of different nodes can collide there.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            os.write(self._fd, (self.format(record) + "\n").encode("utf-8", "backslashreplace"))
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        super().close()


class MetricsWriter:
    """Appends one JSON object per logged step to ``metrics.jsonl`` and mirrors scalars to TensorBoard.

    A run that resumes at ``start_step`` first drops the rows of later steps (they were logged before an
    interruption and are about to be run again), rewriting the file atomically, and has TensorBoard hide its
    events of those steps; so the file holds each step once, as logged by the run that completed it. Only rank 0
    writes; on other ranks every method does nothing.
    """

    def __init__(self, output_dir: str | Path, enabled: bool, tensorboard: bool = True, start_step: int = 0) -> None:
        self.enabled = enabled
        self._file = None
        self._tb = None
        if not enabled:
            return
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        _drop_rows_after(output_dir / "metrics.jsonl", start_step)
        self._file = open(output_dir / "metrics.jsonl", "a")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: TensorBoard hides this run's earlier events from that step on.
            self._tb = SummaryWriter(log_dir=str(output_dir / "tensorboard"), purge_step=start_step + 1)

    def write(self, step: int, values: dict[str, Any]) -> None:
        """Record ``values`` (numbers, or strings for the JSON only) at optimizer step ``step``."""
        if not self.enabled:
            return
        record = {"step": step, **{k: _jsonable(v) for k, v in values.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    self._tb.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        """Flush and close the sinks."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _drop_rows_after(path: Path, step: int) -> None:
    """Keep only the rows of ``metrics.jsonl`` up to ``step`` (and none that do not parse, e.g. a line cut by a
    kill); the file is replaced atomically, and only when something is dropped."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if _step_of(line) is not None and _step_of(line) <= step]
    if len(kept) == len(lines):
        return
    write_text_atomic(path, "".join(line if line.endswith("\n") else line + "\n" for line in kept))
    logging.getLogger(__name__).info(
        "%s: dropped %d rows after step %d (run again after the resume)", path, len(lines) - len(kept), step
    )


def _step_of(line: str) -> int | None:
    try:
        step = json.loads(line)["step"]
    except (ValueError, TypeError, KeyError):
        return None
    return step if isinstance(step, int) else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value


class Progress:
    """The rank-0 progress bar: step, loss, lr, clips/s (all ranks), data-wait fraction, MFU on GPU, bad samples,
    ETA (tqdm's)."""

    def __init__(self, total: int, initial: int, enabled: bool, desc: str = "pretrain") -> None:
        self._bar = tqdm(total=total, initial=initial, disable=not enabled, dynamic_ncols=True, desc=desc)

    def update(
        self,
        step: int,
        loss: float,
        lr: float,
        clips_per_s: float,
        data_wait: float,
        mfu: float | None = None,
        bad_samples: int = 0,
    ) -> None:
        """Move to ``step`` and show the latest figures (MFU only where the accelerator's peak is known; the run's
        count of clips that failed to load once there is one)."""
        shown = {"loss": f"{loss:.4f}", "lr": f"{lr:.2e}", "clips/s": f"{clips_per_s:.1f}", "data": f"{data_wait:.0%}"}
        if mfu is not None:
            shown["mfu"] = f"{mfu:.1%}"
        if bad_samples:
            shown["bad"] = str(bad_samples)
        self._bar.set_postfix(shown, refresh=False)
        self._bar.update(step - self._bar.n)

    def close(self) -> None:
        """Finish the bar."""
        self._bar.close()
