"""What every training stage's run shares: process group, seeding, resume, the DeepSpeed engine, the step loop,
checkpoints, the stop signal, non-finite counting, metrics, progress and the final export.

A stage subclasses :class:`TrainingRun` and supplies what :class:`~videomae.engine.stage.StageHooks` lists: its
model and init, training set, parameter groups and micro-step; optional hooks add per-step work and metrics, state
kept in checkpoints and export metadata. Pretraining is :class:`videomae.engine.trainer.PretrainRun`, supervised
fine-tuning :class:`videomae.engine.finetune.FinetuneRun`.
"""

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

from videomae.checkpoint import export_weights
from videomae.config import ConfigError, config_to_dict, save_config
from videomae.data.bad_samples import BAD_SAMPLES_FILE
from videomae.disk_faults import SaveFailed, WriteGuard
from videomae.engine import checkpointing as ckpt
from videomae.engine import dist
from videomae.engine.bad_sample_meter import BadSampleMeter
from videomae.engine.checkpointing import find_resume_checkpoint
from videomae.engine.compiling import CompileCounts, check_compiled, compile_counts
from videomae.engine.data_setup import build_loader, build_sampler
from videomae.engine.deepspeed_setup import (
    build_ds_config,
    consolidated_fp32_state_dict,
    initialize,
    parameter_counts,
    partitioned_construction,
)
from videomae.engine.logging_utils import MetricsWriter, Progress, setup_logging
from videomae.engine.loop import MicroStep, NonFiniteError
from videomae.engine.optim import build_schedule, set_step_values
from videomae.engine.rng_state import generator_seed, get_rng_state, process_seed, set_rng_state
from videomae.engine.stage import StageHooks
from videomae.engine.throughput import peak_flops

__all__ = ["STOP_FILE", "RunSummary", "TrainingRun", "find_resume_checkpoint"]

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


