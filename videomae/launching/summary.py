"""What ``launch/demo.sh`` prints when a run ends: its folder, the first and last logged step, the pictures.

    python -m videomae.launching.summary RUN_DIR

Numbers keep four significant digits (``lr 1e-05``, ``wd 0.05``), never a value cut mid-way.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["SUMMARY_KEYS", "format_row", "format_value", "main", "summarize"]

SUMMARY_KEYS = ("step", "loss", "lr", "wd", "grad_norm", "clips_per_s", "bad_samples_total")
"""The ``metrics.jsonl`` fields shown, in this order (those a row lacks are left out)."""


def format_value(value: Any) -> str:
    """A float with 4 significant digits (``1e-05``, ``0.05``, ``1.175``); anything else as ``str`` gives it."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_row(row: Mapping[str, Any], keys: Sequence[str] = SUMMARY_KEYS) -> str:
    """``step 1, loss 1.175, lr 0, wd 0.05, ...`` for one ``metrics.jsonl`` row."""
    return ", ".join(f"{key} {format_value(row[key])}" for key in keys if key in row)


def _rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill: the rest still tells the story
            continue
    return rows


def summarize(run_dir: str | Path) -> str:
    """The closing lines for the run in ``run_dir`` (``metrics.jsonl``, ``pictures/``, ``tensorboard/``)."""
    run_dir = Path(run_dir)
    rows = _rows(run_dir / "metrics.jsonl")
    steps = [row for row in rows if "loss" in row]  # not the step-0 row of the pictures' figures
    lines = [f"== done: {run_dir}"]
    if steps:
        lines += [f"   first logged: {format_row(steps[0])}", f"   last logged:  {format_row(steps[-1])}"]
    else:
        lines.append(f"   no logged step in {run_dir / 'metrics.jsonl'}")
    recon = [row for row in rows if "recon_mse" in row]
    if recon:
        first, last = recon[0], recon[-1]
        lines.append(
            f"   reconstruction error (hidden patches): step {first['step']} {format_value(first['recon_mse'])} -> "
            f"step {last['step']} {format_value(last['recon_mse'])}; flat-patch baseline "
            f"{format_value(last['recon_baseline_mse'])}"
        )
    pictures = sorted((run_dir / "pictures").glob("*.png"))
    if pictures:
        lines.append(f"   reconstructions: {pictures[0]}  ...  {pictures[-1]}")
    lines.append(f"   TensorBoard: tensorboard --logdir {run_dir / 'tensorboard'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print :func:`summarize` of the folder given as the only argument."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m videomae.launching.summary RUN_DIR", file=sys.stderr)
        return 2
    print(summarize(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
