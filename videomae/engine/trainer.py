"""The trainer every method shares: the DeepSpeed engine, the step loop, resume, checkpoints, the stop signal,
non-finite counting, metrics, progress and the final export. Plain code: a method supplies its model and loss
(:class:`~videomae.engine.method.Method`), :func:`build_trainer` builds everything from the config, and
:meth:`Trainer.fit` runs the steps. ``videomae/engine/README.md`` gives the order of things.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from videomae.checkpoint import export_weights
from videomae.config import ConfigError, config_to_dict, save_config
from videomae.config.batch_plan import batch_plan
from videomae.data.bad_samples import BAD_SAMPLES_FILE
from videomae.disk_faults import SaveFailed, WriteGuard
from videomae.engine import checkpointing as ckpt
from videomae.engine import dist
from videomae.engine.bad_sample_meter import BadSampleMeter
from videomae.engine.compiling import CompileCounts, compile_counts
from videomae.engine.data_setup import build_sampler
from videomae.engine.deepspeed_setup import (
    build_ds_config,
    consolidated_fp32_state_dict,
    initialize,
    parameter_counts,
    partitioned_construction,
)
from videomae.engine.ds_engine import TrainingEngine
from videomae.engine.epoch_loop import EpochLoop
from videomae.engine.logging_utils import MetricsWriter, Progress
from videomae.engine.loop import MicroStep, NonFiniteError, backward_step, compute_dtype
from videomae.engine.method import Method, StepContext
from videomae.engine.optim import Schedule, build_schedule
from videomae.engine.rng_state import generator_seed, get_rng_state, set_rng_state
from videomae.engine.session import Session
from videomae.engine.throughput import peak_flops

__all__ = ["STOP_FILE", "RunSummary", "Trainer", "build_trainer", "train"]

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


def fresh_run_state() -> dict[str, int]:
    """The run counters a checkpoint stores (``run_state``) at the start of a run."""
    return {"step": 0, "epoch": 0, "batches_in_epoch": 0, "nonfinite_total": 0, "overflow_total": 0,
            "bad_samples_total": 0, "short_videos_total": 0}  # fmt: skip


@dataclass
class Trainer:
    """One rank's built run; :func:`build_trainer` makes it, :meth:`fit` trains, :meth:`resume` restores."""

    session: Session
    method: Method
    engine: TrainingEngine
    ctx: StepContext
    sampler: Any | None
    steps_per_epoch: int
    total_steps: int
    peak_lr: float
    schedule: Schedule
    flops_per_clip: int | None
    peak_flops: float | None
    state: dict[str, int] = field(default_factory=fresh_run_state)
    compile_counts: CompileCounts | None = None
    """What the first compiled step captured (``train.compile``)."""
    compile_before: CompileCounts | None = None
    consecutive_bad: int = 0
    loader_start: int = 0
    """``batches_in_epoch`` when the current loader started (the sampler counts from there)."""
    stop_requested: bool = False
    micro_step_observer: Callable[[MicroStep, float, int], None] | None = None
    """Told of every micro-step with its seconds (data loading excluded) and clips: ``videomae doctor``'s clock."""

    @property
    def cfg(self) -> Any:
        return self.session.cfg

    # ------------------------------------------------------------------------------------------------ checkpoints

    def resume(self) -> None:
        """Restore model, optimizer, loss scale, run counters, sampler position, RNG streams and method state."""
        resume_from = self.session.resume_from
        if resume_from is None:
            return
        client, rank_state = ckpt.load_checkpoint(self.engine, resume_from)
        self.state.update(client["run_state"])
        if self.sampler is not None:
            self.sampler.load_state_dict(client["sampler"])
        world = self.session.env.world_size
        saved_world = int(resume_from.meta.get("world_size", world))
        if saved_world != world and self.sampler is not None:
            self._reshard(client, saved_world)
        if rank_state is not None:
            set_rng_state(rank_state["rng"], self.ctx.generator)
        elif saved_world != world:
            # A rank the checkpoint did not have: a fresh stream, distinct from the one it starts a run with.
            self.ctx.generator.manual_seed(generator_seed(self.cfg.seed, self.session.env.rank, self.state["step"]))
        self.method.load_state_dict(client)
        log.info("resumed from %s at step %d", resume_from.path, self.state["step"])

    def _reshard(self, client: dict[str, Any], saved_world: int) -> None:
        """Continue a run written by ``saved_world`` processes on this run's process count.

        The sampler's position is global (draws consumed in the epoch), so the next step takes exactly the draws
        the old run would have taken next, now split over this run's ranks; this rank's batch count in the epoch
        is re-derived from it. What cannot carry over: per-rank RNG streams (masks, augmentation seeds) now pair
        differently with the clips, so losses continue statistically, not bit for bit.
        """
        t, world = self.cfg.train, self.session.env.world_size
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
        client = {"run_state": dict(self.state), "config": config_to_dict(self.cfg), **self.method.state_dict()}
        if self.sampler is not None:
            consumed = (self.state["batches_in_epoch"] - self.loader_start) * self.cfg.train.batch_size
            client["sampler"] = self.sampler.state_dict(consumed=consumed)
        rank_state = {"rng": get_rng_state(self.ctx.generator)}
        meta = {"init": self.cfg.init}
        root, train_cfg = self.session.checkpoint_root, self.cfg.train
        ckpt.save_checkpoint(self.engine, root, self.state["step"], client, rank_state, train_cfg.keep_last, meta)

    # ------------------------------------------------------------------------------------------------ the loop

    def fit(self) -> RunSummary:
        """Resume if there is a checkpoint, run the rest of the configured steps, checkpointing on the way, export
        at the end and let the method finish."""
        self.resume()
        cfg, env, out = self.cfg, self.session.env, self.session.output_dir
        if dist.is_main():
            out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, out / "config.yaml")
        log.info(
            "%d processes, %d steps (%d per epoch), peak lr %.3g = %.3g x %d / 256, DeepSpeed ZeRO-%d %s",
            env.world_size, self.total_steps, self.steps_per_epoch, self.peak_lr, cfg.train.lr,
            batch_plan(cfg, env.world_size).lr_batch, cfg.deepspeed.zero_stage, cfg.precision,
        )  # fmt: skip
        # SIGUSR1 only: SIGTERM also comes from launchers tearing down a failed job, when no checkpoint can be written.
        signal.signal(signal.SIGUSR1, self._on_signal)
        summary = RunSummary(start_step=self.state["step"])
        metrics = MetricsWriter(out, enabled=dist.is_main(), start_step=self.state["step"], sinks=cfg.logging,
                                run_config=config_to_dict(cfg))  # fmt: skip
        bad_samples = BadSampleMeter(self.method.train_set, cfg.train.batch_size, cfg.data.bad_sample_ceiling,
                                     cfg.data.bad_sample_window, out)  # fmt: skip
        progress = Progress(self.total_steps, self.state["step"], enabled=dist.is_main(), desc=self.method.name)
        loop = EpochLoop(self, summary, metrics, bad_samples, progress)
        try:
            first = self.method.begin(self.state["step"])
            if first:  # figures of the model before its first step (pictures at step 0)
                metrics.write(self.state["step"], first)
            while self.state["step"] < self.total_steps and not summary.stopped_early:
                summary.stopped_early = loop.run_epoch()
            loop.close()
            summary.step, summary.nonfinite_skipped = self.state["step"], self.state["nonfinite_total"]
            if self.state["bad_samples_total"] and dist.is_main():
                log.warning("%d clips failed to load and were replaced in this run (see %s)",
                            self.state["bad_samples_total"], out / BAD_SAMPLES_FILE)  # fmt: skip
            if not summary.stopped_early:
                summary.export_path = self.export()
                self.method.finish(summary)
        finally:
            loop.close()
            progress.close()
            metrics.close()
        return summary

    def micro_step(self, batch: dict[str, Any]) -> MicroStep:
        """The method's loss on one loader batch, then the shared backward pass and (at a boundary) the step."""
        out = self.method.loss(batch)
        result = backward_step(self.engine, out.loss)
        if out.metrics:
            values = torch.stack(list(out.metrics.values())).tolist()
            result.metrics = dict(zip(out.metrics, values))
        return result

    def count_skip(self, result: MicroStep) -> bool:
        """Count a skipped micro-step; raise after too many non-finite ones in a row. True when it was skipped."""
        if not result.skipped:
            if result.boundary:
                self.consecutive_bad = 0
            return False
        attempt = self.state["step"] + 1
        if result.boundary and self.cfg.precision == "fp16":
            # An fp16 gradient overflow: DeepSpeed lowered the loss scale and dropped the step (routine).
            self.state["overflow_total"] += 1
            log.info("step %d: fp16 gradient overflow, loss scale lowered", attempt)
            return True
        self.state["nonfinite_total"] += 1
        self.consecutive_bad += 1
        log.warning("step %d: non-finite loss/gradient, skipped (%d in a row)", attempt, self.consecutive_bad)
        if self.consecutive_bad >= self.cfg.train.max_nonfinite_steps:
            raise NonFiniteError(f"{self.consecutive_bad} consecutive non-finite steps at step {attempt}")
        return True

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop_requested = True

    def should_stop(self) -> bool:
        """A stop was asked for on any rank (SIGUSR1, or the stop file seen by rank 0); collective."""
        local = self.stop_requested or (dist.is_main() and (self.session.output_dir / STOP_FILE).exists())
        return dist.any_rank(local)

    # ------------------------------------------------------------------------------------------------ export

    def export(self) -> str:
        """Consolidated fp32 weights of the final checkpoint as ``export/model.safetensors`` (rank 0 writes)."""
        root, step = self.session.checkpoint_root, self.state["step"]
        state = consolidated_fp32_state_dict(self.engine, str(root), ckpt.tag_for(step))
        out = self.session.output_dir
        path = out / "export" / "model.safetensors"
        guard = WriteGuard()  # rank 0 writes; a failure is raised on every rank (none waits for it forever)
        if state is not None:
            guard.call(path, export_weights, self.method.export_model(state), path, self.method.export_metadata(step))
        error = dist.broadcast_object(guard.describe())
        if error is not None:
            raise SaveFailed(
                f"export {path} failed: {error}. The final checkpoint is committed: write the export from it with "
                f"`videomae export {out} {path}`"
            )
        log.info("exported fp32 weights to %s", path)
        return str(path)


