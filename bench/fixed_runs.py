"""The fixed runs a pure refactor of the engine must reproduce: demo pretraining, fine-tuning from its export, and
distillation from the fine-tuned export, each 2 DeepSpeed processes on the CPU, fp32, ``log_every=1``.

    python bench/fixed_runs.py --out runs/fixed/after.json                      # record
    python bench/fixed_runs.py --out runs/fixed/after.json --compare bench/fixed_runs_baseline.json

Records every logged loss term per step and the fine-tune's validation accuracy; ``--compare`` prints, per run,
how many numbers are bit-identical to the baseline and the largest relative difference, and exits 1 when any
differs. Numbers are comparable on the same machine and library versions only (the baseline file says which).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STEPS = 20
COMMON = ["precision=fp32", f"train.max_steps={STEPS}", "train.log_every=1", "train.warmup_steps=5"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _launch(script: str, config: str, overrides: list[str]) -> None:
    deepspeed = Path(sys.executable).with_name("deepspeed")
    cmd = [str(deepspeed), "--num_gpus=2", f"--master_port={_free_port()}", script, "--config", config, *overrides]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")


def _metrics(out: Path) -> dict[str, dict[str, float]]:
    """Every number logged per step (the last line wins for a step logged twice)."""
    rows: dict[str, dict[str, float]] = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        numbers = {k: v for k, v in record.items() if isinstance(v, float) and ("loss" in k or k.startswith("val"))}
        rows[str(record["step"])] = {**rows.get(str(record["step"]), {}), **numbers}
    return rows


def record(work: Path, demo: Path) -> dict[str, Any]:
    """Run the three fixed runs under ``work`` on the demo data in ``demo``; their numbers by run and step."""
    pretrain, finetune, distill = work / "pretrain", work / "finetune", work / "distill"
    data = [f"data.data_root={demo}"]
    _launch("launch/pretrain.py", "demo",
            [*COMMON, *data, f"data.manifests=[{demo}/train_unlabeled.csv]", f"output_dir={pretrain}",
             f"train.save_every={STEPS}"])  # fmt: skip
    labelled = [*data, f"data.manifests=[{demo}/train.csv]", f"data.val_manifests=[{demo}/val.csv]",
                f"data.labels={demo}/labels.txt", f"train.eval_every={STEPS}", f"train.save_every={STEPS}"]  # fmt: skip
    _launch(
        "launch/finetune.py",
        "demo",
        [*COMMON, *labelled, f"output_dir={finetune}", f"init={pretrain}/export/model.safetensors"],
    )
    _launch(
        "launch/finetune.py",
        "distill_demo",
        [*COMMON, *labelled, f"output_dir={distill}", f"distill.teacher={finetune}/export/model.safetensors"],
    )
    import torch

    return {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}",
        "runs": {
            name: _metrics(folder)
            for name, folder in (("pretrain", pretrain), ("finetune", finetune), ("distill", distill))
        },  # fmt: skip
    }


def compare(after: dict[str, Any], before: dict[str, Any]) -> bool:
    """Print per run how many numbers match bit for bit and the largest relative difference; True: all equal."""
    same = True
    for run, steps in before["runs"].items():
        pairs = [(v, after["runs"].get(run, {}).get(step, {}).get(k)) for step, row in steps.items()
                 for k, v in row.items()]  # fmt: skip
        equal = sum(a == b for a, b in pairs)
        worst = max((abs(b - a) / max(abs(a), 1e-12) for a, b in pairs if b is not None), default=0.0)
        print(f"{run:9s} {equal}/{len(pairs)} numbers bit-identical, largest relative difference {worst:.3g}")
        same &= equal == len(pairs)
    return same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the numbers of this run")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "fixed", help="run folders (emptied first)")
    parser.add_argument("--compare", type=Path, default=None, help="a baseline JSON written by this script")
    args = parser.parse_args()
    import shutil

    for name in ("pretrain", "finetune", "distill", "demo_data"):
        shutil.rmtree(args.work / name, ignore_errors=True)
    demo = args.work / "demo_data"
    subprocess.run([str(Path(sys.executable).with_name("videomae")), "demo-data", str(demo), "--quiet"], check=True)
    numbers = record(args.work, demo)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(numbers, indent=1) + "\n")
    print(f"wrote {args.out}: {', '.join(f'{k} {len(v)} steps' for k, v in numbers['runs'].items())}")
    if args.compare is not None:
        return 0 if compare(numbers, json.loads(args.compare.read_text())) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
