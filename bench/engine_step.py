"""Does the engine keep up with the model? The bare model step against the engine's step, timed in the same run.

On the demo pretraining config (one process, the same threads for every row):

    bare          the model, masks, loss, backward and ``torch.optim.AdamW`` on a fixed batch (no DeepSpeed)
    engine step   ``Trainer.micro_step`` on the same fixed batch: the method's loss, DeepSpeed backward/step, the
                  non-finite check and every host sync the loop makes
    engine fit    ``Trainer.fit`` on the demo set: the loader (``--workers``), step means, logging, the stop check,
                  the progress bar (steps after the first few; checkpoints and pictures off)

    python bench/engine_step.py                       # demo config, 40 steps per row
    python bench/engine_step.py --steps 60 --workers 0 1 train.batch_size=8

Prints clips/s per row and each row's ratio to the bare step (the target: the engine at >= 85% of it).
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

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "videomae/recipes/pretrain/demo.yaml"
WARMUP = 5


def _config(out: Path, demo: Path, steps: int, workers: int, overrides: list[str]):
    from videomae.config import load_config

    return load_config(DEMO_CONFIG, [
        f"output_dir={out}", f"data.manifests=[{demo}/train_unlabeled.csv]", f"data.data_root={demo}",
        f"data.num_workers={workers}", f"train.max_steps={steps}", "train.log_every=1", "train.picture_every=0",
        f"train.save_every={10 * steps}", "train.warmup_steps=0", *overrides,
    ])  # fmt: skip


def _fixed_batch(cfg) -> torch.Tensor:
    d = cfg.data
    clips = cfg.train.batch_size * d.num_sample
    return torch.randn(clips, 3, d.num_frames, d.input_size, d.input_size, generator=torch.Generator().manual_seed(0))


def _rate(seconds: list[float], clips: int) -> float:
    return clips / statistics.median(seconds[WARMUP:])


def bare_step(cfg, steps: int) -> float:
    """Clips/s of the model's own step: forward, loss, backward, AdamW, on a fixed batch."""
    from videomae.masking import MaskGenerator
    from videomae.models import create_model
    from videomae.objectives import MaskedPixelLoss

    torch.manual_seed(0)
    model = create_model(cfg.model.name, **cfg.model.create_kwargs())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=tuple(cfg.train.betas), eps=cfg.train.eps)
    masks = MaskGenerator.seeded(cfg.mask, model.grid_size, seed=0)
    loss_fn = MaskedPixelLoss(model.patch_size, model.tubelet_size, cfg.loss.normalize_target)
    videos, seconds = _fixed_batch(cfg), []
    for _ in range(steps):
        start = time.perf_counter()
        mask, decode_mask = masks(videos.shape[0])
        loss = loss_fn(model(videos, mask, decode_mask), videos, mask, decode_mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        seconds.append(time.perf_counter() - start)
    return _rate(seconds, videos.shape[0])


def engine_step(cfg, steps: int) -> float:
    """Clips/s of ``Trainer.micro_step`` (with the per-step lr/wd update) on the same fixed batch."""
    from videomae.engine.optim import set_step_values
    from videomae.engine.session import start_session
    from videomae.engine.trainer import build_trainer
    from videomae.methods.pretrain import PretrainMethod

    trainer = build_trainer(start_session(cfg), PretrainMethod(cfg, None))
    videos, seconds = _fixed_batch(cfg), []
    for step in range(steps):
        start = time.perf_counter()
        set_step_values(trainer.engine.optimizer, trainer.schedule.lr(step), trainer.schedule.wd(step))
        trainer.micro_step({"video": videos})
        seconds.append(time.perf_counter() - start)
    return _rate(seconds, videos.shape[0])


def engine_fit(cfg) -> tuple[float, float]:
    """Clips/s and the data-wait share of a real ``Trainer.fit`` on the demo set (medians over the logged steps)."""
    from videomae.methods.pretrain import run_pretraining

    run_pretraining(cfg)
    rows = [json.loads(line) for line in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["step"] > WARMUP]
    return statistics.median(r["clips_per_s"] for r in rows), statistics.median(r["data_wait"] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="steps per row (the first 5 are not timed)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="loader workers of the fit rows")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads for every row")
    parser.add_argument("overrides", nargs="*", help="config overrides (key=value)")
    args = parser.parse_args()
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
    torch.set_num_threads(args.threads)
    from videomae.data.demo import DemoConfig, write_demo_dataset

    with tempfile.TemporaryDirectory(prefix="engine_step_") as tmp:
        demo = Path(tmp) / "demo"
        write_demo_dataset(demo, DemoConfig(num_train=96, num_val=6), workers=1)
        cfg = _config(Path(tmp) / "run", demo, args.steps, 0, args.overrides)
        clips = cfg.train.batch_size * cfg.data.num_sample
        print(f"demo config, {clips} clips per step, {args.threads} threads, median of steps {WARMUP + 1}-{args.steps}")
        bare = bare_step(cfg, args.steps)
        rows = [("bare", bare, None), ("engine step", engine_step(cfg, args.steps), None)]
        for workers in args.workers:
            rate, wait = engine_fit(_config(Path(tmp) / f"fit{workers}", demo, args.steps, workers, args.overrides))
            rows.append((f"engine fit, {workers} workers", rate, wait))
    print(f"{'row':<24} {'clips/s':>8} {'vs bare':>8} {'data wait':>10}")
    for name, rate, wait in rows:
        shown = "" if wait is None else f"{wait:.0%}"
        print(f"{name:<24} {rate:8.1f} {rate / bare:8.0%} {shown:>10}")


if __name__ == "__main__":
    main()
