"""A collective checkpoint save that fails together: DeepSpeed's file writes kept by a
:class:`~videomae.disk_faults.WriteGuard` on each rank, then one agreement on what failed where.

A rank whose write raised in the middle of ``engine.save_checkpoint`` would leave the other ranks in DeepSpeed's
barriers (and ZeRO-3 gathers) forever; with the writes guarded every rank walks through the same collectives and
the outcome is settled afterwards with :func:`failures_across_ranks`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from videomae.disk_faults import WriteGuard
from videomae.engine import dist
from videomae.engine.ds_engine import TrainingEngine

__all__ = ["failures_across_ranks", "guarded_engine_writes"]


@contextmanager
def guarded_engine_writes(engine: TrainingEngine, guard: WriteGuard) -> Iterator[None]:
    """Route the files DeepSpeed's ``save_checkpoint`` writes on this rank through ``guard`` for the block."""
    patched = []
    writer = getattr(engine, "checkpoint_engine", None)
    if writer is not None and hasattr(writer, "save"):
        save = writer.save
        writer.save = lambda state_dict, path: guard.call(path, save, state_dict, path)
        patched.append((writer, "save"))
    if hasattr(engine, "_copy_recovery_script"):  # rank 0 copies DeepSpeed's zero_to_fp32.py into the folder
        copy = engine._copy_recovery_script
        engine._copy_recovery_script = lambda save_path: guard.call(save_path, copy, save_path)
        patched.append((engine, "_copy_recovery_script"))
    try:
        yield
    finally:
        for owner, name in patched:
            del owner.__dict__[name]  # the class's method shows through again


def failures_across_ranks(guard: WriteGuard) -> list[str]:
    """``"rank R: what failed"`` for every rank whose guard kept a failure; empty when none did (collective)."""
    if not dist.any_rank(guard.error is not None):
        return []
    texts = dist.all_gather_objects(guard.describe())
    return [f"rank {rank}: {text}" for rank, text in enumerate(texts) if text]
