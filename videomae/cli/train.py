"""``videomae pretrain | finetune | stages``: the runs of ``launch/pretrain.py``, ``launch/finetune.py`` and
``launch/stages.py`` from an installed package, with the same arguments (declared once: the launch scripts call
:func:`videomae.launching.launcher.main` and :func:`stages_main`). ``--config`` takes a file or a packaged recipe's
name (:func:`videomae.recipes.resolve`)::

    videomae demo-data demo_data
    deepspeed --num_gpus 2 --module videomae pretrain --config demo [key=value ...]
    torchrun --nproc_per_node 2 -m videomae finetune --config demo init=runs/demo/export/model.safetensors
    python -m videomae stages --config demo                # each stage under the recipe's launcher
"""

from __future__ import annotations

import argparse
import sys

from videomae import recipes
from videomae.launching import launcher

__all__ = ["add_finetune", "add_pretrain", "add_stages", "add_stages_arguments", "run_stages", "stages_main"]

_PRETRAIN = """\
Pretrain a video ViT with VideoMAE V2 dual masking on DeepSpeed (as launch/pretrain.py).

  deepspeed [--num_gpus N] --module videomae pretrain --config demo [key=value ...]
  torchrun --nproc_per_node N -m videomae pretrain --config NAME_OR_PATH [key=value ...]
  videomae pretrain --config NAME_OR_PATH [key=value ...]       # one process

Overrides are dotted keys with YAML values: train.max_steps=10 deepspeed.zero_stage=3 data.manifests=[a.csv]
"""

_FINETUNE = """\
Fine-tune (or post-pretrain) a video ViT classifier on DeepSpeed and evaluate it with several views per video
(as launch/finetune.py).

  deepspeed [--num_gpus N] --module videomae finetune --config demo [key=value ...]
  torchrun --nproc_per_node N -m videomae finetune --config NAME_OR_PATH [key=value ...]
  videomae finetune --config NAME_OR_PATH --eval-only [init=WEIGHTS]

--eval-only scores the run's newest checkpoint (else init, else <output_dir>/export/model.safetensors) on
data.test_manifests (else data.val_manifests) into <output_dir>/eval/.
"""

_STAGES = """\
Run a whole progressive recipe (pretrain -> post-pretrain -> fine-tune -> evaluation) declared in a stages file
(as launch/stages.py): every stage's config is checked before anything starts, done stages are skipped, an
interrupted one resumes; <output_root>/stages.json records each stage.

  videomae stages --config demo --dry-run                 # each stage's decision and exact command
  videomae stages --config FILE --only finetune | --from post_pretrain --force
  videomae stages --config FILE --launcher torchrun --nproc 8 train.max_steps=20
"""


def _add_run(subparsers: argparse._SubParsersAction, launch: launcher.Launch, summary: str, doc: str) -> None:
    p = subparsers.add_parser(
        launch.kind, help=summary, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    launcher.add_arguments(p, launch)
    # A training run's unexpected error keeps its traceback (main() turns only the handlers' own errors into lines).
    p.set_defaults(handler=lambda args: launcher.run(args, launch, f"videomae {launch.kind}"), own_errors=True)


def add_pretrain(subparsers: argparse._SubParsersAction) -> None:
    """Register ``pretrain``."""
    _add_run(subparsers, launcher.PRETRAIN, "pretrain on DeepSpeed (as launch/pretrain.py)", _PRETRAIN)


def add_finetune(subparsers: argparse._SubParsersAction) -> None:
    """Register ``finetune``."""
    _add_run(subparsers, launcher.FINETUNE, "fine-tune or evaluate on DeepSpeed (as launch/finetune.py)", _FINETUNE)


def add_stages_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the stages arguments on ``parser``: the stages file (``--config`` or ``--stages``, a file or a
    packaged recipe's name), ``key=value`` overrides, the stage selection, ``--force``, ``--dry-run`` and what
    replaces the file's launcher, process count and output root."""
    parser.add_argument(
        "--config", "--stages", dest="stages", required=True, metavar="NAME_OR_PATH",
        help=f"stages file, or a packaged stages recipe: {', '.join(recipes.names('stages'))}",
    )  # fmt: skip
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


def run_stages(args: argparse.Namespace, prog: str) -> int:
    """Load and check the whole recipe of parsed arguments (:func:`add_stages_arguments`), then run its stages.

    Returns:
        0 when every selected stage is done; 2 for a config error or a failed preflight check (nothing ran); 1 when
        a stage failed or stopped early.
    """
    from videomae.config import ConfigError
    from videomae.stages import load_recipe, run_recipe

    try:
        recipe = load_recipe(
            recipes.resolve(args.stages, ["stages"]), launcher=args.launcher, nproc=args.nproc,
            overrides=args.overrides, output_root=args.output_root,
        )  # fmt: skip
        return run_recipe(
            recipe, only=args.only, start=args.start, force=args.force, dry_run=args.dry_run, preflight=True
        )
    except ConfigError as err:
        print(f"{prog}: config error: {err}", file=sys.stderr)
        return 2


def stages_main(argv: list[str] | None, *, prog: str, doc: str) -> int:
    """``launch/stages.py``: parse ``argv`` (``--help`` prints ``doc``) and :func:`run_stages`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stages_arguments(parser)
    return run_stages(parser.parse_args(argv), prog)


def add_stages(subparsers: argparse._SubParsersAction) -> None:
    """Register ``stages``."""
    p = subparsers.add_parser(
        "stages", help="run a stages recipe: pretrain -> post-pretrain -> fine-tune (as launch/stages.py)",
        description=_STAGES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add_stages_arguments(p)
    p.set_defaults(handler=lambda args: run_stages(args, "videomae stages"), own_errors=True)
