#!/usr/bin/env python3
"""Pretrain a video ViT with VideoMAE V2 dual masking on DeepSpeed.

    deepspeed [--num_gpus N] launch/pretrain.py --config launch/configs/pretrain/demo.yaml [key=value ...]
    torchrun --nproc_per_node N launch/pretrain.py --config FILE [key=value ...]
    python launch/pretrain.py --config FILE [key=value ...]          # one process
    srun python launch/pretrain.py --config FILE [key=value ...]     # ranks from SLURM (see launch/slurm/)

Overrides are dotted keys with YAML values: ``train.max_steps=10 deepspeed.zero_stage=3 data.manifests=[a.csv]``.
"""

from __future__ import annotations

import sys

from videomae.config import load_config
from videomae.launching import launcher


def main(argv: list[str] | None = None) -> int:
    return launcher.main(
        argv, script="pretrain.py", doc=__doc__, config_help="YAML config file (launch/configs/pretrain/*.yaml)",
        load=load_config, train="videomae.methods.pretrain:run_pretraining",
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
