#!/usr/bin/env python3
"""Fine-tune (or post-pretrain) a video ViT classifier on DeepSpeed, and evaluate it with several views per video.

    deepspeed [--num_gpus N] launch/finetune.py --config launch/configs/finetune/demo.yaml [key=value ...]
    torchrun --nproc_per_node N launch/finetune.py --config FILE [key=value ...]
    python launch/finetune.py --config FILE [key=value ...]          # one process
    srun python launch/finetune.py --config FILE [key=value ...]     # ranks from SLURM (see launch/slurm/)
    python launch/finetune.py --config FILE --eval-only [init=WEIGHTS]

Overrides are dotted keys with YAML values: ``init=runs/demo/export/model.safetensors train.eval_every=50``.
``--eval-only`` scores ``init`` when given (a training run in the same output_dir is left alone), else the run's
newest checkpoint, else ``<output_dir>/export/model.safetensors``, on ``data.test_manifests`` (else
``data.val_manifests``) into ``<output_dir>/eval_only/``, beside the training run's own ``eval/``.
"""

from __future__ import annotations

import sys

from videomae.config import load_finetune_config
from videomae.launching import launcher


def main(argv: list[str] | None = None) -> int:
    return launcher.main(
        argv, script="finetune.py", doc=__doc__, config_help="YAML config file (launch/configs/finetune/*.yaml)",
        load=load_finetune_config, train="videomae.methods.finetune:run_finetuning",
        evaluate="videomae.methods.finetune:evaluate_only",
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
