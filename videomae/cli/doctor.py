"""``videomae doctor``: a run's preflight on the real launcher, backend and devices
(:mod:`videomae.launching.doctor`)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_doctor"]

_DESCRIPTION = """\
Check a run before a long job, with the launcher, backend and devices the run will use:
every collective the run uses (known answers), the shared output_dir, the model built under the configured ZeRO
stage and precision taking 2 optimizer steps on real clips, the checkpoint written and loaded back, a timed decode
of sample rows per manifest (unreadable rows named) and whether the run is data- or model-bound. Prints a
PASS/WARN/FAIL table on rank 0, writes <output_dir>/doctor.json, exits 1 on any FAIL (about a minute).

  deepspeed [--num_gpus N] --module videomae doctor --config CONFIG.yaml [key=value ...]
  torchrun --nproc_per_node N -m videomae doctor --config CONFIG.yaml [key=value ...]
  DOCTOR=1 sbatch launch/slurm/pretrain.sbatch [key=value ...]
  videomae doctor --config CONFIG.yaml            # one process
"""


def _run_doctor(args: argparse.Namespace) -> int:
    from videomae import recipes
    from videomae.config import ConfigError
    from videomae.launching.doctor import load_run_config, run_doctor

    kinds = ["pretrain", "finetune"] if args.stage == "auto" else [args.stage]
    try:
        path = recipes.resolve(args.config, kinds)
        stage, cfg = load_run_config(str(path), args.overrides, args.stage)
    except ConfigError as err:
        print(f"videomae doctor: config error: {err}", file=sys.stderr)
        return 2
    return run_doctor(cfg, stage, str(path), rows_per_manifest=args.rows, timeout_s=args.timeout, keep=args.keep)


def add_doctor(subparsers: argparse._SubParsersAction) -> None:
    """Register ``doctor``."""
    p = subparsers.add_parser(
        "doctor",
        help="preflight a run on its launcher, backend and devices: PASS/FAIL table, exit 1 on any FAIL",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, metavar="NAME_OR_PATH",
                   help="the run's YAML config (pretraining or fine-tuning), or a packaged recipe: pretrain/NAME, "
                        "finetune/NAME (or NAME alone with --stage)")  # fmt: skip
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, as for the run")
    p.add_argument("--stage", choices=("auto", "pretrain", "finetune"), default="auto",
                   help="which run the config is for (default: the loader that accepts it)")  # fmt: skip
    p.add_argument("--rows", type=int, default=16, help="rows each rank decodes per manifest (default 16)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds any one check may take before the doctor stops with a FAIL (default 600; a rank "
                        "that never joins is found after this long)")  # fmt: skip
    p.add_argument("--keep", action="store_true",
                   help="keep the 2-step checkpoint and export in <output_dir>/doctor (default: deleted)")  # fmt: skip
    # The deepspeed launcher appends --local_rank=N (LOCAL_RANK in the environment says the same).
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(handler=_run_doctor)
