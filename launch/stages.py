#!/usr/bin/env python3
"""Run the whole progressive recipe declared in a stages file: pretrain -> post-pretrain -> fine-tune (-> evaluation).

    python launch/stages.py --stages demo                            # a packaged recipe, or a file
    python launch/stages.py --stages FILE --dry-run                  # each stage's decision and exact command
    python launch/stages.py --stages FILE --only finetune            # just these (the stages they need must be done)
    python launch/stages.py --stages FILE --from post_pretrain --force   # run again from there, afresh
    python launch/stages.py --stages FILE --launcher torchrun --nproc 8
    python launch/stages.py --stages FILE train.max_steps=20         # key=value for every stage, after the file's
    python launch/stages.py --stages FILE --output-root runs/seed1 seed=1   # the same chain in another folder

Every stage's config is loaded and checked before anything starts, and so are the files, model and output folder
of every stage that will run (videomae.launching.preflight). Each stage runs as ``videomae pretrain|finetune``
under the file's launcher. Stages that are done (export written, same resolved config, same upstream) are
skipped, so rerunning the command after a crash resumes where it stopped; ``<output_root>/stages.json`` records
each stage's status, export, wall time and final metrics. The installed package runs the same as ``videomae
stages --config demo``.
"""

from __future__ import annotations

import sys

from videomae.cli.train import stages_main


def main(argv: list[str] | None = None) -> int:
    return stages_main(argv, prog="stages.py", doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
