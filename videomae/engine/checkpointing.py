"""Atomic DeepSpeed checkpoints, auto-resume from the newest complete one, RNG state, fp32 export.

Layout under ``<output_dir>/checkpoints``::

    step_00000200/            complete: DeepSpeed files, rank_state_00000.pt ..., COMMITTED (json)
    step_00000300.tmp/        being written (or killed mid-write): never loaded, removed on the next save
    step_00000200.universal/  DeepSpeed universal conversion of step_00000200 (made when a ZeRO run resumes on
                              another number of processes), with its own COMMITTED; ``.universal.tmp`` while converting
    latest                    text file with the newest complete tag (informative; resume scans the folders)

A checkpoint is written under a ``.tmp`` tag; after every rank has finished, rank 0 writes ``COMMITTED`` last,
renames the folder to its final tag and updates ``latest``. A folder without ``COMMITTED`` is incomplete,
wherever a kill happened. A write that fails on any rank fails the save on every rank (no rank is left waiting in a
collective): the ``.tmp`` folder is removed and :class:`CheckpointWriteError` names the rank, the file and the cause
(``no space left on PATH``, see :mod:`videomae.disk_faults`) and the committed checkpoint a rerun resumes from.
Assumes ``output_dir`` is on a file system shared by all nodes.

Resuming on a different number of processes: without ZeRO every rank holds whole model and optimizer states, so
any rank count loads them. ZeRO-1/2/3 split the optimizer states (and gradients, parameters) across ranks; such a
checkpoint is converted once, on rank 0, into DeepSpeed's universal format (one folder per parameter) and loaded
with DeepSpeed's universal path, which re-partitions for the new rank count (:func:`resume_needs_universal`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from videomae.disk_faults import SaveFailed, WriteGuard, write_text_atomic
from videomae.engine import dist
from videomae.engine.ds_engine import TrainingEngine
from videomae.engine.save_guard import failures_across_ranks, guarded_engine_writes

__all__ = [
    "COMMIT_FILE",
    "UNIVERSAL_SUFFIX",
    "CheckpointInfo",
    "CheckpointWriteError",
    "ResumeError",
    "checkpoint_at",
    "find_latest",
    "find_resume_checkpoint",
    "list_complete",
    "load_checkpoint",
    "prepare_universal",
    "resume_needs_universal",
    "save_checkpoint",
    "universal_path",
]

log = logging.getLogger(__name__)

COMMIT_FILE = "COMMITTED"
UNIVERSAL_SUFFIX = ".universal"
_TAG = re.compile(r"^step_(\d+)$")


class ResumeError(RuntimeError):
    """A checkpoint that this run's process count or ZeRO stage cannot continue from."""


class CheckpointWriteError(SaveFailed):
    """A checkpoint could not be written on some rank (raised on every rank); the message names the rank, the file
    and the cause (``no space left on PATH``) and says which committed checkpoint the run resumes from."""


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
        FileNotFoundError: the folder has no commit marker (incomplete or not a checkpoint), or is a universal
            conversion rather than the checkpoint it was made from.
    """
    path = Path(path)
    if path.name.endswith(UNIVERSAL_SUFFIX):
        raise FileNotFoundError(
            f"resume={path}: a universal conversion, made and used automatically; point resume at the original "
            f"checkpoint {path.with_name(path.name.removesuffix(UNIVERSAL_SUFFIX))}"
        )
    marker = path / COMMIT_FILE
    if not marker.is_file():
        raise FileNotFoundError(f"resume={path}: not a complete checkpoint (no {COMMIT_FILE} file)")
    meta = json.loads(marker.read_text())
    return CheckpointInfo(path.parent, path.name, int(meta["step"]), meta)


def find_resume_checkpoint(cfg: Any, root: str | Path) -> CheckpointInfo | None:
    """The checkpoint this run continues from, per ``cfg.resume``; None for a fresh start.

    Raises:
        RuntimeError: auto-resume found a run started from other ``init`` weights than the ones requested.
        FileNotFoundError: an explicit ``resume`` folder is not a complete checkpoint.
    """
    if cfg.resume == "never":
        return None
    if cfg.resume != "auto":
        return checkpoint_at(cfg.resume)
    info = find_latest(root)
    if info is not None and info.meta.get("init") != cfg.init:
        raise RuntimeError(
            f"init={cfg.init!r} was requested but {info.path} continues a run started from "
            f"init={info.meta.get('init')!r}; auto-resume never replaces an explicit init: use a new output_dir "
            "or resume=never"
        )
    return info


def save_checkpoint(
    engine: TrainingEngine,
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

    Raises:
        CheckpointWriteError: on every rank when a write failed on any (the uncommitted folder is removed).
    """
    root = Path(root)
    tag = tag_for(step)
    tmp_tag = tag + ".tmp"
    if dist.is_main():
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(root / tmp_tag, ignore_errors=True)
    dist.barrier()
    guard = WriteGuard()
    with guarded_engine_writes(engine, guard):
        engine.save_checkpoint(str(root), tag=tmp_tag, client_state=client_state, save_latest=False)
    rank_file = root / tmp_tag / f"rank_state_{engine.global_rank:05d}.pt"
    guard.call(rank_file, torch.save, rank_state, rank_file)
    failures = failures_across_ranks(guard)  # collective: also the barrier before the commit
    if failures:
        _abandon(root, tag, failures)
    commit = WriteGuard()
    if dist.is_main():
        facts = {"step": step, "time": time.time(), "world_size": engine.world_size,
                 "zero_stage": engine.zero_optimization_stage(), **(meta or {})}  # fmt: skip
        commit.call(root / tmp_tag, _commit, root, tag, facts, keep_last)
    error = dist.broadcast_object(commit.describe())  # also the barrier after the commit
    if error is not None:
        _abandon(root, tag, [f"rank 0: {error}"])
    return root / tag


