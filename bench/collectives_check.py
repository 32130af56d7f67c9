"""The collectives rule on the real backend: every helper a run calls, under the process group a run creates.

    torchrun --nproc_per_node 2 bench/collectives_check.py      # on a GPU machine (also on CPU: gloo)

Prints a markdown table on rank 0 and exits non-zero when a check fails. Three parts:

1. ``videomae.launching.collectives_check`` under ``init_distributed()``'s group (``cpu:gloo,cuda:nccl`` on CUDA),
   with the loss-like values on the GPU: must all pass.
2. The accelerator's data plane: an all-reduce of a bf16 tensor on the GPU through NCCL (what DeepSpeed's gradient
   reduction does). NCCL allows one rank per GPU, so this runs only when every rank has a GPU of its own.
3. The control: a group of plain ``nccl`` (what the engine created before the rule) refuses the CPU collectives;
   expected to fail, and reported as "refused" when it does.
"""

from __future__ import annotations

import sys

import torch

from videomae.engine import dist
from videomae.launching.collectives_check import CollectiveCheck, check_collectives


def _data_plane(device: torch.device) -> tuple[str, str]:
    if device.type != "cuda" or torch.cuda.device_count() < dist.world_size():
        return "skipped", f"{torch.cuda.device_count()} GPU(s) for {dist.world_size()} ranks: NCCL needs one each"
    value = torch.full((1024,), float(dist.rank() + 1), device=device, dtype=torch.bfloat16)
    import torch.distributed as torch_dist  # the bench exercises NCCL directly, as DeepSpeed does

    torch_dist.all_reduce(value)
    expected = dist.world_size() * (dist.world_size() + 1) / 2
    ok = bool((value.float() == expected).all())
    return ("PASS" if ok else "FAIL"), f"bf16 all_reduce on {device}: {value[0].item()} (expected {expected})"


def main() -> int:
    env, device = dist.init_distributed()
    checks = check_collectives(device)
    data_status, data_detail = _data_plane(device)
    every_rank = dist.all_gather_objects([(c.name, c.ok, c.detail) for c in checks])
    dist.destroy()

    refused = None
    if device.type == "cuda":
        try:
            dist.init_distributed(env, backend="nccl")
            refused = check_collectives(device)[0]  # any_rank on a CPU tensor
        except RuntimeError as error:  # a second rendezvous on the same port can fail: report, do not crash
            refused = CollectiveCheck("control", False, f"could not create the nccl group: {error}")
        finally:
            dist.destroy()

    if env.rank != 0:
        return 0
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    group = dist.backend_for(device.type)
    print(f"Collectives, {env.world_size} ranks on {gpu}, group {group}, torch {torch.__version__}")
    print()
    print("| check | result | detail (rank 0) |")
    print("| --- | --- | --- |")
    failed = False
    for index, (name, _, detail) in enumerate(every_rank[0]):
        ok = all(rank_checks[index][1] for rank_checks in every_rank)
        failed |= not ok
        print(f"| {name} | {'PASS' if ok else 'FAIL'} | {detail} |")
    failed |= data_status == "FAIL"
    print(f"| NCCL data plane | {data_status} | {data_detail} |")
    if refused is not None:
        verdict = "refused (expected)" if not refused.ok else "served (unexpected)"
        print(f"| control: plain `nccl` group, CPU any_rank | {verdict} | {refused.detail} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
