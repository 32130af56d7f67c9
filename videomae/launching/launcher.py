"""What the training entry points share: arguments, config errors before anything starts, the dry run.

``launch/pretrain.py``, ``launch/finetune.py`` and ``videomae pretrain|finetune`` (:mod:`videomae.cli.train`) are
each a few lines naming a :class:`Launch` (:data:`PRETRAIN`, :data:`FINETUNE`: the config loader and the run
function). ``--config`` is a file or a packaged recipe's name (:func:`videomae.recipes.resolve`). The run is imported
only after the config and the preflight checks (:mod:`videomae.launching.preflight`) have passed, so ``--dry-run``,
``--print-output-dir``, config errors and failed checks never load DeepSpeed. ``--dry-run`` runs the checks of the
config against itself and its model (:mod:`videomae.launching.config_checks`: clip shape, model sizes, masks,
``output_dir``) and checks that the manifests are listed and exist, but reads no manifest, video or weights and
binds no port.

Every rank loads and checks the same config, and every rank exits with status 2 on a problem, but only global rank 0
says why: one message, not one per process. (On a multi-node job, the first process of each other node adds one line
when it fails too, since a node may not see the files rank 0 sees.)
"""

from __future__ import annotations

import argparse
import importlib
import logging
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videomae import recipes
from videomae.config import ConfigError, config_to_dict, load_config, load_finetune_config
from videomae.config.batch_plan import batch_plan

__all__ = ["FINETUNE", "PRETRAIN", "Launch", "add_arguments", "dry_run", "main", "parse_args", "run"]


@dataclass(frozen=True)
class Launch:
    """What a training entry point runs: the kind of its recipes, its config loader and its run functions."""

    kind: str
    """``pretrain`` or ``finetune``: the packaged recipes ``--config NAME`` is looked up in."""
    load: Callable[[str | Path, list[str]], Any]
    """``(path, overrides) -> config``; raises ``ConfigError``."""
    train: str
    """``"module:function"`` running the stage, ``cfg -> RunSummary`` (imported after the checks passed)."""
    evaluate: str | None = None
    """``"module:function"`` for ``--eval-only`` (None: the stage has no such mode)."""


PRETRAIN = Launch("pretrain", load_config, "videomae.methods.dispatch:run_pretraining_method")
FINETUNE = Launch("finetune", load_finetune_config, "videomae.methods.finetune:run_finetuning",
                  "videomae.methods.finetune:evaluate_only")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser, launch: Launch) -> None:
    """Declare the launcher arguments on ``parser``: ``--config NAME_OR_PATH``, ``key=value`` overrides,
    ``--dry-run``, ``--print-output-dir`` (and ``--eval-only`` when the stage has one). ``launch/*.py`` and
    ``videomae pretrain|finetune`` both declare theirs here."""
    parser.add_argument(
        "--config", required=True, metavar="NAME_OR_PATH",
        help=f"YAML config file, or a packaged {launch.kind} recipe: {', '.join(recipes.names(launch.kind))}",
    )  # fmt: skip
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, YAML values")
    parser.add_argument(
        "--dry-run", action="store_true",
        help="check the config against its model, output_dir and manifests, print the launch environment, then exit",
    )  # fmt: skip
    parser.add_argument("--print-output-dir", action="store_true", help="print the resolved output_dir and exit")
    if launch.evaluate is not None:
        parser.add_argument(
            "--eval-only", action="store_true",
            help="evaluate init (else the run's newest checkpoint, else its export) on the test set into "
            "<output_dir>/eval_only/; no training",
        )  # fmt: skip
    # The deepspeed launcher appends --local_rank=N; LOCAL_RANK in the environment says the same.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)


