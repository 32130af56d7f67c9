"""The ``videomae`` console command: parses arguments and dispatches to the module that does the work.

Each sub-command is one ``add_<name>(subparsers)`` function (``train``: pretrain, finetune, stages; ``data``:
demo-data, manifest; ``inference``: predict, extract-features, visualize; ``checkpoints``: export, info; ``probe``) that
declares its arguments and sets ``handler`` to a function ``(args) -> exit code``. Handlers import their module
lazily, so ``videomae --help`` stays fast and one broken optional dependency never breaks the other commands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from videomae.cli import checkpoints, data, doctor, inference, plan, probe, train, zero_shot
from videomae.disk_faults import DiskWriteError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``videomae`` command with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="videomae", description="VideoMAE V2 toolkit: training runs, data, checkpoints and trained models."
    )
    parser.add_argument("--version", action="version", version=_version())
    # `deepspeed --module videomae ...` puts --local_rank=N before the sub-command; LOCAL_RANK says the same.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        train.add_pretrain,
        train.add_finetune,
        train.add_stages,
        data.add_demo_data,
        data.add_manifest,
        inference.add_predict,
        inference.add_extract_features,
        inference.add_visualize,
        checkpoints.add_export,
        checkpoints.add_info,
        probe.add_probe,
        plan.add_plan,
        doctor.add_doctor,
        zero_shot.add_zero_shot,
    ):
        add(subparsers)
    return parser


def _version() -> str:
    from videomae import __version__

    return f"videomae {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``videomae`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    if getattr(args, "own_errors", False):  # a training run: its errors are its own (messages, or tracebacks)
        return int(args.handler(args) or 0)
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:
        print(f"videomae {args.command}: error: {err}", file=sys.stderr)
        return 2
    except DiskWriteError as err:  # no space left, quota, read-only, file-size limit: named, nothing half-written
        print(f"videomae {args.command}: error: {err}", file=sys.stderr)
        return 1
