"""Pretrain a video ViT with VideoMAE V2 dual masking on DeepSpeed.

    deepspeed [--num_gpus N] launch/pretrain.py --config launch/configs/pretrain/demo.yaml [key=value ...]
    torchrun --nproc_per_node N launch/pretrain.py --config FILE [key=value ...]
    python launch/pretrain.py --config FILE [key=value ...]          # one process
    srun python launch/pretrain.py --config FILE [key=value ...]     # ranks from SLURM (see launch/slurm/)

Overrides are dotted keys with YAML values: ``train.max_steps=10 deepspeed.zero_stage=3 data.manifests=[a.csv]``.
"""

from __future__ import annotations

import argparse
import sys

from videomae.config import ConfigError, PretrainConfig, config_to_dict, load_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config file (launch/configs/pretrain/*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, YAML values")
    parser.add_argument("--dry-run", action="store_true", help="print the launch environment and config, then exit")
    parser.add_argument("--print-output-dir", action="store_true", help="print the resolved output_dir and exit")
    # The deepspeed launcher appends --local_rank=N; LOCAL_RANK in the environment says the same.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def dry_run(cfg: PretrainConfig) -> None:
    """Print how this process would start: ranks and rendezvous, batch and lr figures, the config."""
    import yaml

    from videomae.engine.dist import resolve_env

    env = resolve_env()
    for key, value in env.as_environ().items():
        print(f"{key}={value}")
    print(f"NUM_NODES={env.num_nodes}")
    effective = cfg.train.effective_batch(env.world_size, cfg.data.num_sample)
    print(f"EFFECTIVE_BATCH={effective}")
    print(f"PEAK_LR={cfg.train.absolute_lr(env.world_size, cfg.data.num_sample):.6g}")
    print(f"OUTPUT_DIR={cfg.output_dir}")
    print("--- config")
    print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"pretrain.py: config error: {err}", file=sys.stderr)
        return 2
    if args.print_output_dir:
        print(cfg.output_dir)
        return 0
    if args.dry_run:
        dry_run(cfg)
        return 0

    from videomae.engine import dist
    from videomae.engine.trainer import run_pretraining

    try:
        summary = run_pretraining(cfg)
    finally:
        dist.destroy()
    if summary.stopped_early:
        print(f"stopped at step {summary.step} on request; checkpoint written, rerun to resume", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
