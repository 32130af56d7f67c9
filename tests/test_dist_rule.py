"""The collectives rule of ``videomae.engine.dist`` holds on a backend that, like NCCL, serves one device type only.

NCCL serves CUDA tensors and nothing else. On this CPU machine a ``gloo`` backend registered for the ``cuda``
device type alone stands in for it: a collective on a CPU tensor sent to such a group fails exactly as on NCCL
(``No backend type associated with device type cpu``). The rule: on CUDA the group is
``backend_for("cuda") == "cpu:gloo,cuda:nccl"`` and our collectives run on CPU tensors, so every helper works
under that group with NCCL replaced by the stand-in; under the stand-in alone (what ``init_process_group("nccl")``
gave before) the same helpers fail, which shows the test can see the bug.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers import free_port

from videomae.engine import dist
from videomae.launching.collectives_check import check_collectives

PACKAGE = Path(__file__).resolve().parents[1] / "videomae"
NCCL_LIKE = "cuda:gloo"  # gloo serving CUDA-typed tensors only: a CPU tensor is refused, as NCCL refuses it


def nccl_replaced(backend: str) -> str:
    """``backend`` with NCCL swapped for the CUDA-only gloo stand-in (``nccl`` alone means CUDA-only too)."""
    if backend == "nccl":
        return NCCL_LIKE
    return backend.replace("cuda:nccl", NCCL_LIKE)


def _every_helper(rank: int, port: int, backend: str, out: str) -> None:
    env = dist.DistEnv(rank=rank, world_size=2, local_rank=rank, local_world_size=2, master_port=port)
    dist.init_distributed(env, backend=backend)
    try:
        results = {"is_main": dist.is_main(), "checks": [vars(c) for c in check_collectives(torch.device("cpu"))]}
    finally:
        dist.destroy()
    torch.save(results, Path(out) / f"rank{rank}.pt")


def _run_two_ranks(backend: str, tmp_path: Path) -> list[dict]:
    # spawn, not fork: a fork after earlier tests ran multi-threaded torch ops can deadlock in the children
    mp.spawn(_every_helper, args=(free_port(), backend, str(tmp_path)), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_backend_for_serves_the_cpu_on_every_device_type():
    assert dist.backend_for("cpu") == "gloo"
    assert dist.backend_for("cuda") == "cpu:gloo,cuda:nccl"
    assert dist.backend_for("cuda", accelerator_backend="gloo") == "cpu:gloo,cuda:gloo"
    with pytest.raises(ValueError, match="tpu"):
        dist.backend_for("tpu")


def test_init_distributed_on_cuda_asks_for_the_cpu_and_cuda_backends(monkeypatch):
    requested = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: requested.setdefault("device", device))
    monkeypatch.setattr(dist.torch_dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist.torch_dist, "init_process_group", lambda **kw: requested.update(kw))
    # A copy: init_distributed exports the (fake) ranks, which must not reach later tests of rank-aware code.
    launcher_keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE", "NODE_RANK")
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k not in launcher_keys})
    env, device = dist.init_distributed(dist.DistEnv(rank=3, world_size=16, local_rank=11, master_port=12345))
    assert device == torch.device("cuda", 3) and requested["device"] == device  # local rank 11 on 8 GPUs
    assert requested["backend"] == dist.backend_for("cuda") == "cpu:gloo,cuda:nccl"
    assert (requested["rank"], requested["world_size"]) == (3, 16)


@pytest.mark.slow
def test_every_collective_works_under_the_cuda_process_group(tmp_path):
    backend = nccl_replaced(dist.backend_for("cuda"))
    assert backend == "cpu:gloo,cuda:gloo"
    ranks = _run_two_ranks(backend, tmp_path)
    assert [r["is_main"] for r in ranks] == [True, False]
    for got in ranks:
        assert len(got["checks"]) == 8
        failed = [c for c in got["checks"] if not c["ok"]]
        assert not failed, failed
    details = {c["name"]: c["detail"] for c in ranks[1]["checks"]}
    assert details["mean_across_ranks (step losses)"] == "[0.5, 1.0]"
    assert details["broadcast_object (resume point)"] == "{'rank': 0}"
    assert details["all_finite (NaN on the last rank)"] == "False"


@pytest.mark.slow
def test_a_cuda_only_group_refuses_the_cpu_collectives(tmp_path):
    # What `init_process_group("nccl")` made before the rule: the helpers' CPU tensors have no backend, and the
    # checks say so instead of crashing the rank.
    ranks = _run_two_ranks(nccl_replaced("nccl"), tmp_path)
    for got in ranks:
        any_rank = got["checks"][0]
        assert not any_rank["ok"] and "device type cpu" in any_rank["detail"], any_rank


def test_collective_checks_without_a_process_group():
    checks = check_collectives(torch.device("cpu"))
    assert all(c.ok for c in checks), checks
    assert {c.name: c.detail for c in checks}["all_gather_objects (evaluation scores)"] == "[0]"


def _distributed_imports(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.startswith("torch.distributed") for a in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch.distributed"):
            lines.append(node.lineno)
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module == "torch"
            and any(a.name == "distributed" for a in node.names)
        ):
            lines.append(node.lineno)
    return lines


_OWN_COLLECTIVES = {"engine/dist.py"}


def test_only_dist_py_calls_torch_distributed():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).as_posix() in _OWN_COLLECTIVES:
            continue
        source = path.read_text()
        lines = _distributed_imports(ast.parse(source))
        lines += [i for i, line in enumerate(source.splitlines(), 1) if "torch.distributed." in line]
        offenders += [f"{path.relative_to(PACKAGE)}:{line}" for line in sorted(set(lines))]
    assert not offenders, f"torch.distributed used outside videomae/engine/dist.py: {offenders}"
