"""The pretraining run: build everything from the config, resume, loop over steps, checkpoint, export."""

from __future__ import annotations

import logging
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videomae.checkpoint import export_weights, load_pretrained
from videomae.config import ConfigError, PretrainConfig, config_to_dict, save_config
from videomae.engine import checkpointing as ckpt
from videomae.engine import dist
from videomae.engine.data_setup import build_dataset, build_loader, build_sampler
from videomae.engine.deepspeed_setup import build_ds_config, consolidated_fp32_state_dict, initialize
from videomae.engine.logging_utils import MetricsWriter, Progress, setup_logging
from videomae.engine.loop import MaskGenerator, MicroStep, NonFiniteError, train_step
from videomae.engine.optim import build_schedule, param_groups, set_step_values
from videomae.engine.pictures import ReconstructionPictures
from videomae.engine.throughput import peak_flops, train_flops_per_clip
from videomae.models import create_model
from videomae.objectives import MaskedPixelLoss

__all__ = ["STOP_FILE", "PretrainRun", "RunSummary", "find_resume_checkpoint", "run_pretraining"]

log = logging.getLogger(__name__)

STOP_FILE = "CHECKPOINT_AND_STOP"
"""Touch ``<output_dir>/CHECKPOINT_AND_STOP`` (or send SIGUSR1 to every rank) to checkpoint and stop cleanly."""


@dataclass
class RunSummary:
    """What a run did (returned on every rank)."""

    start_step: int
    step: int = 0
    losses: dict[int, float] = field(default_factory=dict)
    """Loss of each completed optimizer step: mean over ranks and over the accumulated micro-steps."""
    nonfinite_skipped: int = 0
    stopped_early: bool = False
    export_path: str | None = None


def find_resume_checkpoint(cfg: PretrainConfig, root: Path) -> ckpt.CheckpointInfo | None:
    """The checkpoint this run continues from, per ``cfg.resume``; None for a fresh start.

    Raises:
        RuntimeError: auto-resume found a run started from other ``init`` weights than the ones requested.
        FileNotFoundError: an explicit ``resume`` folder is not a complete checkpoint.
    """
    if cfg.resume == "never":
        return None
    if cfg.resume != "auto":
        return ckpt.checkpoint_at(cfg.resume)
    info = ckpt.find_latest(root)
    if info is not None and info.meta.get("init") != cfg.init:
        raise RuntimeError(
            f"init={cfg.init!r} was requested but {info.path} continues a run started from "
            f"init={info.meta.get('init')!r}; auto-resume never replaces an explicit init: use a new output_dir "
            "or resume=never"
        )
    return info


