#!/usr/bin/env python3
"""Fine-tune (or post-pretrain) a video ViT classifier on DeepSpeed, and evaluate it with several views per video.

    deepspeed [--num_gpus N] launch/finetune.py --config demo [key=value ...]
    torchrun --nproc_per_node N launch/finetune.py --config FILE [key=value ...]
    python launch/finetune.py --config FILE [key=value ...]          # one process
    srun python launch/finetune.py --config FILE [key=value ...]     # ranks from SLURM (see launch/slurm/)
    python launch/finetune.py --config FILE --eval-only [init=WEIGHTS]

``--config`` is a YAML file or a packaged recipe's name (``demo``, ``vit_b_k400``...: videomae/recipes/finetune/).
Overrides are dotted keys with YAML values: ``init=runs/demo/export/model.safetensors train.eval_every=50``.
``--eval-only`` scores ``init`` when given (a training run in the same output_dir is left alone), else the run's
newest checkpoint, else ``<output_dir>/export/model.safetensors``, on ``data.test_manifests`` (else
``data.val_manifests``) into ``<output_dir>/eval_only/``, beside the training run's own ``eval/``.
The installed package runs the same as ``videomae finetune`` (``deepspeed --module videomae finetune ...``).
"""

from __future__ import annotations

import sys

from videomae.launching import launcher


def main(argv: list[str] | None = None) -> int:
    return launcher.main(argv, launcher.FINETUNE, script="finetune.py", doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
