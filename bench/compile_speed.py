"""``train.compile``: compile time and steady-state step speed against eager, timed in the same process.

Both runs go through the real engine (``build_trainer`` with the pretraining method: our DeepSpeed config,
``initialize``, ``engine.compile()``, the pretraining micro-step) on one process, from the demo config, with a
fixed random batch instead of the loader. The first step of the compiled run includes compilation; steady state
is the median of the steps after the first two.

    python bench/compile_speed.py                     # demo model, 10 steps each
    python bench/compile_speed.py --steps 20 precision=bf16 model.with_cp=true

Prints a markdown table and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from videomae import recipes


def _run(config: Path, overrides: list[str], steps: int, compiled: bool) -> dict:
    from videomae.config import load_config
    from videomae.engine.optim import set_step_values
    from videomae.engine.session import start_session
    from videomae.engine.trainer import build_trainer
    from videomae.methods.pretrain import PretrainMethod

    with tempfile.TemporaryDirectory(prefix="compile_speed_") as out:
        cfg = load_config(
            config, [f"output_dir={out}", f"train.compile={str(compiled).lower()}", "train.picture_every=0", *overrides]
        )
        torch.manual_seed(0)
        run = build_trainer(start_session(cfg), PretrainMethod(cfg, None))  # a fixed batch stands in for the loader
        d = cfg.data
        batch = cfg.train.batch_size * d.num_sample
        videos = torch.randn(
            batch, 3, d.num_frames, d.input_size, d.input_size, generator=torch.Generator().manual_seed(0)
        )
        seconds, losses = [], []
        for step in range(steps):
            set_step_values(run.engine.optimizer, run.schedule.lr(step), run.schedule.wd(step))
            start = time.perf_counter()
            result = run.micro_step({"video": videos})
            seconds.append(time.perf_counter() - start)
            losses.append(result.loss)
        counts = None
        if compiled:
            from videomae.engine.compiling import compile_counts

            counts = compile_counts()
    return {"seconds": seconds, "losses": losses, "counts": counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="demo", help="pretraining config: a file or a packaged recipe's name")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("overrides", nargs="*", help="config overrides (key=value)")
    args = parser.parse_args()
    args.config = recipes.resolve(args.config, ["pretrain"])
    if args.steps < 4:
        parser.error("--steps must be >= 4 (two warm-up steps, then the steady state)")
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29517")
    overrides = ["data.manifests=[unused.csv]", *args.overrides]
    eager = _run(args.config, overrides, args.steps, compiled=False)
    compiled = _run(args.config, overrides, args.steps, compiled=True)

    steady = {name: statistics.median(r["seconds"][2:]) for name, r in (("eager", eager), ("compiled", compiled))}
    compile_s = compiled["seconds"][0] - eager["seconds"][0]
    diff = max(abs(a - b) for a, b in zip(eager["losses"], compiled["losses"]))
    print(f"{args.config.name} {' '.join(args.overrides)}: {args.steps} steps, 1 process, torch {torch.__version__}")
    print()
    print("| run | first step (s) | steady state (s/step) | vs eager |")
    print("|---|---|---|---|")
    for name, r in (("eager", eager), ("compiled", compiled)):
        print(f"| {name} | {r['seconds'][0]:.2f} | {steady[name]:.4f} | {steady['eager'] / steady[name]:.2f}x |")
    print(f"\ncompilation: {compile_s:.1f} s; graphs {compiled['counts']}; max loss difference {diff:.2e}")
    summary = {
        "compile_s": round(compile_s, 2),
        "eager_s_per_step": steady["eager"],
        "compiled_s_per_step": steady["compiled"],
        "speedup": steady["eager"] / steady["compiled"],
        "max_loss_diff": diff,
        "counts": compiled["counts"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
