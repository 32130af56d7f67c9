"""All-gather of contrastive features with gradients, on the default process group (NCCL for CUDA tensors, gloo
for CPU ones).

Forward: every rank's ``[B, E]`` rows -> ``[W*B, E]`` (ranks in order). Backward: each rank holds the gradient of
its own loss with respect to every rank's rows; they are summed over ranks (all-reduce) and each rank keeps its own
rows' slice, so the gradient reaching the local features is the one of the sum of all ranks' losses.

This is the one collective of the package outside ``videomae/engine/dist.py`` (it carries autograd, which that
module's control-traffic helpers do not); it belongs there, beside ``all_gather_objects``.
"""

from __future__ import annotations

import torch
import torch.distributed as tdist

__all__ = ["gather_with_grad"]


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = tdist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(tdist.get_world_size())]
        tdist.all_gather(parts, x.contiguous())
        return torch.cat(parts)  # (W*B, E)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        tdist.all_reduce(grad)  # sum of every rank's gradient for every row
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(every rank's x [W*B, ...], this rank's offset)``; ``(x, 0)`` without a process group. Every rank must
    pass the same shape (the trainer's batches are equal per rank)."""
    if not (tdist.is_available() and tdist.is_initialized()) or tdist.get_world_size() == 1:
        return x, 0
    return _GatherWithGrad.apply(x), tdist.get_rank() * x.shape[0]
