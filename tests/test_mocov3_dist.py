"""MoCo v3's collectives on 2 real ``gloo`` processes against one process on the global batch: the loss with keys
gathered from every rank, its gradients, and BatchNorm synchronised across ranks (statistics and gradients)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers import free_port
from torch import nn

from videomae.engine import dist
from videomae.methods.moco_heads import GlobalBatchNorm1d
from videomae.objectives.contrastive import symmetric_info_nce

B, D, C, TAU = 3, 5, 4, 0.2


def _global_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {name: torch.randn(2 * B, width, generator=g) for name, width in
            [("q1", D), ("q2", D), ("k1", D), ("k2", D), ("x", C), ("w", C)]}  # fmt: skip


def _rank(rank: int, port: int, out: str) -> None:
    env = dist.DistEnv(rank=rank, world_size=2, local_rank=rank, local_world_size=2, master_port=port)
    dist.init_distributed(env, backend="gloo")
    try:
        data, mine = _global_batch(), slice(rank * B, (rank + 1) * B)
        q1 = data["q1"][mine].clone().requires_grad_()
        q2 = data["q2"][mine].clone().requires_grad_()
        keys = dist.gather_rows(torch.stack([data["k1"][mine], data["k2"][mine]], dim=1))  # (2B, 2, D)
        first = rank * B
        loss = symmetric_info_nce(q1, q2, keys[:, 0], keys[:, 1], first, TAU)
        loss.backward()
        torch.manual_seed(1)
        bn = GlobalBatchNorm1d(C)
        x = data["x"][mine].clone().requires_grad_()
        y = bn(x)
        (y * data["w"][mine]).sum().backward()
        result = {"loss": loss.detach(), "q1_grad": q1.grad, "q2_grad": q2.grad, "y": y.detach(), "x_grad": x.grad,
                  "weight_grad": bn.weight.grad, "bias_grad": bn.bias.grad, "running_mean": bn.running_mean,
                  "running_var": bn.running_var}  # fmt: skip
    finally:
        dist.destroy()
    torch.save(result, Path(out) / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_ranks_equal_one_process_on_the_global_batch(tmp_path):
    mp.spawn(_rank, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    data = _global_batch()

    # Contrastive loss: one process sees the whole batch; each rank's mean-over-its-queries loss averages to it,
    # and its gradients are the global loss's scaled by the number of ranks (what the gradient all-reduce averages).
    q1, q2 = data["q1"].clone().requires_grad_(), data["q2"].clone().requires_grad_()
    whole = symmetric_info_nce(q1, q2, data["k1"], data["k2"], 0, TAU)
    whole.backward()
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, whole.detach())
    for r in range(2):
        mine = slice(r * B, (r + 1) * B)
        torch.testing.assert_close(ranks[r]["q1_grad"] / 2, q1.grad[mine])
        torch.testing.assert_close(ranks[r]["q2_grad"] / 2, q2.grad[mine])
    assert ranks[0]["loss"] != ranks[1]["loss"]  # each rank really has its own queries

    # BatchNorm: outputs, running statistics and input gradients equal one BatchNorm over the global batch; the
    # affine parameters' gradients sum over ranks to the global ones.
    torch.manual_seed(1)
    bn = nn.BatchNorm1d(C)
    x = data["x"].clone().requires_grad_()
    y = bn(x)
    (y * data["w"]).sum().backward()
    for r in range(2):
        mine = slice(r * B, (r + 1) * B)
        torch.testing.assert_close(ranks[r]["y"], y.detach()[mine])
        torch.testing.assert_close(ranks[r]["x_grad"], x.grad[mine])
        torch.testing.assert_close(ranks[r]["running_mean"], bn.running_mean)
        torch.testing.assert_close(ranks[r]["running_var"], bn.running_var)
    torch.testing.assert_close(ranks[0]["weight_grad"] + ranks[1]["weight_grad"], bn.weight.grad)
    torch.testing.assert_close(ranks[0]["bias_grad"] + ranks[1]["bias_grad"], bn.bias.grad)
