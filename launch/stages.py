#!/usr/bin/env python3
"""Run the whole progressive recipe declared in a stages file: pretrain -> post-pretrain -> fine-tune (-> evaluation).

    python launch/stages.py --stages launch/configs/stages/demo.yaml
    python launch/stages.py --stages FILE --dry-run                  # each stage's decision and exact command
    python launch/stages.py --stages FILE --only finetune            # just these (the stages they need must be done)
    python launch/stages.py --stages FILE --from post_pretrain --force   # run again from there, afresh
    python launch/stages.py --stages FILE --launcher torchrun --nproc 8
    python launch/stages.py --stages FILE train.max_steps=20         # key=value for every stage, after the file's
    python launch/stages.py --stages FILE --output-root runs/seed1 seed=1   # the same chain in another folder

Every stage's config is loaded and checked before anything starts, and so are the files, model and output folder
of every stage that will run (videomae.launching.preflight). Stages that are done (export written, same
resolved config, same upstream) are skipped, so rerunning the command after a crash resumes where it stopped;
``<output_root>/stages.json`` records each stage's status, export, wall time and final metrics.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from videomae.config import ConfigError
from videomae.stages import load_recipe, run_recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", required=True, help="stages file (launch/configs/stages/*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides for every stage")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--only", nargs="+", metavar="NAME", help="run only these stages")
    which.add_argument("--from", dest="start", metavar="NAME", help="run this stage and every later one")
    parser.add_argument("--force", action="store_true", help="start the selected stages afresh even when done "
                        "(old run folders are moved to <output_dir>.replaced-<time>)")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="print each stage's decision and command, run nothing")
    parser.add_argument("--launcher", choices=["deepspeed", "torchrun", "python"], help="replaces the file's launcher")
    parser.add_argument("--nproc", type=int, help="processes per stage; replaces the file's nproc")
    parser.add_argument("--output-root", help="replaces the file's output_root (stages without an output_dir of "
                        "their own write to <output-root>/<name>)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(
            args.stages, launcher=args.launcher, nproc=args.nproc, overrides=args.overrides,
            output_root=args.output_root,
        )  # fmt: skip
        return run_recipe(
            recipe, Path(__file__).resolve().parent, only=args.only, start=args.start, force=args.force,
            dry_run=args.dry_run, preflight=True,
        )  # fmt: skip
    except ConfigError as err:
        print(f"stages.py: config error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