def _commit(root: Path, tag: str, meta: dict[str, Any], keep_last: int) -> None:
    """Rank 0: mark ``<tag>.tmp`` complete, rename it to ``tag``, point ``latest`` at it, prune older ones."""
    tmp = root / (tag + ".tmp")
    write_text_atomic(tmp / COMMIT_FILE, json.dumps(meta))
    shutil.rmtree(root / tag, ignore_errors=True)
    os.replace(tmp, root / tag)
    write_text_atomic(root / "latest", tag)
    _prune(root, keep_last)


def _abandon(root: Path, tag: str, failures: list[str]) -> None:
    """Remove the uncommitted ``<tag>.tmp`` (rank 0), then raise :class:`CheckpointWriteError` on every rank."""
    if dist.is_main():
        shutil.rmtree(root / (tag + ".tmp"), ignore_errors=True)
    dist.barrier()
    last = find_latest(root)
    kept = "No checkpoint is committed yet" if last is None else (
        f"The last committed checkpoint {last.path} is kept; rerun to resume from it")  # fmt: skip
    raise CheckpointWriteError(f"saving checkpoint {root / tag} failed: {'; '.join(failures)}. {kept}")


def _prune(root: Path, keep_last: int) -> None:
    complete = list_complete(root)
    for info in complete[:-keep_last]:
        shutil.rmtree(info.path, ignore_errors=True)
    for path in root.glob("step_*.tmp"):  # also step_*.universal.tmp: conversions run before any save
        shutil.rmtree(path, ignore_errors=True)
    for path in root.glob(f"step_*{UNIVERSAL_SUFFIX}"):
        if not (root / path.name.removesuffix(UNIVERSAL_SUFFIX)).is_dir():
            shutil.rmtree(path, ignore_errors=True)


def resume_needs_universal(info: CheckpointInfo, world_size: int, zero_stage: int) -> bool:
    """Whether continuing from ``info`` with ``world_size`` processes at ``zero_stage`` needs a universal checkpoint.

    Same process count and stage: the checkpoint loads as written. ZeRO-0 on both sides: every rank's files hold
    whole states, any process count loads them. ZeRO-1/2/3 written by another process count: yes.

    Raises:
        ResumeError: the ZeRO stage differs from the checkpoint's (not converted here), naming both stages, both
            process counts and what to do.
    """
    saved_world = int(info.meta.get("world_size", world_size))
    saved_stage = int(info.meta.get("zero_stage", zero_stage))
    if saved_stage != zero_stage:
        raise ResumeError(
            f"checkpoint {info.path} was written with ZeRO stage {saved_stage} by {saved_world} processes; this run "
            f"uses ZeRO stage {zero_stage} with {world_size}. Changing the stage on resume is not supported: resume "
            f"with deepspeed.zero_stage={saved_stage} (any process count"
            f"{'' if saved_stage == 0 else ', converted automatically'}), or start a new run from its exported "
            "weights with init=<output_dir>/export/model.safetensors (optimizer state is then not carried over)."
        )
    return saved_world != world_size and saved_stage > 0


def universal_path(info: CheckpointInfo) -> Path:
    """Folder of the universal conversion of ``info`` (next to it)."""
    return info.root / (info.tag + UNIVERSAL_SUFFIX)


def _complete_universal(info: CheckpointInfo) -> CheckpointInfo | None:
    marker = universal_path(info) / COMMIT_FILE
    try:
        meta = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if meta.get("source_step") != info.step or meta.get("source_time") != info.meta.get("time"):
        return None  # left over from an older checkpoint of the same step (a rerun in the same folder)
    return CheckpointInfo(info.root, info.tag + UNIVERSAL_SUFFIX, info.step, {**info.meta, **meta})