class _Window:
    """Figures accumulated since the last log line."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.clips, self.data_time, self.start = 0, 0.0, time.perf_counter()

    def rates(self) -> tuple[float, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return self.clips / elapsed, self.data_time / elapsed


class PretrainRun:
    """Everything one rank needs for a run, built from the config; :meth:`train` runs it."""

    def __init__(self, cfg: PretrainConfig) -> None:
        if not cfg.data.manifests:
            raise ConfigError("data.manifests: empty; give at least one manifest, e.g. data.manifests=[train.csv]")
        self.cfg, t, d = cfg, cfg.train, cfg.data
        self.env, self.device = dist.init_distributed()
        if cfg.precision == "fp16" and self.device.type == "cpu":
            raise ConfigError("precision: fp16 needs a GPU (DeepSpeed's CPU accelerator has none); use bf16 or fp32")
        self.out = Path(cfg.output_dir)
        self.root = self.out / "checkpoints"
        setup_logging(self.env.rank, self.out / "train.log")
        seed = cfg.seed + self.env.rank
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

        self.resume_from = dist.broadcast_object(find_resume_checkpoint(cfg, self.root) if dist.is_main() else None)
        model = create_model(cfg.model.name, **cfg.model.create_kwargs())
        if cfg.init is not None and self.resume_from is None:
            log.info("initialising from %s: %s", cfg.init, load_pretrained(model, cfg.init))

        self.dataset = build_dataset(d, self.out, cfg.seed)
        self.sampler = build_sampler(self.dataset, self.env.rank, self.env.world_size, cfg.seed)
        self.steps_per_epoch = len(self.sampler) // t.batch_size // t.grad_accum
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"train.batch_size: {t.batch_size} x train.grad_accum {t.grad_accum} exceeds the {len(self.sampler)} "
                "samples each rank gets per epoch"
            )
        self.total_steps = t.max_steps if t.max_steps is not None else t.epochs * self.steps_per_epoch
        self.peak_lr = t.absolute_lr(self.env.world_size, d.num_sample)
        self.schedule = build_schedule(t, self.total_steps, self.steps_per_epoch, self.peak_lr)
        # A ZeRO checkpoint from another process count loads through a universal checkpoint, which DeepSpeed
        # must know about when the engine is created (a changed ZeRO stage is refused here, before anything heavy).
        universal = self.resume_from is not None and ckpt.resume_needs_universal(
            self.resume_from, self.env.world_size, cfg.deepspeed.zero_stage
        )
        ds_config = build_ds_config(t, cfg.deepspeed, cfg.precision, self.env.world_size, d.num_sample, universal)
        groups = param_groups(model, t.weight_decay, model.no_weight_decay())
        self.engine = initialize(model, groups, ds_config, t, cfg.deepspeed.offload_optimizer)
        if t.compile:
            self.engine.compile()
        self.masks = MaskGenerator(cfg.mask, model.grid_size, self.device, seed=cfg.seed * 1009 + self.env.rank)
        self.loss_fn = MaskedPixelLoss(model.patch_size, model.tubelet_size, cfg.loss.normalize_target)
        self.flops_per_clip = train_flops_per_clip(model, cfg.mask)
        self.peak_flops = peak_flops(self.device, cfg.precision)
        self.pictures = None
        if t.picture_every > 0:
            clips = [self.dataset[i]["video"] for i in range(min(t.picture_clips, len(self.dataset)))]
            self.pictures = ReconstructionPictures(
                clips, model, cfg.mask, self.out / "pictures", cfg.loss.normalize_target
            )
        self.state = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "nonfinite_total": 0, "overflow_total": 0}
        self._consecutive_bad = 0
        self._loader_start = 0  # batches_in_epoch when the current loader started (the sampler counts from there)
        self._poisoned: set[int] = set()
        self._stop_requested = False

    def resume(self) -> None:
        """Restore model, optimizer, loss scale, run counters, sampler position and RNG streams."""
        if self.resume_from is None:
            return
        client, rank_state = ckpt.load_checkpoint(self.engine, self.resume_from)
        self.state.update(client["run_state"])
        self.sampler.load_state_dict(client["sampler"])
        saved_world = int(self.resume_from.meta.get("world_size", self.env.world_size))
        if saved_world != self.env.world_size:
            self._reshard(client, saved_world)
        if rank_state is not None:
            ckpt.set_rng_state(rank_state["rng"], self.masks.generator)
        elif saved_world != self.env.world_size:
            # A rank the checkpoint did not have: a fresh mask stream, distinct from the one it starts a run with.
            self.masks.generator.manual_seed(self.cfg.seed * 1009 + self.env.rank + 7919 * self.state["step"])
        log.info("resumed from %s at step %d", self.resume_from.path, self.state["step"])

    def _reshard(self, client: dict[str, Any], saved_world: int) -> None:
        """Continue a run written by ``saved_world`` processes on this run's process count.

        The sampler's position is global (draws consumed in the epoch), so the next step takes exactly the draws
        the old run would have taken next, now split over this run's ranks; this rank's batch count in the epoch
        is re-derived from it. What cannot carry over: per-rank RNG streams (masks, augmentation seeds) now pair
        differently with the clips, so losses continue statistically, not bit for bit.
        """
        t, world = self.cfg.train, self.env.world_size
        consumed = min(client["sampler"]["offset"], self.sampler.total)
        self.state["batches_in_epoch"] = consumed // (world * t.batch_size)
        saved_train = client.get("config", {}).get("train", {})
        saved_batch = saved_train.get("batch_size", t.batch_size) * saved_train.get("grad_accum", t.grad_accum)
        before, after = saved_batch * saved_world, t.batch_size * t.grad_accum * world
        log.info("resuming a %d-process checkpoint on %d processes (epoch %d, %d draws consumed)", saved_world,
                 world, client["sampler"]["epoch"], consumed)  # fmt: skip
        if before != after:
            log.warning(
                "the effective batch changes from %d to %d videos per step (train.batch_size x train.grad_accum x "
                "processes) and the peak lr is now %.3g: keep that product constant for a continuous run",
                before, after, self.peak_lr,
            )  # fmt: skip

    def save(self) -> None:
        """Write a checkpoint of the current step (collective)."""
        client = {
            "run_state": dict(self.state),
            "sampler": self.sampler.state_dict(
                consumed=(self.state["batches_in_epoch"] - self._loader_start) * self.cfg.train.batch_size
            ),
            "config": config_to_dict(self.cfg),
        }
        rank_state = {"rng": ckpt.get_rng_state(self.masks.generator)}
        meta = {"init": self.cfg.init}
        ckpt.save_checkpoint(
            self.engine, self.root, self.state["step"], client, rank_state, self.cfg.train.keep_last, meta
        )

    def train(self) -> RunSummary:
        """Run (or finish) the configured number of steps, checkpointing on the way; export at the end."""
        self.resume()
        cfg, env = self.cfg, self.env
        if dist.is_main():
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
        log.info(
            "%d processes, %d steps (%d per epoch), peak lr %.3g = %.3g x %d / 256, DeepSpeed ZeRO-%d %s",
            env.world_size, self.total_steps, self.steps_per_epoch, self.peak_lr, cfg.train.lr,
            cfg.train.effective_batch(env.world_size, cfg.data.num_sample), cfg.deepspeed.zero_stage, cfg.precision,
        )  # fmt: skip
        # SIGUSR1 only: SIGTERM also comes from launchers tearing down a failed job, when no checkpoint can be written.
        signal.signal(signal.SIGUSR1, self._on_signal)
        summary = RunSummary(start_step=self.state["step"])
        self.metrics = MetricsWriter(self.out, enabled=dist.is_main())
        self.progress = Progress(self.total_steps, self.state["step"], enabled=dist.is_main())
        if self.pictures is not None and self.state["step"] == 0:
            self.pictures.save(self.engine, 0)
        try:
            while self.state["step"] < self.total_steps and not summary.stopped_early:
                summary.stopped_early = self.train_one_epoch(summary)
        finally:
            self.progress.close()
            self.metrics.close()
        summary.step, summary.nonfinite_skipped = self.state["step"], self.state["nonfinite_total"]
        if not summary.stopped_early:
            summary.export_path = self.export()
        return summary

    def train_one_epoch(self, summary: RunSummary) -> bool:
        """Train on the rest of the current epoch; True when a stop was requested (a checkpoint was written)."""
        t, state = self.cfg.train, self.state
        self.sampler.set_epoch(state["epoch"])
        self._loader_start = state["batches_in_epoch"]
        loader = build_loader(
            self.dataset, self.sampler, self.cfg.data, t.batch_size, state["batches_in_epoch"], self.cfg.seed,
            self.env.rank,
        )  # fmt: skip
        window, micro_losses = _Window(), []
        fetch_start = time.perf_counter()
        for batch in loader:
            window.data_time += time.perf_counter() - fetch_start
            set_step_values(self.engine.optimizer, self.schedule.lr(state["step"]), self.schedule.wd(state["step"]))
            videos = batch["video"].to(self.device, non_blocking=True)  # (B*S, C, T, H, W)
            result = train_step(self.engine, videos, self.masks, self.loss_fn, poison=self._poison_now())
            state["batches_in_epoch"] += 1
            window.clips += videos.shape[0] * self.env.world_size
            if self._count_skip(result):
                micro_losses = []
            else:
                micro_losses.append(result.loss)
            if result.boundary and not result.skipped:
                state["step"] += 1
                local = torch.tensor([sum(micro_losses) / len(micro_losses)])
                summary.losses[state["step"]] = dist.mean_across_ranks(local).item()
                window.losses.append(summary.losses[state["step"]])
                micro_losses = []
                window = self._after_step(window, result)
                finished = state["step"] >= self.total_steps
                if state["step"] % t.save_every == 0 or finished:
                    self.save()
                if self._should_stop():
                    if state["step"] % t.save_every != 0 and not finished:
                        self.save()
                    return True
                if finished:
                    return False
            fetch_start = time.perf_counter()
        state["epoch"] += 1
        state["batches_in_epoch"] = 0
        return False

    def _poison_now(self) -> bool:
        # Testing hook: each listed (1-based) step gets one NaN loss; the retried micro-batch of that step succeeds.
        attempt = self.state["step"] + 1
        if attempt in self.cfg.train.inject_nan_at and attempt not in self._poisoned:
            self._poisoned.add(attempt)
            return True
        return False

    def _count_skip(self, result: MicroStep) -> bool:
        """Count a skipped micro-step; raise after too many non-finite ones in a row. True when it was skipped."""
        if not result.skipped:
            if result.boundary:
                self._consecutive_bad = 0
            return False
        attempt = self.state["step"] + 1
        if result.boundary and self.cfg.precision == "fp16":
            # An fp16 gradient overflow: DeepSpeed lowered the loss scale and dropped the step (routine).
            self.state["overflow_total"] += 1
            log.info("step %d: fp16 gradient overflow, loss scale lowered", attempt)
            return True
        self.state["nonfinite_total"] += 1
        self._consecutive_bad += 1
        log.warning("step %d: non-finite loss/gradient, skipped (%d in a row)", attempt, self._consecutive_bad)
        if self._consecutive_bad >= self.cfg.train.max_nonfinite_steps:
            raise NonFiniteError(f"{self._consecutive_bad} consecutive non-finite steps at step {attempt}")
        return True

    def _after_step(self, window: _Window, result: MicroStep) -> _Window:
        step, t = self.state["step"], self.cfg.train
        lr = self.schedule.lr(step - 1)
        clips_per_s, data_wait = window.rates()
        # clips_per_s counts every rank's clips; MFU is per accelerator.
        mfu = (
            None
            if self.peak_flops is None
            else clips_per_s * self.flops_per_clip / self.env.world_size / self.peak_flops
        )
        self.progress.update(step, window.losses[-1], lr, clips_per_s, data_wait, mfu)
        if step % t.log_every == 0 or step == 1 or step == self.total_steps:
            record = {
                "loss": sum(window.losses) / len(window.losses),
                "lr": lr,
                "wd": self.schedule.wd(step - 1),
                "grad_norm": result.grad_norm,
                "clips_per_s": clips_per_s,
                "data_wait": data_wait,
                "mfu": mfu,
                "tflops_per_s": clips_per_s * self.flops_per_clip / self.env.world_size / 1e12,
                "epoch": self.state["epoch"],
                "nonfinite_skipped": self.state["nonfinite_total"],
                "overflow_skipped": self.state["overflow_total"],
            }
            self.metrics.write(step, record)
            window = _Window()
        if self.pictures is not None and step % t.picture_every == 0:
            self.pictures.save(self.engine, step)
        return window

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop_requested = True

    def _should_stop(self) -> bool:
        local = self._stop_requested or (dist.is_main() and (self.out / STOP_FILE).exists())
        return dist.any_rank(local)

    def export(self) -> str:
        """Consolidated fp32 weights of the final checkpoint as ``export/model.safetensors`` (rank 0 writes)."""
        state = consolidated_fp32_state_dict(self.engine, str(self.root), ckpt.tag_for(self.state["step"]))
        path = self.out / "export" / "model.safetensors"
        if state is not None:
            model = create_model(self.cfg.model.name, **self.cfg.model.create_kwargs())
            model.load_state_dict(state)
            export_weights(model, path, {"step": self.state["step"], "pretrain_config": config_to_dict(self.cfg)})
            log.info("exported fp32 weights to %s", path)
        dist.barrier()
        return str(path)


def run_pretraining(cfg: PretrainConfig) -> RunSummary:
    """Pretrain with dual masking on DeepSpeed as configured; every rank calls this.

    Raises:
        ConfigError: a setting that only shows up against the data or the device.
        NonFiniteError: ``train.max_nonfinite_steps`` consecutive non-finite steps.
    """
    return PretrainRun(cfg).train()
