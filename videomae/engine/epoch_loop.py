"""The steps of one :meth:`~videomae.engine.trainer.Trainer.fit`: batches, micro-steps, optimizer steps, logging and
checkpoints, epoch by epoch."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from videomae.engine.bad_sample_meter import BadSampleMeter
from videomae.engine.compiling import check_compiled
from videomae.engine.data_setup import TrainLoader
from videomae.engine.logging_utils import MetricsWriter, Progress
from videomae.engine.loop import MicroStep
from videomae.engine.optim import set_step_values
from videomae.engine.step_stats import LogWindow, step_means

if TYPE_CHECKING:
    from videomae.engine.trainer import RunSummary, Trainer

__all__ = ["EpochLoop"]


class EpochLoop:
    """The steps of one :meth:`Trainer.fit`: batches, micro-steps, optimizer steps, logging and checkpoints."""

    def __init__(
        self, trainer: Trainer, summary: RunSummary, metrics: MetricsWriter, bad: BadSampleMeter, progress: Progress
    ) -> None:
        self.trainer, self.summary, self.metrics, self.bad, self.progress = trainer, summary, metrics, bad, progress
        cfg, train_set = trainer.cfg, trainer.method.train_set
        self.loader = (
            None
            if train_set is None
            else TrainLoader(
                train_set, trainer.sampler, cfg.data, cfg.train.batch_size, cfg.seed, trainer.session.env.rank
            )
        )
        self.first_step_start = time.perf_counter()

    def close(self) -> None:
        """The training batches are over: end the loader's workers."""
        if self.loader is not None:
            self.loader.close()
            self.loader = None

    def run_epoch(self) -> bool:
        """Train on the rest of the current epoch; True when a stop was requested (a checkpoint was written)."""
        trainer, t, state = self.trainer, self.trainer.cfg.train, self.trainer.state
        trainer.sampler.set_epoch(state["epoch"])
        trainer.loader_start = state["batches_in_epoch"]
        env = trainer.session.env
        window, micro_losses, micro_metrics = LogWindow(), [], []
        fetch_start = time.perf_counter()
        for batch in self.loader.epoch(state["batches_in_epoch"]):
            window.data_time += time.perf_counter() - fetch_start
            schedule = trainer.schedule
            set_step_values(trainer.engine.optimizer, schedule.lr(state["step"]), schedule.wd(state["step"]))
            step_start = time.perf_counter()
            result = trainer.micro_step(batch)  # its loss.item() waits until the device has finished
            if trainer.micro_step_observer is not None:
                trainer.micro_step_observer(result, time.perf_counter() - step_start, batch["video"].shape[0])
            self.bad.add_batch(batch)
            state["batches_in_epoch"] += 1
            window.clips += batch["video"].shape[0] * env.world_size
            if trainer.count_skip(result):
                micro_losses, micro_metrics = [], []
            else:
                micro_losses.append(result.loss)
                micro_metrics.append(result.metrics)
            if result.boundary and not result.skipped:
                state["step"] += 1
                counts = (*self.bad.take_step(), self.bad.take_short())
                loss, metrics, (bad, loads, short) = step_means(micro_losses, micro_metrics, counts)
                self.summary.losses[state["step"]] = loss
                window.add(loss, metrics)
                window.bad_samples += bad
                state["bad_samples_total"] += bad
                window.short_videos += short
                state["short_videos_total"] += short
                micro_losses, micro_metrics = [], []
                window = self.after_step(window, result)
                self.bad.end_step(bad, loads)  # every rank stops here together when most loads fail
                finished = state["step"] >= trainer.total_steps
                if state["step"] % t.save_every == 0 or finished:
                    trainer.save()
                if trainer.should_stop():
                    if state["step"] % t.save_every != 0 and not finished:
                        trainer.save()
                    return True
                if finished:
                    return False
            fetch_start = time.perf_counter()
        state["epoch"] += 1
        state["batches_in_epoch"] = 0
        return False

    def after_step(self, window: LogWindow, result: MicroStep) -> LogWindow:
        """The method's per-step work, the progress bar and (every ``log_every`` steps) a metrics record."""
        trainer = self.trainer
        step, t, state = trainer.state["step"], trainer.cfg.train, trainer.state
        lr = trainer.schedule.lr(step - 1)
        clips_per_s, data_wait = window.rates()
        flops = trainer.flops_per_clip
        tflops = None if flops is None else clips_per_s * flops / trainer.session.env.world_size
        # clips_per_s counts every rank's clips; MFU is per accelerator.
        mfu = None if trainer.peak_flops is None or tflops is None else tflops / trainer.peak_flops
        if t.compile and trainer.compile_counts is None:
            seconds = time.perf_counter() - self.first_step_start
            trainer.compile_counts = check_compiled(trainer.engine, trainer.compile_before, seconds)
        extra = trainer.method.after_step(step)
        self.progress.update(step, window.losses[-1], lr, clips_per_s, data_wait, mfu, state["bad_samples_total"])
        if step % t.log_every == 0 or step == 1 or step == trainer.total_steps or extra:
            record = {
                "loss": sum(window.losses) / len(window.losses),
                "lr": lr,
                "wd": trainer.schedule.wd(step - 1),
                "grad_norm": result.grad_norm,
                "clips_per_s": clips_per_s,
                "data_wait": data_wait,
                "mfu": mfu,
                "tflops_per_s": None if tflops is None else tflops / 1e12,
                "epoch": state["epoch"],
                "nonfinite_skipped": state["nonfinite_total"],
                "overflow_skipped": state["overflow_total"],
                "bad_samples": window.bad_samples,
                "bad_samples_total": state["bad_samples_total"],
                "short_videos": window.short_videos,
                "short_videos_total": state["short_videos_total"],
                **window.means(),
                **extra,
            }
            self.metrics.write(step, record)
            window = LogWindow()
        return window
