"""Atomic DeepSpeed checkpoints, auto-resume from the newest complete one, RNG state, fp32 export.

Layout under ``<output_dir>/checkpoints``::

    step_00000200/            complete: DeepSpeed files, rank_state_00000.pt ..., COMMITTED (json)
    step_00000300.tmp/        being written (or killed mid-write): never loaded, removed on the next save
    latest                    text file with the newest complete tag (informative; resume scans the folders)

A checkpoint is written under a ``.tmp`` tag; after every rank has finished, rank 0 writes ``COMMITTED`` last,
renames the folder to its final tag and updates ``latest``. A folder without ``COMMITTED`` is incomplete,
wherever a kill happened. Assumes ``output_dir`` is on a file system shared by all nodes.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videomae.engine import dist

__all__ = [
    "COMMIT_FILE",
    "CheckpointInfo",
    "checkpoint_at",
    "find_latest",
    "get_rng_state",
    "list_complete",
    "load_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]

log = logging.getLogger(__name__)

COMMIT_FILE = "COMMITTED"
_TAG = re.compile(r"^step_(\d+)$")


@dataclass(frozen=True)
class CheckpointInfo:
    """A complete checkpoint folder."""

    root: Path
    tag: str
    step: int
    meta: dict[str, Any]

    @property
    def path(self) -> Path:
        """The checkpoint folder."""
        return self.root / self.tag


def tag_for(step: int) -> str:
    """Folder name of the checkpoint taken after ``step`` optimizer steps."""
    return f"step_{step:08d}"


def list_complete(root: str | Path) -> list[CheckpointInfo]:
    """Complete checkpoints in ``root`` (with a readable commit marker), oldest first."""
    root = Path(root)
    found = []
    if not root.is_dir():
        return found
    for path in root.iterdir():
        match = _TAG.match(path.name)
        marker = path / COMMIT_FILE
        if not (match and path.is_dir() and marker.is_file()):
            continue
        try:
            meta = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("ignoring checkpoint %s: unreadable %s", path, COMMIT_FILE)
            continue
        found.append(CheckpointInfo(root, path.name, int(match.group(1)), meta))
    return sorted(found, key=lambda info: info.step)


def find_latest(root: str | Path) -> CheckpointInfo | None:
    """The newest complete checkpoint in ``root``, or None."""
    complete = list_complete(root)
    return complete[-1] if complete else None


def checkpoint_at(path: str | Path) -> CheckpointInfo:
    """The complete checkpoint in folder ``path`` (an explicit ``resume=PATH``).

    Raises:
        FileNotFoundError: the folder has no commit marker (incomplete or not a checkpoint).
    """
    path = Path(path)
    marker = path / COMMIT_FILE
    if not marker.is_file():
        raise FileNotFoundError(f"resume={path}: not a complete checkpoint (no {COMMIT_FILE} file)")
    meta = json.loads(marker.read_text())
    return CheckpointInfo(path.parent, path.name, int(meta["step"]), meta)


def get_rng_state(mask_generator: torch.Generator) -> dict[str, Any]:
    """Every random stream this process uses: python, numpy, torch (CPU, CUDA) and the mask generator."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "mask_generator": mask_generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], mask_generator: torch.Generator) -> None:
    """Restore what :func:`get_rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    mask_generator.set_state(state["mask_generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def save_checkpoint(
    engine: Any,
    root: str | Path,
    step: int,
    client_state: dict[str, Any],
    rank_state: dict[str, Any],
    keep_last: int,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint for ``step`` (collective: every rank calls it).

    Args:
        engine: the DeepSpeed engine (model, optimizer, loss scaler).
        root: checkpoint folder, usually ``<output_dir>/checkpoints``.
        step: optimizer steps done.
        client_state: run state shared by all ranks (step, resolved config, counters); stored by DeepSpeed.
        rank_state: this rank's own state (RNG streams, sampler), one file per rank.
        keep_last: complete checkpoints to keep; older ones are deleted after this one is committed.
        meta: extra JSON-safe facts stored in the commit marker (read back without loading the checkpoint).

    Returns:
        The committed checkpoint folder.
    """
    root = Path(root)
    tag = tag_for(step)
    tmp_tag = tag + ".tmp"
    if dist.is_main():
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(root / tmp_tag, ignore_errors=True)
    dist.barrier()
    engine.save_checkpoint(str(root), tag=tmp_tag, client_state=client_state, save_latest=False)
    torch.save(rank_state, root / tmp_tag / f"rank_state_{engine.global_rank:05d}.pt")
    dist.barrier()
    if dist.is_main():
        meta = {
            "step": step,
            "time": time.time(),
            "world_size": engine.world_size,
            "zero_stage": engine.zero_optimization_stage(),
            **(meta or {}),
        }
        _write_atomic(root / tmp_tag / COMMIT_FILE, json.dumps(meta))
        shutil.rmtree(root / tag, ignore_errors=True)
        os.replace(root / tmp_tag, root / tag)
        _write_atomic(root / "latest", tag)
        _prune(root, keep_last)
    dist.barrier()
    return root / tag


def _prune(root: Path, keep_last: int) -> None:
    complete = list_complete(root)
    for info in complete[:-keep_last]:
        shutil.rmtree(info.path, ignore_errors=True)
    for path in root.glob("step_*.tmp"):
        shutil.rmtree(path, ignore_errors=True)


def load_checkpoint(engine: Any, info: CheckpointInfo) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Load model, optimizer and loss scaler from ``info`` (collective).

    Returns:
        The client state and this rank's own state (None when the checkpoint was written by fewer ranks).

    Raises:
        RuntimeError: resuming a ZeRO-partitioned checkpoint on a different number of processes.
    """
    saved_world = info.meta.get("world_size", engine.world_size)
    universal = engine.load_universal_checkpoint() if hasattr(engine, "load_universal_checkpoint") else False
    if saved_world != engine.world_size and info.meta.get("zero_stage", 0) > 0 and not universal:
        raise RuntimeError(
            f"checkpoint {info.path} was written by {saved_world} processes with ZeRO stage "
            f"{info.meta.get('zero_stage')}; this run has {engine.world_size}. Partitioned optimizer states cannot "
            "be re-split here: resume on the same number of processes, or convert the checkpoint with "
            "`python -m deepspeed.checkpoint.ds_to_universal` and load it with "
            "deepspeed.extra={checkpoint: {load_universal: true}}."
        )
    _, client_state = engine.load_checkpoint(
        str(info.root), tag=info.tag, load_optimizer_states=True, load_lr_scheduler_states=False
    )
    if client_state is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {info.path}")
    rank_file = info.path / f"rank_state_{engine.global_rank:05d}.pt"
    rank_state = torch.load(rank_file, weights_only=False) if rank_file.is_file() else None
    return client_state, rank_state
