"""The process's place in a run, before anything is built: process group, logging, seeds and the resume point."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videomae.config import ConfigError
from videomae.engine import dist
from videomae.engine.checkpointing import CheckpointInfo, find_resume_checkpoint
from videomae.engine.logging_utils import setup_logging
from videomae.engine.rng_state import process_seed

__all__ = ["Session", "start_session"]


@dataclass(frozen=True)
class Session:
    """What every rank of a run knows once its process group is up."""

    cfg: Any
    """The resolved config (a pretraining or fine-tuning one)."""
    env: dist.DistEnv
    device: torch.device
    resume_from: CheckpointInfo | None
    """The checkpoint this run continues (the same on every rank), or None for a fresh start."""

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.output_dir)

    @property
    def checkpoint_root(self) -> Path:
        return self.output_dir / "checkpoints"


def start_session(cfg: Any) -> Session:
    """Join the process group, log to ``train.log``, seed this rank's global generators and agree on the resume
    point (collective: every rank calls it).

    Raises:
        ConfigError: a precision the device cannot run.
    """
    env, device = dist.init_distributed()
    if cfg.precision == "fp16" and device.type == "cpu":
        raise ConfigError("precision: fp16 needs a GPU (DeepSpeed's CPU accelerator has none); use bf16 or fp32")
    out = Path(cfg.output_dir)
    setup_logging(env.rank, out / "train.log")
    seed = process_seed(cfg.seed, env.rank)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    resume_from = find_resume_checkpoint(cfg, out / "checkpoints") if dist.is_main() else None
    return Session(cfg, env, device, dist.broadcast_object(resume_from))
