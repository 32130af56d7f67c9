"""Tensor collectives of MoCo v3 on the data plane: the keys gathered from every rank, and the batch statistics of
synchronised BatchNorm, on the tensors' own device (NCCL on CUDA, gloo on CPU).

``videomae.engine.dist`` keeps our control traffic on the CPU; these two move activations, which must stay on the
accelerator and, for BatchNorm, carry gradients. They belong beside ``dist.sum_across_ranks`` in
``videomae/engine/dist.py`` (lead-owned), where they should move; until then this is the one other module that
calls ``torch.distributed`` (allowed by name in tests/test_dist_rule.py).
"""

from __future__ import annotations

import torch
import torch.distributed as torch_dist
from torch.distributed.nn.functional import all_gather as all_gather_with_grad

from videomae.engine import dist

__all__ = ["gather_no_grad", "gather_with_grad"]


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """``x`` of every rank concatenated along dim 0 in rank order, without gradient (MoCo's keys): ``[B, ...]`` ->
    ``[world * B, ...]``. Every rank must pass the same shape."""
    if dist.world_size() == 1:
        return x.detach()
    x = x.detach().contiguous()
    parts = [torch.empty_like(x) for _ in range(dist.world_size())]
    torch_dist.all_gather(parts, x)
    return torch.cat(parts)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``x`` of every rank stacked in rank order, ``[...]`` -> ``[world, ...]``, differentiable: the gradient that
    reaches another rank's slice is sent back to that rank and summed there (synchronised BatchNorm)."""
    if dist.world_size() == 1:
        return x.unsqueeze(0)
    return torch.stack(all_gather_with_grad(x.contiguous()))