class _Window:
    """Figures accumulated since the last log line."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.metrics: dict[str, list[float]] = {}  # the stage's per-step figures (MicroStep.metrics)
        self.clips, self.data_time, self.start = 0, 0.0, time.perf_counter()
        self.bad_samples = 0  # clips that failed to load and were replaced (all ranks)

    def add(self, loss: float, metrics: dict[str, float]) -> None:
        """Record one optimizer step's loss and figures."""
        self.losses.append(loss)
        for key, value in metrics.items():
            self.metrics.setdefault(key, []).append(value)

    def means(self) -> dict[str, float]:
        """Each figure's mean over the window."""
        return {key: sum(values) / len(values) for key, values in self.metrics.items()}

    def rates(self) -> tuple[float, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return self.clips / elapsed, self.data_time / elapsed


def _step_means(
    losses: list[float], metrics: list[dict[str, float]], counts: tuple[int, ...] = ()
) -> tuple[float, dict[str, float], list[int]]:
    """One optimizer step's loss and figures (means over its micro-steps, then over ranks) and ``counts`` summed
    over ranks, in one all-reduce."""
    keys = sorted(metrics[0]) if metrics else []
    local = [sum(losses) / len(losses)] + [sum(m[k] for m in metrics) / len(metrics) for k in keys] + list(counts)
    means = dist.mean_across_ranks(torch.tensor(local, dtype=torch.float64)).tolist()
    sums = [round(mean * dist.world_size()) for mean in means[1 + len(keys) :]]
    return means[0], dict(zip(keys, means[1 : 1 + len(keys)])), sums


class TrainingRun(StageHooks):
    """Everything one rank needs for a run of any stage, built from the config; :meth:`train` runs it.

    Subclasses implement the :class:`~videomae.engine.stage.StageHooks` without defaults; their :meth:`setup`
    sets ``self.generator``, the per-rank stream of the stage's own random draws (pretraining: masks), which is
    checkpointed with the global RNG states.
    """

    def __init__(self, cfg: Any) -> None:
        self.cfg, t, d = cfg, cfg.train, cfg.data
        self.env, self.device = dist.init_distributed()
        if cfg.precision == "fp16" and self.device.type == "cpu":
            raise ConfigError("precision: fp16 needs a GPU (DeepSpeed's CPU accelerator has none); use bf16 or fp32")
        self.out = Path(cfg.output_dir)
        self.root = self.out / "checkpoints"
        setup_logging(self.env.rank, self.out / "train.log")
        seed = process_seed(cfg.seed, self.env.rank)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

        self.resume_from = dist.broadcast_object(find_resume_checkpoint(cfg, self.root) if dist.is_main() else None)
        self.dataset = self.build_train_dataset()
        # A ZeRO checkpoint from another process count loads through a universal checkpoint, which DeepSpeed
        # must know about when the engine is created (a changed ZeRO stage is refused here, before anything heavy).
        universal = self.resume_from is not None and ckpt.resume_needs_universal(
            self.resume_from, self.env.world_size, cfg.deepspeed.zero_stage
        )
        ds_config = build_ds_config(t, cfg.deepspeed, cfg.precision, self.env.world_size, d.num_sample, universal)
        with partitioned_construction(ds_config):  # ZeRO-3: each rank only ever holds its share of the weights
            model = self.build_model()
        total, local = parameter_counts(model)
        log.info("model: %.1fM parameters, %.1fM held by this process", total / 1e6, local / 1e6)
        if self.resume_from is None:
            self.load_init(model)
        self.before_engine(model)
        self.sampler, self.steps_per_epoch, self.total_steps = None, 0, 0
        if self.dataset is not None:
            self.sampler = build_sampler(self.dataset, self.env.rank, self.env.world_size, cfg.seed)
            self.steps_per_epoch = len(self.sampler) // t.batch_size // t.grad_accum
            if self.steps_per_epoch < 1:
                raise ConfigError(
                    f"train.batch_size: {t.batch_size} x train.grad_accum {t.grad_accum} exceeds the "
                    f"{len(self.sampler)} samples each rank gets per epoch"
                )
            self.total_steps = t.max_steps if t.max_steps is not None else t.epochs * self.steps_per_epoch
        self.peak_lr = t.absolute_lr(self.env.world_size, d.num_sample)
        self.schedule = build_schedule(t, max(self.total_steps, 1), max(self.steps_per_epoch, 1), self.peak_lr)
        self.engine = initialize(model, self.param_groups(model), ds_config, t, cfg.deepspeed.offload_optimizer)
        self.compile_counts: CompileCounts | None = None  # what the first compiled step captured
        if t.compile:
            self._compile_before = compile_counts()
            self.engine.compile()
        self.flops_per_clip: int | None = None
        self.peak_flops = peak_flops(self.device, cfg.precision)
        self.state = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "nonfinite_total": 0, "overflow_total": 0,
                      "bad_samples_total": 0}  # fmt: skip
        self._consecutive_bad = 0
        self._loader_start = 0  # batches_in_epoch when the current loader started (the sampler counts from there)
        self._poisoned: set[int] = set()
        self._stop_requested = False
        self.setup(model)

    # ------------------------------------------------------------------------------------------------ checkpoints

    def resume(self) -> None:
        """Restore model, optimizer, loss scale, run counters, sampler position, RNG streams and stage state."""
        if self.resume_from is None:
            return
        client, rank_state = ckpt.load_checkpoint(self.engine, self.resume_from)
        self.state.update(client["run_state"])
        if self.sampler is not None:
            self.sampler.load_state_dict(client["sampler"])
        saved_world = int(self.resume_from.meta.get("world_size", self.env.world_size))
        if saved_world != self.env.world_size and self.sampler is not None:
            self._reshard(client, saved_world)
        if rank_state is not None:
            set_rng_state(rank_state["rng"], self.generator)
        elif saved_world != self.env.world_size:
            # A rank the checkpoint did not have: a fresh stream, distinct from the one it starts a run with.
            self.generator.manual_seed(generator_seed(self.cfg.seed, self.env.rank, self.state["step"]))
        self.load_client_state(client)
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
        client = {"run_state": dict(self.state), "config": config_to_dict(self.cfg), **self.client_state()}
        if self.sampler is not None:
            consumed = (self.state["batches_in_epoch"] - self._loader_start) * self.cfg.train.batch_size
            client["sampler"] = self.sampler.state_dict(consumed=consumed)
        rank_state = {"rng": get_rng_state(self.generator)}
        meta = {"init": self.cfg.init}
        ckpt.save_checkpoint(
            self.engine, self.root, self.state["step"], client, rank_state, self.cfg.train.keep_last, meta
        )

    # ------------------------------------------------------------------------------------------------ the loop

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
        self.metrics = MetricsWriter(self.out, enabled=dist.is_main(), start_step=self.state["step"])
        self.bad_samples = BadSampleMeter(self.dataset, cfg.train.batch_size, cfg.data.bad_sample_ceiling,
                                          cfg.data.bad_sample_window, self.out)  # fmt: skip
        self.progress = Progress(self.total_steps, self.state["step"], enabled=dist.is_main(), desc=self.stage)
        try:
            self.on_start()
            self._first_step_start = time.perf_counter()
            while self.state["step"] < self.total_steps and not summary.stopped_early:
                summary.stopped_early = self.train_one_epoch(summary)
            summary.step, summary.nonfinite_skipped = self.state["step"], self.state["nonfinite_total"]
            if self.state["bad_samples_total"] and dist.is_main():
                log.warning("%d clips failed to load and were replaced in this run (see %s)",
                            self.state["bad_samples_total"], self.out / BAD_SAMPLES_FILE)  # fmt: skip
            if not summary.stopped_early:
                summary.export_path = self.export()
                self.on_finish(summary)
        finally:
            self.progress.close()
            self.metrics.close()
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
        window, micro_losses, micro_metrics = _Window(), [], []
        fetch_start = time.perf_counter()
        for batch in loader:
            window.data_time += time.perf_counter() - fetch_start
            set_step_values(self.engine.optimizer, self.schedule.lr(state["step"]), self.schedule.wd(state["step"]))
            result = self.micro_step(batch, poison=self._poison_now())
            self.bad_samples.add_batch(batch)
            state["batches_in_epoch"] += 1
            window.clips += batch["video"].shape[0] * self.env.world_size
            if self._count_skip(result):
                micro_losses, micro_metrics = [], []
            else:
                micro_losses.append(result.loss)
                micro_metrics.append(result.metrics)
            if result.boundary and not result.skipped:
                state["step"] += 1
                loss, metrics, (bad, loads) = _step_means(micro_losses, micro_metrics, self.bad_samples.take_step())
                summary.losses[state["step"]] = loss
                window.add(loss, metrics)
                window.bad_samples += bad
                state["bad_samples_total"] += bad
                micro_losses, micro_metrics = [], []
                window = self._after_step(window, result)
                self.bad_samples.end_step(bad, loads)  # every rank stops here together when most loads fail
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
        tflops = None if self.flops_per_clip is None else clips_per_s * self.flops_per_clip / self.env.world_size
        # clips_per_s counts every rank's clips; MFU is per accelerator.
        mfu = None if self.peak_flops is None or tflops is None else tflops / self.peak_flops
        if t.compile and self.compile_counts is None:
            seconds = time.perf_counter() - self._first_step_start
            self.compile_counts = check_compiled(self.engine, self._compile_before, seconds)
        extra = self.on_step_end(step)
        self.progress.update(step, window.losses[-1], lr, clips_per_s, data_wait, mfu, self.state["bad_samples_total"])
        if step % t.log_every == 0 or step == 1 or step == self.total_steps or extra:
            record = {
                "loss": sum(window.losses) / len(window.losses),
                "lr": lr,
                "wd": self.schedule.wd(step - 1),
                "grad_norm": result.grad_norm,
                "clips_per_s": clips_per_s,
                "data_wait": data_wait,
                "mfu": mfu,
                "tflops_per_s": None if tflops is None else tflops / 1e12,
                "epoch": self.state["epoch"],
                "nonfinite_skipped": self.state["nonfinite_total"],
                "overflow_skipped": self.state["overflow_total"],
                "bad_samples": window.bad_samples,
                "bad_samples_total": self.state["bad_samples_total"],
                **window.means(),
                **extra,
            }
            self.metrics.write(step, record)
            window = _Window()
        return window

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop_requested = True

    def _should_stop(self) -> bool:
        local = self._stop_requested or (dist.is_main() and (self.out / STOP_FILE).exists())
        return dist.any_rank(local)

    # ------------------------------------------------------------------------------------------------ export

    def export(self) -> str:
        """Consolidated fp32 weights of the final checkpoint as ``export/model.safetensors`` (rank 0 writes)."""
        state = consolidated_fp32_state_dict(self.engine, str(self.root), ckpt.tag_for(self.state["step"]))
        path = self.out / "export" / "model.safetensors"
        guard = WriteGuard()  # rank 0 writes; a failure is raised on every rank (none waits for it forever)
        if state is not None:
            guard.call(path, export_weights, self.export_model(state), path, self.export_metadata())
        error = dist.broadcast_object(guard.describe())
        if error is not None:
            raise SaveFailed(
                f"export {path} failed: {error}. The final checkpoint is committed: write the export from it with "
                f"`videomae export {self.out} {path}`"
            )
        log.info("exported fp32 weights to %s", path)
        return str(path)