def parse_args(argv: list[str] | None, doc: str, launch: Launch) -> argparse.Namespace:
    """The launcher arguments (:func:`add_arguments`) of an entry point whose ``--help`` text is ``doc``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, launch)
    return parser.parse_args(argv)


def dry_run(cfg: Any) -> None:
    """Print how this process would start: ranks and rendezvous, batch and lr figures, the config."""
    import yaml

    from videomae.engine.dist import resolve_env

    env = resolve_env()
    for key, value in env.as_environ().items():
        print(f"{key}={value}")
    print(f"NUM_NODES={env.num_nodes}")
    plan = batch_plan(cfg, env.world_size)
    print(f"EFFECTIVE_BATCH={plan.lr_batch}")
    print(f"CLIPS_PER_STEP={plan.clips_per_step}")
    print(f"PEAK_LR={plan.peak_lr:.6g}")
    print(f"OUTPUT_DIR={cfg.output_dir}")
    print("--- config")
    print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")


def _preflight(cfg: Any, script: str, eval_only: bool, dry: bool = False) -> bool:
    """Run the preflight checks on this rank (``dry``: only the config's, :mod:`videomae.launching.config_checks`);
    False (after :func:`_report`) when one failed, else True after rank 0 printed any warnings."""
    from videomae.engine.dist import resolve_env
    from videomae.launching.findings import format_failures, format_warnings

    if dry:
        from videomae.launching.preflight import dry_run_findings

        findings = dry_run_findings(cfg, eval_only)
    else:
        from videomae.launching.preflight import preflight_findings

        # Only global rank 0 binds the rendezvous port, on the master host, so only it can tell whether it is free.
        findings = preflight_findings(cfg, check_port=resolve_env().rank == 0, eval_only=eval_only, quick=True)
    failed = [f for f in findings if not f.ok]
    if not failed:
        warnings = format_warnings(findings, script)
        if warnings and (dry or resolve_env().rank == 0):
            print(warnings, file=sys.stderr, flush=True)
        return True
    first = failed[0]
    # A dry run is one process showing some rank's view (under srun, maybe not rank 0's): it always says why.
    _report(format_failures(findings, script), f"{script}: {first.check}: {first.detail.splitlines()[0]}", dry)
    return False


def _report(message: str, line: str, alone: bool = False) -> None:
    """Print ``message`` on global rank 0 (or in any ``alone`` process); the first process of each other node
    prints ``line`` (one line: the node may see other files than rank 0), the other processes nothing."""
    from videomae.engine.dist import resolve_env

    env = resolve_env()
    if env.rank == 0 or alone:
        print(message, file=sys.stderr, flush=True)
    elif env.local_rank == 0 and env.node_rank > 0:
        print(f"[node {env.node_rank} {socket.gethostname()}] {line}", file=sys.stderr, flush=True)


def _function(path: str) -> Callable[[Any], Any]:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None, launch: Launch, *, script: str, doc: str) -> int:
    """Parse the arguments, then :func:`run` the stage on this rank (``launch/pretrain.py``, ``launch/finetune.py``).

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).
        launch: the stage (:data:`PRETRAIN`, :data:`FINETUNE`).
        script: name used in messages (``pretrain.py``).
        doc: the entry point's docstring (the ``--help`` text).

    Returns:
        The exit status of :func:`run`.
    """
    return run(parse_args(argv, doc, launch), launch, script)


def run(args: argparse.Namespace, launch: Launch, script: str) -> int:
    """Resolve, load and check the config of parsed launcher arguments (:func:`add_arguments`), then run the stage.

    Args:
        args: the parsed arguments.
        launch: the stage (:data:`PRETRAIN`, :data:`FINETUNE`).
        script: name used in messages (``pretrain.py``, ``videomae pretrain``).

    Returns:
        The exit status: 0; 2 for a config error or a failed preflight check (on every rank; in ``--dry-run`` the
        config's own checks); 1 when a checkpoint or the export could not be written or too many clips failed to
        load (on every rank).
    """
    try:
        cfg = launch.load(recipes.resolve(args.config, [launch.kind]), args.overrides)
    except ConfigError as err:
        _report(f"{script}: config error: {err}", f"{script}: config error: {str(err).splitlines()[0]}", args.dry_run)
        return 2
    if args.print_output_dir:
        print(cfg.output_dir)
        return 0
    eval_only = getattr(args, "eval_only", False)
    if eval_only:
        cfg = cfg.for_evaluation()
    if not _preflight(cfg, script, eval_only, dry=args.dry_run):
        return 2
    if args.dry_run:
        dry_run(cfg)
        return 0

    from videomae.data.bad_samples import TooManyBadSamples
    from videomae.disk_faults import SaveFailed
    from videomae.engine import dist
    from videomae.engine.bad_sample_meter import BadSampleCeiling

    try:
        if eval_only:
            _function(launch.evaluate)(cfg)
            return 0
        summary = _function(launch.train)(cfg)
    except (SaveFailed, BadSampleCeiling) as err:  # raised alike on every rank: said once, into train.log too
        if dist.is_main():
            logging.getLogger(script).error("%s: %s", type(err).__name__, err)
        return 1
    except TooManyBadSamples as err:
        # One rank's loader met a streak of unreadable clips: said by that rank (train.log names it); its exit makes
        # the launcher (torchrun, deepspeed, srun --kill-on-bad-exit) end the other ranks.
        # A DataLoader worker's exception comes back wrapped: its own one-line message ends the text.
        message = str(err).rstrip().splitlines()[-1].rpartition("TooManyBadSamples: ")[2]
        logging.getLogger(script).error("TooManyBadSamples: %s", message)
        return 1
    finally:
        dist.destroy()
    if summary.stopped_early:
        print(f"stopped at step {summary.step} on request; checkpoint written, rerun to resume", file=sys.stderr)
    return 0
