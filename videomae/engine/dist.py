"""Process-group setup and collectives: the only module that touches ``torch.distributed``.

The rule every collective follows, on every backend: **the process group serves the CPU in every run** (gloo),
and on an accelerator also that device with its own backend (``cpu:gloo,cuda:nccl`` on CUDA, see
:func:`backend_for`). Our collectives are control traffic (flags, loss means, Python objects, barriers): they run
on CPU tensors, which gloo serves wherever the run is; the bulk traffic (gradients, ZeRO partitions) is DeepSpeed's
and runs on the accelerator's tensors through NCCL. NCCL serves CUDA tensors only, so a group created with plain
``nccl`` would refuse a CPU tensor (``No backend type associated with device type cpu``) at the first step;
with the CPU entry, also DeepSpeed's and PyTorch's own CPU-side collectives (object collectives, barriers) are
served. Only this module calls ``torch.distributed``.

Two exceptions move activations and stay on their tensors' device (NCCL on CUDA, gloo on CPU): the contrastive
methods' gathers of features across ranks, :func:`gather_rows` (no gradient: MoCo v3's keys) and
:func:`gather_rows_with_grad` (CLIP's features, synchronised BatchNorm's statistics).

Ranks come from the launcher's environment: ``torchrun`` and ``deepspeed`` set ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``; under ``srun`` they are derived from SLURM's variables
(:func:`env_from_slurm`); with neither, the run is a single process.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

__all__ = [
    "DistEnv",
    "gather_rows",
    "gather_rows_with_grad",
    "all_finite",
    "any_rank",
    "all_gather_objects",
    "backend_for",
    "barrier",
    "broadcast_object",
    "destroy",
    "env_from_slurm",
    "expand_nodelist",
    "init_distributed",
    "is_main",
    "mean_across_ranks",
    "rank",
    "resolve_env",
    "sum_across_ranks",
    "world_size",
]


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0
    num_nodes: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    def as_environ(self) -> dict[str, str]:
        """The ``torch.distributed`` ``env://`` variables for this process."""
        return {
            "RANK": str(self.rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_RANK": str(self.local_rank),
            "LOCAL_WORLD_SIZE": str(self.local_world_size),
            "NODE_RANK": str(self.node_rank),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand SLURM's compressed host list: ``gpu[001-003,007],cpu1`` -> gpu001, gpu002, gpu003, gpu007, cpu1.

    Raises:
        ValueError: on a malformed list.
    """
    hosts: list[str] = []
    for match in re.finditer(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist):
        prefix, ranges = match.group(1), match.group(2)
        if ranges is None:
            hosts.append(prefix)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise ValueError(f"SLURM node list {nodelist!r}: bad range {part!r}")
            for number in range(int(lo), int(hi or lo) + 1):
                hosts.append(f"{prefix}{number:0{len(lo)}d}")
    if not hosts:
        raise ValueError(f"SLURM node list {nodelist!r} names no host")
    return hosts


def _tasks_on_first_node(tasks_per_node: str) -> int:
    # SLURM_TASKS_PER_NODE looks like "4(x2),3": the count for the first node group comes first.
    match = re.match(r"(\d+)", tasks_per_node)
    if match is None:
        raise ValueError(f"SLURM_TASKS_PER_NODE={tasks_per_node!r} is not understood")
    return int(match.group(1))


def env_from_slurm(environ: Mapping[str, str]) -> DistEnv:
    """Map the variables ``srun`` sets for each task to a :class:`DistEnv`.

    ``SLURM_PROCID`` -> rank, ``SLURM_NTASKS`` -> world size, ``SLURM_LOCALID`` -> local rank,
    ``SLURM_NODEID`` -> node rank, ``SLURM_JOB_NUM_NODES`` -> nodes, first host of ``SLURM_JOB_NODELIST`` ->
    master address (unless ``MASTER_ADDR`` is set), ``MASTER_PORT`` or ``20000 + SLURM_JOB_ID % 20000``.

    Raises:
        KeyError: naming the first missing SLURM variable.
    """

    def need(name: str) -> str:
        if name not in environ:
            raise KeyError(f"{name} is not set: not inside an srun task?")
        return environ[name]

    rank = int(need("SLURM_PROCID"))
    world_size = int(need("SLURM_NTASKS"))
    nodelist = environ.get("SLURM_JOB_NODELIST") or need("SLURM_NODELIST")
    hosts = expand_nodelist(nodelist)
    num_nodes = int(environ.get("SLURM_JOB_NUM_NODES", environ.get("SLURM_NNODES", len(hosts))))
    if "SLURM_NTASKS_PER_NODE" in environ:
        local_world_size = _tasks_on_first_node(environ["SLURM_NTASKS_PER_NODE"])
    elif "SLURM_TASKS_PER_NODE" in environ:
        local_world_size = _tasks_on_first_node(environ["SLURM_TASKS_PER_NODE"])
    else:
        local_world_size = max(1, world_size // num_nodes)
    job_id = int(environ.get("SLURM_JOB_ID", "0"))
    return DistEnv(
        rank=rank,
        world_size=world_size,
        local_rank=int(need("SLURM_LOCALID")),
        local_world_size=local_world_size,
        node_rank=int(environ.get("SLURM_NODEID", rank // local_world_size)),
        num_nodes=num_nodes,
        master_addr=environ.get("MASTER_ADDR", hosts[0]),
        master_port=int(environ.get("MASTER_PORT", 20000 + job_id % 20000)),
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resolve_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Work out rank and world size from a launcher's variables (torchrun/deepspeed first, then SLURM)."""
    environ = os.environ if environ is None else environ
    if "RANK" in environ and "WORLD_SIZE" in environ:
        world_size = int(environ["WORLD_SIZE"])
        local_world_size = int(environ.get("LOCAL_WORLD_SIZE", environ.get("LOCAL_SIZE", world_size)))
        rank = int(environ["RANK"])
        return DistEnv(
            rank=rank,
            world_size=world_size,
            local_rank=int(environ.get("LOCAL_RANK", 0)),
            local_world_size=local_world_size,
            node_rank=int(environ.get("NODE_RANK", environ.get("GROUP_RANK", rank // local_world_size))),
            num_nodes=max(1, world_size // local_world_size),
            master_addr=environ.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(environ.get("MASTER_PORT", 29500)),
        )
    if "SLURM_PROCID" in environ and int(environ.get("SLURM_NTASKS", "1")) > 1:
        return env_from_slurm(environ)
    return DistEnv(master_port=int(environ.get("MASTER_PORT", 0)) or _free_port())


ACCELERATOR_BACKENDS = {"cuda": "nccl"}
"""The collective backend of each accelerator device type (the CPU is always served by gloo)."""


def backend_for(device_type: str, accelerator_backend: str | None = None) -> str:
    """The process-group backend string for a run on ``device_type``.

    ``"gloo"`` on CPU; ``"cpu:gloo,cuda:nccl"`` on CUDA, so the group serves our CPU control tensors through gloo
    and the accelerator's tensors through its own backend (``accelerator_backend`` replaces it, e.g. in tests).

    Raises:
        ValueError: a device type without a known collective backend.
    """
    if device_type == "cpu":
        return "gloo"
    backend = accelerator_backend or ACCELERATOR_BACKENDS.get(device_type)
    if backend is None:
        raise ValueError(f"no collective backend known for device type {device_type!r}")
    return f"cpu:gloo,{device_type}:{backend}"


def init_distributed(env: DistEnv | None = None, backend: str | None = None) -> tuple[DistEnv, torch.device]:
    """Create the default process group (also for a single process, as DeepSpeed expects one).

    Args:
        env: where this process sits; default :func:`resolve_env`.
        backend: default :func:`backend_for` this process's device (the module docstring gives the rule).

    Returns:
        The environment and this process's device (``cuda:LOCAL_RANK`` or ``cpu``).
    """
    env = env or resolve_env()
    os.environ.update(env.as_environ())
    if torch.cuda.is_available():
        device = torch.device("cuda", env.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not torch_dist.is_initialized():
        backend = backend or backend_for(device.type)
        torch_dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size)
    return env, device


def destroy() -> None:
    """Tear the process group down (at the end of a run)."""
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def is_main() -> bool:
    """True on global rank 0 (or without a process group)."""
    return not torch_dist.is_initialized() or torch_dist.get_rank() == 0


def barrier() -> None:
    """Wait for every rank (through the group's CPU backend)."""
    if world_size() > 1:
        torch_dist.barrier()


def world_size() -> int:
    """Ranks taking part in collectives (1 without a process group)."""
    return torch_dist.get_world_size() if torch_dist.is_initialized() else 1


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return torch_dist.get_rank() if torch_dist.is_initialized() else 0


def all_finite(value: torch.Tensor) -> bool:
    """True when ``value`` is finite on every rank (one tiny all-reduce on the CPU)."""
    bad = (~torch.isfinite(value.detach())).any().to("cpu", torch.float32).reshape(1)
    if world_size() > 1:
        torch_dist.all_reduce(bad, op=torch_dist.ReduceOp.MAX)
    return bool(bad.item() == 0)


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is True on at least one rank."""
    value = torch.tensor([float(flag)])
    if world_size() > 1:
        torch_dist.all_reduce(value, op=torch_dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def mean_across_ranks(values: torch.Tensor) -> torch.Tensor:
    """Element-wise mean of a float tensor over ranks (computed on the CPU in float64)."""
    values = values.detach().to("cpu", torch.float64).clone()
    if world_size() > 1:
        torch_dist.all_reduce(values)
        values /= world_size()
    return values


def broadcast_object(obj: object, src: int = 0) -> object:
    """Send a picklable object from ``src`` to every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=src, device=torch.device("cpu"))
    return box[0]


def all_gather_objects(obj: object) -> list[object]:
    """``obj`` from every rank, in rank order (``[obj]`` without a process group)."""
    if world_size() == 1:
        return [obj]
    out: list[object] = [None] * world_size()
    torch_dist.all_gather_object(out, obj)
    return out


def sum_across_ranks(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks on the tensor's own device and in its own dtype: the accelerator's data plane
    (NCCL on CUDA), as DeepSpeed reduces gradient buckets. Only ``videomae doctor``'s check of that plane calls it;
    a run's own collectives are control traffic on the CPU (module docstring)."""
    values = values.detach().clone()
    if world_size() > 1:
        torch_dist.all_reduce(values)
    return values


# ---------------------------------------------------------------------------------------------------- data plane


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` concatenated along dim 0 in rank order, on ``x``'s device, without gradient:
    ``[B, ...] -> [world * B, ...]`` (``x.detach()`` without a process group). Every rank passes the same shape."""
    x = x.detach()
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    torch_dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class _GatherRowsWithGrad(torch.autograd.Function):
    """Forward: all-gather. Backward: each rank holds the gradient of its own loss for every rank's rows; summed
    over ranks (all-reduce), each rank keeps its rows' slice: the gradient of the sum of all ranks' losses."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = torch_dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(torch_dist.get_world_size())]
        torch_dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)  # (W*B, ...)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        torch_dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_rows_with_grad(x: torch.Tensor) -> torch.Tensor:
    """:func:`gather_rows` that carries gradients back to each rank's own rows, summed over the ranks' losses.

    With each rank's loss a mean over its own rows against the gathered ones, DeepSpeed's mean of the gradients over
    ranks then equals the gradient of the single-process loss on the global batch. ``x`` without a process group.
    """
    if world_size() == 1:
        return x
    return _GatherRowsWithGrad.apply(x)
