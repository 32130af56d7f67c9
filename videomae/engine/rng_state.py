"""Every random stream of one process, as tensors and plain numbers: the per-rank part of a checkpoint.

Stored without pickled objects (no NumPy arrays, no tuples of Python's RNG), so the per-rank file loads with
``torch.load(weights_only=True)`` and no allow-list.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["generator_seed", "get_rng_state", "process_seed", "set_rng_state"]


def process_seed(seed: int, rank: int) -> int:
    """Seed of this rank's global generators (python, numpy, torch): distinct per rank."""
    return seed + rank


def generator_seed(seed: int, rank: int, step: int = 0) -> int:
    """Seed of this rank's own generator (masks, mixup draws), distinct from :func:`process_seed`'s streams;
    ``step`` > 0 starts a fresh stream for a rank that joins a resumed run."""
    return seed * 1009 + rank + 7919 * step


def get_rng_state(mask_generator: torch.Generator) -> dict[str, Any]:
    """Every random stream this process uses: python, numpy, torch (CPU, CUDA) and the mask generator, as tensors
    and plain numbers only, so the per-rank file loads weights-only."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(cached),
        },
        "torch": torch.get_rng_state(),
        "mask_generator": mask_generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], mask_generator: torch.Generator) -> None:
    """Restore what :func:`get_rng_state` captured."""
    python, numpy_state = state["python"], state["numpy"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    keys = numpy_state["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy_state["kind"], keys, numpy_state["pos"], numpy_state["has_gauss"], numpy_state["gauss"]))
    torch.set_rng_state(state["torch"])
    mask_generator.set_state(state["mask_generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