def build_trainer(session: Session, method: Method) -> Trainer:
    """Build the model, the DeepSpeed engine, the sampler and the schedule for ``method`` (collective), and start
    the method on them (:meth:`Method.start`)."""
    cfg, env = session.cfg, session.env
    t = cfg.train
    # A ZeRO checkpoint from another process count loads through a universal checkpoint, which DeepSpeed must know
    # about when the engine is created (a changed ZeRO stage is refused here, before anything heavy).
    resume_from = session.resume_from
    universal = resume_from is not None and ckpt.resume_needs_universal(
        resume_from, env.world_size, cfg.deepspeed.zero_stage
    )
    plan = batch_plan(cfg, env.world_size)
    ds_config = build_ds_config(t, cfg.deepspeed, cfg.precision, plan, universal)
    with partitioned_construction(ds_config):  # ZeRO-3: each rank only ever holds its share of the weights
        model = method.build_model()
    total, local = parameter_counts(model)
    log.info("model: %.1fM parameters, %.1fM held by this process", total / 1e6, local / 1e6)
    method.prepare_model(model, fresh=resume_from is None)
    sampler, steps_per_epoch, total_steps = None, 0, 0
    if method.train_set is not None:
        sampler = build_sampler(method.train_set, env.rank, env.world_size, cfg.seed)
        steps_per_epoch = len(sampler) // t.batch_size // t.grad_accum
        if steps_per_epoch < 1:
            raise ConfigError(
                f"train.batch_size: {t.batch_size} x train.grad_accum {t.grad_accum} exceeds the "
                f"{len(sampler)} samples each rank gets per epoch"
            )
        total_steps = t.max_steps if t.max_steps is not None else t.epochs * steps_per_epoch
    peak_lr = plan.peak_lr
    schedule = build_schedule(t, max(total_steps, 1), max(steps_per_epoch, 1), peak_lr)
    engine = initialize(model, method.param_groups(model), ds_config, t, cfg.deepspeed.offload_optimizer)
    compile_before = None
    if t.compile:
        compile_before = compile_counts()
        engine.compile()
    generator = torch.Generator(device=session.device)
    generator.manual_seed(generator_seed(cfg.seed, env.rank))
    ctx = StepContext(
        engine=engine, device=session.device, rank=env.rank, world_size=env.world_size, generator=generator,
        output_dir=session.output_dir, total_steps=total_steps, compute_dtype=compute_dtype(engine),
    )  # fmt: skip
    method.start(ctx)
    return Trainer(
        session=session, method=method, engine=engine, ctx=ctx, sampler=sampler, steps_per_epoch=steps_per_epoch,
        total_steps=total_steps, peak_lr=peak_lr, schedule=schedule, flops_per_clip=method.flops_per_clip(model),
        peak_flops=peak_flops(session.device, cfg.precision), compile_before=compile_before,
    )  # fmt: skip


def train(session: Session, method: Method) -> RunSummary:
    """Build the trainer for ``method`` and run it to the end (or to a requested stop); every rank calls this."""
    return build_trainer(session, method).fit()
