#!/usr/bin/env python3
"""Pretrain a video ViT with VideoMAE V2 dual masking on DeepSpeed.

    deepspeed [--num_gpus N] launch/pretrain.py --config demo [key=value ...]
    torchrun --nproc_per_node N launch/pretrain.py --config FILE [key=value ...]
    python launch/pretrain.py --config FILE [key=value ...]          # one process
    srun python launch/pretrain.py --config FILE [key=value ...]     # ranks from SLURM (see launch/slurm/)

``--config`` is a YAML file or a packaged recipe's name (``demo``, ``vit_b_hybrid``...: videomae/recipes/pretrain/).
Overrides are dotted keys with YAML values: ``train.max_steps=10 deepspeed.zero_stage=3 data.manifests=[a.csv]``.
The installed package runs the same as ``videomae pretrain`` (``deepspeed --module videomae pretrain ...``).
"""

from __future__ import annotations

import sys

from videomae.launching import launcher


def main(argv: list[str] | None = None) -> int:
    return launcher.main(argv, launcher.PRETRAIN, script="pretrain.py", doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
