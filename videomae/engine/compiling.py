"""``train.compile``: ``torch.compile`` of the engine's module, and the proof that steps ran compiled code.

DeepSpeed's ``engine.compile()`` compiles the module's ``__call__`` (``nn.Module.compile``); TorchDynamo falls back
to eager execution for frames it cannot capture, which would leave a "compiled" run eager without a word. After the
first step :func:`check_compiled` reads Dynamo's counters: no graph captured is an error, graph breaks a warning.
"""

from __future__ import annotations

import logging

import torch

from videomae.engine.ds_engine import TrainingEngine

__all__ = ["CompileCounts", "check_compiled", "compile_counts"]

log = logging.getLogger(__name__)

CompileCounts = dict[str, int]


def compile_counts() -> CompileCounts:
    """TorchDynamo's process-wide counts so far: ``graphs`` compiled, ``frames`` captured, ``graph_breaks``."""
    from torch._dynamo.utils import counters

    return {
        "graphs": int(counters["stats"]["unique_graphs"]),
        "frames": int(counters["frames"]["ok"]),
        "graph_breaks": int(sum(counters["graph_break"].values())),
    }


def check_compiled(engine: TrainingEngine, before: CompileCounts, seconds: float) -> CompileCounts:
    """Counts of what the first compiled step added to ``before``; logs them with the step's ``seconds``.

    Raises:
        RuntimeError: the engine is not compiled, or the step captured no graph (it ran eagerly).
    """
    now = compile_counts()
    added = {key: now[key] - before[key] for key in now}
    if not getattr(engine, "is_compiled", False) or added["graphs"] == 0:
        raise RuntimeError(
            f"train.compile=true but the first step ran eagerly (torch.compile captured {added['graphs']} graphs; "
            f"torch {torch.__version__}); run with TORCH_LOGS=graph_breaks,recompiles to see why"
        )
    log.info(
        "torch.compile: %d graphs, %d graph breaks in the first step (%.1f s with compilation)",
        added["graphs"], added["graph_breaks"], seconds,
    )  # fmt: skip
    if added["graph_breaks"]:
        log.warning("torch.compile: %d graph breaks; TORCH_LOGS=graph_breaks names them", added["graph_breaks"])
    return added