def prepare_universal(info: CheckpointInfo, convert: Callable[[Path, Path], None] | None = None) -> CheckpointInfo:
    """The universal conversion of ``info``, made on rank 0 if not there yet (collective: every rank calls it).

    Rank 0 converts into ``<tag>.universal.tmp``, writes the commit marker last and renames the folder; a kill
    mid-conversion leaves only the ``.tmp`` folder, which is never loaded and is redone on the next start. The
    other ranks wait for rank 0's outcome and raise the same error if it failed.

    Args:
        info: a complete ZeRO-1/2/3 checkpoint.
        convert: ``convert(checkpoint_dir, output_dir)``; default
            :func:`videomae.engine.deepspeed_setup.convert_to_universal`.

    Raises:
        ResumeError: the conversion failed (on every rank).
    """
    error = None
    if dist.is_main():
        try:
            if _complete_universal(info) is None:
                _convert(info, convert)
        except Exception as exc:  # reported on every rank below
            error = f"{type(exc).__name__}: {exc}"
    error = dist.broadcast_object(error)
    if error is not None:
        raise ResumeError(
            f"checkpoint {info.path} (ZeRO stage {info.meta.get('zero_stage')}, {info.meta.get('world_size')} "
            f"processes) could not be converted to a universal checkpoint for another process count: {error}. "
            f"Resume on {info.meta.get('world_size')} processes instead."
        )
    converted = _complete_universal(info)
    if converted is None:
        raise ResumeError(
            f"{universal_path(info)}: no complete universal checkpoint after conversion (file system "
            "not shared between nodes?)"
        )
    return converted


def _convert(info: CheckpointInfo, convert: Callable[[Path, Path], None] | None) -> None:
    if convert is None:
        from videomae.engine.deepspeed_setup import convert_to_universal as convert
    final = universal_path(info)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(final, ignore_errors=True)  # stale (no marker, or of an older checkpoint)
    start = time.perf_counter()
    log.info("converting %s (ZeRO-%s, %s processes) to a universal checkpoint", info.path,
             info.meta.get("zero_stage"), info.meta.get("world_size"))  # fmt: skip
    convert(info.path, tmp)
    meta = {
        "source_step": info.step,
        "source_time": info.meta.get("time"),
        "source_world_size": info.meta.get("world_size"),
        "source_zero_stage": info.meta.get("zero_stage"),
        "time": time.time(),
    }
    write_text_atomic(tmp / COMMIT_FILE, json.dumps(meta))
    os.replace(tmp, final)
    log.info("universal checkpoint %s written in %.1f s", final, time.perf_counter() - start)


def load_checkpoint(
    engine: TrainingEngine, info: CheckpointInfo, convert: Callable[[Path, Path], None] | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Load model, optimizer and loss scaler from ``info`` (collective).

    A ZeRO checkpoint written by another number of processes is converted to a universal checkpoint
    (:func:`prepare_universal`) and loaded through DeepSpeed's universal path; the engine must have been created
    for that (``build_ds_config(..., load_universal=True)``, decided with :func:`resume_needs_universal`).

    Args:
        engine: the DeepSpeed engine.
        info: the checkpoint.
        convert: passed to :func:`prepare_universal`.

    Returns:
        The client state and this rank's own state (None when the checkpoint was written by fewer ranks).

    Raises:
        ResumeError: the stage differs, or the engine was not set up to load a universal checkpoint.
    """
    saved_world = info.meta.get("world_size", engine.world_size)
    universal = engine.load_universal_checkpoint() if hasattr(engine, "load_universal_checkpoint") else False
    needs_universal = resume_needs_universal(info, engine.world_size, engine.zero_optimization_stage())
    if needs_universal and not universal:
        raise ResumeError(
            f"checkpoint {info.path} was written by {saved_world} processes with ZeRO stage "
            f"{info.meta.get('zero_stage')}; this run has {engine.world_size}. Partitioned optimizer states must be "
            "re-split through a universal checkpoint: create the engine with "
            "deepspeed_setup.build_ds_config(..., load_universal=True) (the trainer does), or resume on "
            f"{saved_world} processes."
        )
    use_universal = universal and int(info.meta.get("zero_stage", 0)) > 0
    source = prepare_universal(info, convert) if use_universal else info
    # DeepSpeed's universal loaders copy the saved optimizer's param-group settings onto this run's groups (ZeRO-3:
    # group 0's onto all, which would give norms and biases weight decay); this run's groups come from its config.
    current = engine.optimizer.param_groups if use_universal else []
    groups = [{k: v for k, v in g.items() if k != "params"} for g in current]
    from videomae.engine.deepspeed_setup import weights_only_loads  # deepspeed is imported by the engine only

    rank_file = info.path / f"rank_state_{engine.global_rank:05d}.pt"
    with weights_only_loads():  # DeepSpeed unpickles its files with weights_only=False otherwise; ours too: tensors
        _, client_state = engine.load_checkpoint(
            str(source.root), tag=source.tag, load_optimizer_states=True, load_lr_scheduler_states=False
        )
        rank_state = torch.load(rank_file, map_location="cpu") if rank_file.is_file() else None
    for group, saved in zip(engine.optimizer.param_groups if use_universal else [], groups):
        group.update(saved)
    if client_state is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {source.path}")

    return client_state, rank_state
