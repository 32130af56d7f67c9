"""ViT-g pretraining under ZeRO-3 on 2 CPU processes: peak host memory per process and phase, and step time.

The real engine path: :func:`videomae.engine.trainer.build_trainer` builds the model under ``zero.Init`` from our
config, creates the DeepSpeed engine with our generated config and ``initialize``, and each step is its micro-step
(masks, forward, masked-pixel loss, backward, optimizer step). Not measured: the data loader (a fixed random clip
stands in) and checkpoint/export (a ViT-g checkpoint is ~16 GB of disk).

Phases: ``build`` (model construction), ``engine`` (optimizer states and DeepSpeed engine), ``step 1``, ``step 2``,
...; peak RSS of each phase (Linux ``VmHWM``, reset between phases through ``/proc/self/clear_refs``). A watchdog
in the parent stops the run before the machine runs out of memory and reports the phases reached.

    python bench/vit_g_cpu.py                                      # ViT-g, 112 px, 4 frames, batch 1, bf16, with_cp
    python bench/vit_g_cpu.py --limit-gb 19 deepspeed.extra='{zero_optimization: {sub_group_size: 100000000}}'
    python bench/vit_g_cpu.py deepspeed.offload_optimizer=true deepspeed.offload_device=nvme \
        deepspeed.nvme_path=/tmp/swap deepspeed.extra='{zero_optimization: {sub_group_size: 50000000}}'
    python bench/vit_g_cpu.py --model pretrain_videomae_tiny_patch16_224         # a quick check of the bench

Prints a markdown table and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

WORLD = 2


def _status_kib(pid: int | str, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _mem_available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


class _Phases:
    """Peak and current RSS per phase of this process, appended to a JSON-lines file as each phase ends."""

    def __init__(self, path: Path) -> None:
        self.path, self.start = path, time.perf_counter()

    def begin(self) -> None:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        self.start = time.perf_counter()

    def end(self, name: str, **extra: float) -> None:
        record = {
            "phase": name,
            "peak_gib": _status_kib("self", "VmHWM") / 2**20,
            "rss_gib": _status_kib("self", "VmRSS") / 2**20,
            "seconds": time.perf_counter() - self.start,
            **extra,
        }
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _worker(rank: int, port: int, args: argparse.Namespace, out: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(max(1, (os.cpu_count() or WORLD) // WORLD))
    from videomae.config import load_config
    from videomae.engine.deepspeed_setup import parameter_counts
    from videomae.engine.optim import set_step_values
    from videomae.engine.session import start_session
    from videomae.engine.trainer import build_trainer
    from videomae.methods.pretrain import PretrainMethod

    phases = _Phases(Path(out) / f"rank{rank}.jsonl")

    class BenchMethod(PretrainMethod):  # no training set: a fixed random clip stands in for the loader
        def build_model(self):
            phases.begin()
            model = super().build_model()
            total, local = parameter_counts(model)
            phases.end("build", params=total, local_params=local)
            phases.begin()
            return model

    overrides = [
        f"output_dir={out}/run",
        "data.manifests=[unused.csv]",
        f"model.name={args.model}",
        f"model.overrides={{img_size: {args.img}, all_frames: {args.frames}}}",
        f"data.input_size={args.img}",
        f"data.num_frames={args.frames}",
        "data.num_sample=1",
        "train.batch_size=1",
        f"train.max_steps={args.steps}",
        "train.warmup_steps=0",
        "precision=bf16",
        "deepspeed.zero_stage=3",
        "model.with_cp=true",
        *args.overrides,
    ]
    cfg = load_config(None, overrides)
    run = build_trainer(start_session(cfg), BenchMethod(cfg, None))
    phases.end("engine")
    videos = torch.randn(1, 3, args.frames, args.img, args.img, generator=torch.Generator().manual_seed(rank))
    for step in range(args.steps):
        phases.begin()
        set_step_values(run.engine.optimizer, run.schedule.lr(step), run.schedule.wd(step))
        result = run.micro_step({"video": videos})
        phases.end(f"step {step + 1}", loss=result.loss)


def _watch(procs: list, limit_gib: float, floor_gib: float) -> str | None:
    """Wait for ``procs``; kill them if together they pass ``limit_gib`` RSS or the machine's available memory
    falls under ``floor_gib``. Returns why they were stopped, or None."""
    peak = 0.0
    while any(p.is_alive() for p in procs):
        total = sum(_status_kib(p.pid, "VmRSS") for p in procs if p.is_alive()) / 2**20
        peak = max(peak, total)
        available = _mem_available_gib()
        if total > limit_gib or available < floor_gib:
            for p in procs:
                p.kill()
            return f"stopped by the memory guard: {total:.1f} GiB in the 2 processes, {available:.1f} GiB available"
        time.sleep(0.2)
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    return f"a worker failed (exit codes {failed})" if failed else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pretrain_videomae_giant_patch14_224")
    parser.add_argument("--img", type=int, default=112)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--limit-gb", type=float, default=19.0, help="stop when the 2 processes hold more (GiB)")
    parser.add_argument("--floor-gb", type=float, default=1.5, help="stop when the machine has less available (GiB)")
    parser.add_argument("overrides", nargs="*", help="config overrides (key=value), applied last")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vit_g_cpu_") as out:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_worker, args=(rank, port, args, out)) for rank in range(WORLD)]
        start = time.perf_counter()
        for p in procs:
            p.start()
        stopped = _watch(procs, args.limit_gb, args.floor_gb)
        wall = time.perf_counter() - start
        ranks = [_read(Path(out) / f"rank{rank}.jsonl") for rank in range(WORLD)]
    _report(args, ranks, stopped, wall)


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _report(args: argparse.Namespace, ranks: list[list[dict]], stopped: str | None, wall: float) -> None:
    print(f"{args.model}, {args.img} px, {args.frames} frames, batch 1, bf16, ZeRO-3 + with_cp, {WORLD} CPU processes")
    if args.overrides:
        print("overrides:", " ".join(args.overrides))
    print()
    print("| phase | peak RSS rank 0 (GiB) | peak RSS rank 1 (GiB) | RSS after, rank 0 (GiB) | seconds (rank 0) |")
    print("|---|---|---|---|---|")
    for i, record in enumerate(ranks[0]):
        other = ranks[1][i]["peak_gib"] if i < len(ranks[1]) else float("nan")
        print(
            f"| {record['phase']} | {record['peak_gib']:.2f} | {other:.2f} | {record['rss_gib']:.2f} | "
            f"{record['seconds']:.1f} |"
        )
    if stopped:
        print(f"\n{stopped}")
    params = ranks[0][0].get("params") if ranks[0] else None
    summary = {
        "model": args.model,
        "params": params,
        "phases": {
            r["phase"]: [round(r["peak_gib"], 2) for r in [ranks[0][i]] + ranks[1][i : i + 1]]
            for i, r in enumerate(ranks[0])
        },  # fmt: skip
        "step_seconds": [round(r["seconds"], 1) for r in ranks[0] if r["phase"].startswith("step")],
        "losses": [r["loss"] for r in ranks[0] if "loss" in r],
        "stopped": stopped,
        "wall_s": round(wall, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
