"""Rank-aware logging and the metric sinks (``metrics.jsonl``, TensorBoard, progress bar) of rank 0."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

__all__ = ["MetricsWriter", "Progress", "setup_logging"]


def setup_logging(rank: int, log_file: str | Path | None = None, level: int = logging.INFO) -> None:
    """Log INFO and up on rank 0 (also to ``log_file``), only warnings and errors on other ranks."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None and rank == 0:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(
        level=level if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


class MetricsWriter:
    """Appends one JSON object per logged step to ``metrics.jsonl`` and mirrors scalars to TensorBoard.

    Only rank 0 writes; on other ranks every method does nothing.
    """

    def __init__(self, output_dir: str | Path, enabled: bool, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self._file = None
        self._tb = None
        if not enabled:
            return
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(output_dir / "metrics.jsonl", "a")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(output_dir / "tensorboard"))

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


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value


class Progress:
    """The rank-0 progress bar: step, loss, lr, clips/s (all ranks), data-wait fraction, MFU on GPU, ETA (tqdm's)."""

    def __init__(self, total: int, initial: int, enabled: bool, desc: str = "pretrain") -> None:
        self._bar = tqdm(total=total, initial=initial, disable=not enabled, dynamic_ncols=True, desc=desc)

    def update(
        self, step: int, loss: float, lr: float, clips_per_s: float, data_wait: float, mfu: float | None = None
    ) -> None:
        """Move to ``step`` and show the latest figures (MFU only where the accelerator's peak is known)."""
        shown = {"loss": f"{loss:.4f}", "lr": f"{lr:.2e}", "clips/s": f"{clips_per_s:.1f}", "data": f"{data_wait:.0%}"}
        if mfu is not None:
            shown["mfu"] = f"{mfu:.1%}"
        self._bar.set_postfix(shown, refresh=False)
        self._bar.update(step - self._bar.n)

    def close(self) -> None:
        """Finish the bar."""
        self._bar.close()
