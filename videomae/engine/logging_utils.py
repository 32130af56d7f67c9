"""Rank-aware logging and the metric sinks of rank 0: ``metrics.jsonl``, TensorBoard, Weights & Biases (optional),
the progress bar."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from videomae.config import LoggingConfig
from videomae.disk_faults import write_text_atomic

__all__ = ["AppendLineHandler", "MetricsWriter", "Picture", "Progress", "setup_logging"]


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


@dataclass
class Picture:
    """An image among a step's values: ``metrics.jsonl`` records its ``path``, TensorBoard and wandb the pixels."""

    image: np.ndarray
    """uint8 ``[H, W, 3]``."""
    path: str
    """Where the PNG was written, relative to the run folder."""


class MetricsWriter:
    """The one place a run's figures go: ``metrics.jsonl`` (one JSON object per logged step), TensorBoard scalars and
    images, and Weights & Biases when ``sinks.wandb`` is set (the same scalars and pictures).

    A run that resumes at ``start_step`` first drops the rows of later steps (they were logged before an
    interruption and are about to be run again), rewriting the file atomically, and has TensorBoard hide its
    events of those steps; so the file holds each step once, as logged by the run that completed it. Only rank 0
    writes; on other ranks every method does nothing.

    Weights & Biases logs offline into ``OUTPUT_DIR/wandb/`` unless ``WANDB_MODE`` is set (the log says so):
    compute nodes often have no network, where an online start would wait and fail.
    ``wandb sync OUTPUT_DIR/wandb/offline-run-*`` uploads later; ``WANDB_MODE=online`` logs live. A resumed run
    continues the same wandb run (its id is kept in ``OUTPUT_DIR/wandb/run_id``); wandb keeps a step's first values
    there, ``metrics.jsonl`` those of the rerun.
    """

    def __init__(
        self,
        output_dir: str | Path,
        enabled: bool,
        tensorboard: bool = True,
        start_step: int = 0,
        sinks: LoggingConfig | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        self.enabled = enabled
        self._file = None
        self._tb = None
        self._wandb = None
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
        if sinks is not None and sinks.wandb:
            self._wandb = _start_wandb(output_dir, sinks.wandb_project, run_config or {})

    def write(self, step: int, values: dict[str, Any]) -> None:
        """Record ``values`` at optimizer step ``step``: numbers (also to TensorBoard and wandb), strings (the JSON
        only) and :class:`Picture` (its path in the JSON, the image to TensorBoard and wandb)."""
        if not self.enabled:
            return
        record = {"step": step, **{k: _jsonable(v) for k, v in values.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        scalars = {
            f"train/{key}": value
            for key, value in values.items()
            if isinstance(value, int | float) and math.isfinite(value)
        }
        if self._tb is not None:
            for tag, value in scalars.items():
                self._tb.add_scalar(tag, value, step)
        if self._wandb is not None and scalars:
            self._wandb.log(scalars, step=step)
        for key, value in values.items():
            if isinstance(value, Picture):
                self.write_image(step, key, value.image)

    def write_image(self, step: int, tag: str, image: np.ndarray) -> None:
        """Send a uint8 ``[H, W, 3]`` image to TensorBoard and wandb as ``pictures/{tag}`` at step ``step``."""
        if not self.enabled:
            return
        if self._tb is not None:
            self._tb.add_image(f"pictures/{tag}", image, step, dataformats="HWC")
        if self._wandb is not None:
            import wandb

            self._wandb.log({f"pictures/{tag}": wandb.Image(image)}, step=step)

    def close(self) -> None:
        """Flush and close the sinks."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _start_wandb(output_dir: Path, project: str, run_config: dict[str, Any]) -> Any:
    """A wandb run writing under ``output_dir/wandb``; offline unless ``WANDB_MODE`` is set (logged)."""
    import wandb

    log = logging.getLogger(__name__)
    folder = output_dir / "wandb"
    folder.mkdir(parents=True, exist_ok=True)
    id_file = folder / "run_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else ""
    if not run_id:
        run_id = uuid.uuid4().hex[:8]
        write_text_atomic(id_file, run_id + "\n")
    mode = os.environ.get("WANDB_MODE")
    if not mode:
        mode = "offline"
        log.info("wandb: WANDB_MODE is not set, so logging offline into %s (`wandb sync %s/offline-run-*` uploads; "
                 "WANDB_MODE=online logs live)", folder, folder)  # fmt: skip
    run = wandb.init(
        dir=str(output_dir), project=project, name=output_dir.name, id=run_id, resume="allow", mode=mode,
        config=run_config, settings=wandb.Settings(console="off"),
    )  # fmt: skip
    log.info("wandb: run %s (%s) in %s", run_id, mode, folder)
    return run


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
    if isinstance(value, Picture):
        return value.path
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
