"""``videomae doctor``: a run's preflight on its real launcher, backend and devices, in about a minute.

Every rank runs, in order: the collectives the run uses (each with an answer known in advance); the shared
``output_dir`` check; the configured run built exactly as it would train (dataset, model under the configured ZeRO
stage and precision, DeepSpeed engine); a timed decode of sample rows of every manifest (unreadable rows are
named, never replaced); two real optimizer steps; the checkpoint they write, loaded back by every rank. Rank 0
then prints the ``check | status | detail`` table, with the data-vs-model throughput verdict, and writes
``<output_dir>/doctor.json``; every rank exits 1 when any check failed.

The run goes to ``<output_dir>/doctor/`` (the real run's auto-resume never sees it); its checkpoint and export
are deleted at the end unless kept. A check that does not finish within its time limit (a rank missing at the
rendezvous, one stuck in a collective) ends the process with status 1, naming the check, instead of waiting for the
process group's own timeout (10-30 minutes); the launcher then stops the other ranks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from videomae.config import ConfigError, load_config, load_finetune_config
from videomae.config.methods import method_trainer
from videomae.engine import checkpointing as ckpt
from videomae.engine import dist
from videomae.engine.dist import all_gather_objects
from videomae.launching.doctor_checks import (
    FAIL,
    PASS,
    WARN,
    CheckResult,
    check_shared_folder,
    collective_rows,
    data_rows,
    decode_sample,
    format_table,
    hostname,
    merge_ranks,
    merge_samples,
    throughput_verdict,
    worker_rate,
)
from videomae.launching.preflight import preflight_findings

if TYPE_CHECKING:
    from videomae.engine.loop import MicroStep
    from videomae.engine.trainer import Trainer

__all__ = ["STEPS", "doctor_config", "load_run_config", "run_doctor", "static_findings"]

log = logging.getLogger(__name__)

STEPS = 2
"""Optimizer steps the doctor trains: the first warms up (allocations, kernels, compilation), the second is timed."""
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_CPU_BUCKET = 1 << 20  # elements summed on CPU: gloo at DeepSpeed's 50M-element bucket would dominate the minute


def load_run_config(path: str, overrides: list[str], stage: str = "auto") -> tuple[str, Any]:
    """The stage (``pretrain`` or ``finetune``) and its config; ``auto`` takes the loader that accepts the file
    (both: the model decides, ``pretrain_*`` names being pretraining models).

    Raises:
        ConfigError: no loader accepts the file and overrides (both loaders' reasons are given).
    """
    loaders = {"pretrain": load_config, "finetune": load_finetune_config}
    if stage != "auto":
        return stage, loaders[stage](path, overrides)
    accepted, errors = {}, {}
    for name, load in loaders.items():
        try:
            accepted[name] = load(path, overrides)
        except ConfigError as err:
            errors[name] = str(err)
    if not accepted:
        if errors["pretrain"] == errors["finetune"]:
            raise ConfigError(errors["pretrain"])
        raise ConfigError(
            f"{path} is neither a pretraining config ({errors['pretrain']}) nor a fine-tuning config "
            f"({errors['finetune']}); --stage pretrain|finetune gives one loader's error alone"
        )
    if len(accepted) == 1:
        return next(iter(accepted.items()))
    name = "pretrain" if accepted["pretrain"].model.name.startswith("pretrain_") else "finetune"
    return name, accepted[name]


def doctor_config(cfg: Any, folder: Path) -> Any:
    """``cfg`` for :data:`STEPS` steps into ``folder``: a fresh start, a checkpoint at the last step, every step
    logged, no pictures and no periodic evaluation."""
    changes: dict[str, Any] = {
        "max_steps": STEPS, "epochs": None, "save_every": STEPS, "log_every": 1, "keep_last": 1,
    }  # fmt: skip
    changes.update({key: 0 for key in ("picture_every", "eval_every") if hasattr(cfg.train, key)})
    return dataclasses.replace(
        cfg, output_dir=str(folder), resume="never", train=dataclasses.replace(cfg.train, **changes)
    )


def static_findings(cfg: Any) -> list[CheckResult]:
    """Rank 0's checks of the config and the data that need no process group (the launcher's preflight).

    The one place where ``videomae.launching.preflight.preflight_findings(cfg, check_port=False)`` joins the table,
    each ``Finding(check, ok, detail, fix, warning)`` as ``CheckResult(check, PASS, WARN or FAIL, detail + fix)``.
    """
    rows = []
    for f in preflight_findings(cfg, check_port=False):  # the port is bound already: the process group is up
        shown = f.fix and (f.warning or not f.ok)
        detail = "; ".join(f.detail.splitlines()) + (f"; fix: {f.fix}" if shown else "")
        rows.append(CheckResult(f.check, (WARN if f.warning else PASS) if f.ok else FAIL, detail))
    return rows


class StepClock:
    """The duration of every micro-step (data excluded), told by the trainer (``Trainer.micro_step_observer``)."""

    def __init__(self) -> None:
        self.micro_times: list[tuple[float, bool, int]] = []  # (seconds, ends an optimizer step, clips)

    def __call__(self, result: MicroStep, seconds: float, clips: int) -> None:
        self.micro_times.append((seconds, result.boundary, clips))

    def step_times(self) -> list[tuple[float, int]]:
        """``(seconds, clips)`` of each optimizer step on this rank."""
        steps, seconds, clips = [], 0.0, 0
        for duration, boundary, count in self.micro_times:
            seconds, clips = seconds + duration, clips + count
            if boundary:
                steps.append((seconds, clips))
                seconds, clips = 0.0, 0
        return steps


def _build_trainer(stage: str, cfg: Any) -> Trainer:
    """The run's trainer and method as training would build them (a pretraining config's ``method`` picks its
    trainer builder)."""
    if stage == "pretrain":
        return method_trainer(cfg.method)(cfg)
    from videomae.methods.finetune import build_finetune_trainer

    return build_finetune_trainer(cfg)


def _cores_per_rank(local_world_size: int) -> int:
    cores = len(os.sched_getaffinity(0))
    # Bound to its own cores (srun --cpus-per-task) a rank has them all; seeing the whole machine, it shares it.
    return cores if cores < (os.cpu_count() or cores) else max(cores // local_world_size, 1)


class Doctor:
    """One rank's doctor: runs the checks in order, collecting this rank's rows."""

    def __init__(self, cfg: Any, stage: str, source: str, rows_per_manifest: int, timeout_s: float, keep: bool):
        self.cfg, self.stage, self.source = cfg, stage, source
        self.rows_per_manifest, self.timeout_s, self.keep = rows_per_manifest, timeout_s, keep
        self.folder = Path(cfg.output_dir) / "doctor"
        self.rows: list[CheckResult] = []
        self.rank = 0

    @contextlib.contextmanager
    def deadline(self, check: str) -> Iterator[None]:
        """Run the block, or end the process with status 1 when it takes longer than the time limit."""
        timer = threading.Timer(self.timeout_s, self._expire, args=(check,))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def _expire(self, check: str) -> None:
        detail = (
            f"not finished within {self.timeout_s:.0f} s on rank {self.rank} ({hostname()}): a rank missing at the "
            "rendezvous, stuck in a collective, or much slower than the others"
        )
        if self.rank == 0:
            print(format_table([*self.rows, CheckResult(check, FAIL, detail)]), flush=True)
        print(f"videomae doctor: FAIL: {check}: {detail}; stopping", file=sys.stderr, flush=True)
        os._exit(1)

    def _fail(self, check: str, err: BaseException) -> None:
        self.rows.append(CheckResult(check, FAIL, f"{type(err).__name__}: {err}"))
        expected = isinstance(err, ConfigError | OSError)  # a bad setting or file: the message says it all
        log.error("doctor: %s failed on rank %d: %s", check, self.rank, err, exc_info=None if expected else err)

    def run(self) -> int:
        """Every check on this rank; returns the exit status (the same on every rank)."""
        cfg = self.cfg
        try:
            with self.deadline("process group"):
                env, device = dist.init_distributed()
        except Exception as err:  # no group to gather on: each rank reports for itself
            self._fail("process group", err)
            print(format_table(self.rows), flush=True)
            return 1
        self.rank, main = env.rank, env.rank == 0
        try:
            if main:
                self.rows += static_findings(cfg)
            elements = cfg.deepspeed.reduce_bucket_size if device.type == "cuda" else _CPU_BUCKET
            with self.deadline("collectives"):
                self.rows += collective_rows(env, device, _DTYPES[cfg.precision], elements)
            with self.deadline("shared output_dir"):
                shared = check_shared_folder(self.folder, env)  # the same row on every rank
            self.rows += [shared] if main else []
            run = self._build(env, device)
            if run is not None:
                self._check_run(run, env)
            return self._finish(env, device)
        finally:
            dist.destroy()

    def _build(self, env: dist.DistEnv, device: torch.device) -> Trainer | None:
        """The configured run, built as it would train; None on every rank when it failed on any."""
        run, start = None, time.perf_counter()
        try:
            with self.deadline("build"):
                if env.rank == 0:  # a previous doctor's files
                    for name in ("checkpoints", "export"):
                        shutil.rmtree(self.folder / name, ignore_errors=True)
                dist.barrier()
                run = _build_trainer(self.stage, doctor_config(self.cfg, self.folder))
        except Exception as err:
            self._fail("build", err)
        if dist.any_rank(run is None):
            return None
        ds = self.cfg.deepspeed
        label = getattr(self.cfg.model, "name", None) or self.cfg.method  # MAE-CLIP names towers, not a model
        params = sum(getattr(p, "ds_numel", p.numel()) for p in run.engine.module.parameters())  # ZeRO-3: full sizes
        self.rows.append(CheckResult(
            "build", PASS,
            f"{label} ({params / 1e6:.1f} M parameters), ZeRO-{ds.zero_stage} {self.cfg.precision}, DeepSpeed engine "
            f"on {env.world_size} x {device.type} in {time.perf_counter() - start:.1f} s",
            {"parameters": params},
        ))  # fmt: skip
        return run

    def _check_run(self, run: Trainer, env: dist.DistEnv) -> None:
        rate, unreadable = self._check_data(run, env)
        if unreadable:
            if env.rank == 0:
                detail = f"skipped: no sampled row of {', '.join(unreadable)} was readable (the run would stop)"
                self.rows.append(CheckResult("train steps", WARN, detail))
            return
        steps = self._train(run)
        if steps is None:
            return
        self._check_checkpoint(run, env)
        timings = all_gather_objects(steps[-1])  # the last (warm) step of every rank: the slowest sets the pace
        if env.rank == 0:
            step_s, clips = max(timings)
            cores = _cores_per_rank(env.local_world_size)
            self.rows.append(throughput_verdict(rate, step_s, clips, self.cfg.data.num_workers, cores))

    def _check_data(self, run: Trainer, env: dist.DistEnv) -> tuple[float | None, list[str]]:
        """Decode sample rows of every manifest on every rank; returns a worker's clips/s for the training mix and
        the training manifests without a readable sampled row (the same answer on every rank)."""
        sets = [("data", run.method.train_set)]
        if self.stage == "finetune":  # the test set falls back to the validation manifests: decode those once
            labelled = run.method.sets
            sets += [("val data", labelled.val), ("test data", labelled.test if self.cfg.data.test_manifests else None)]
        rate, unreadable = None, []
        for label, dataset in sets:
            if dataset is None:
                continue
            with self.deadline(label):
                samples = merge_samples(all_gather_objects(
                    decode_sample(dataset, self.rows_per_manifest, env.rank, env.world_size)
                ))  # fmt: skip
            if env.rank == 0:
                self.rows += data_rows(label, samples, env.world_size)
            if label == "data":
                rate, unreadable = worker_rate(samples), [Path(s.manifest).name for s in samples if s.clips == 0]
        return rate, unreadable

    def _train(self, run: Trainer) -> list[tuple[float, int]] | None:
        """Two optimizer steps through the run's own loop; this rank's ``(seconds, clips)`` per step."""
        if self.stage == "finetune":
            # Evaluation sets were decoded above; scoring them in full at the last step would take the run's time.
            run.method.sets = dataclasses.replace(run.method.sets, val=None, test=None)
        clock = run.micro_step_observer = StepClock()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        try:
            with self.deadline("train steps"):
                summary = run.fit()
        except Exception as err:
            self._fail("train steps", err)
            summary = None
        if dist.any_rank(summary is None):
            return None
        steps, losses = clock.step_times(), [summary.losses[s] for s in sorted(summary.losses)]
        ok = summary.step == STEPS and summary.nonfinite_skipped == 0 and all(map(math.isfinite, losses))
        detail = f"{summary.step} steps, loss " + " -> ".join(f"{v:.4f}" for v in losses)
        if steps:
            detail += f", {steps[-1][0]:.3f} s per step after a first of {steps[0][0]:.2f} s"
        if torch.cuda.is_available():
            detail += f", peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
        if not ok:
            detail += f"; {summary.nonfinite_skipped} non-finite steps skipped"
        self.rows.append(CheckResult("train steps", PASS if ok else FAIL, detail, {"losses": losses, "steps": steps}))
        return None if dist.any_rank(not (ok and steps)) else steps

    def _check_checkpoint(self, run: Trainer, env: dist.DistEnv) -> None:
        """Every rank finds the committed checkpoint of the last step and loads it back into the engine."""
        try:
            with self.deadline("checkpoint"):
                root = run.session.checkpoint_root
                info = ckpt.find_latest(root)
                seen = info is not None and info.step == STEPS
                if not seen:
                    self.rows.append(CheckResult("checkpoint", FAIL, f"no committed step {STEPS} in {root}"))
                if dist.any_rank(not seen):  # loading is collective: only when every rank can
                    return
                client, _ = ckpt.load_checkpoint(run.engine, info)
                if client["run_state"]["step"] != STEPS:
                    raise RuntimeError(f"loaded step {client['run_state']['step']}, wrote step {STEPS}")
                size = sum(f.stat().st_size for f in info.path.rglob("*") if f.is_file())
                detail = f"step {STEPS} ({size / 2**20:.1f} MiB) written to {info.path} and loaded back by every rank"
                if env.rank == 0:
                    exported = run.session.output_dir / "export" / "model.safetensors"
                    detail += f"; {_export_tensors(exported)} tensors exported"
                self.rows.append(CheckResult("checkpoint", PASS, detail, {"bytes": size}))
        except Exception as err:
            self._fail("checkpoint", err)
        finally:
            dist.barrier()
            if env.rank == 0 and not self.keep:
                for name in ("checkpoints", "export"):
                    shutil.rmtree(self.folder / name, ignore_errors=True)

    def _finish(self, env: dist.DistEnv, device: torch.device) -> int:
        per_rank = all_gather_objects(self.rows)
        failed = dist.any_rank(any(row.status == FAIL for row in self.rows))
        hosts = len(set(all_gather_objects(hostname())))
        if env.rank == 0:
            rows = merge_ranks(per_rank)
            print(f"\nvideomae doctor: {self.source} ({self.stage}, {env.world_size} ranks on {hosts} node(s), "
                  f"{device.type})")  # fmt: skip
            print(format_table(rows), flush=True)
            report = {
                "ok": not failed, "config": self.source, "stage": self.stage, "world_size": env.world_size,
                "nodes": hosts, "device": device.type, "checks": [dataclasses.asdict(row) for row in rows],
            }  # fmt: skip
            path = Path(self.cfg.output_dir) / "doctor.json"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(report, indent=2, default=str) + "\n")
                print(f"written to {path}", flush=True)
            except OSError as err:  # an unusable output_dir is one of the FAIL rows above
                print(f"{path} not written: {err.strerror or err}", flush=True)
        # Launchers stop every rank once one exits non-zero: none may exit before rank 0 has reported.
        dist.barrier()
        return 1 if failed else 0


def _export_tensors(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return len(list(f.keys()))


def run_doctor(
    cfg: Any, stage: str, source: str, *, rows_per_manifest: int = 16, timeout_s: float = 600.0, keep: bool = False
) -> int:
    """Run every check on this rank (every rank of the job calls this); 0 when nothing failed, else 1.

    Args:
        cfg: the run's resolved config (:func:`load_run_config`).
        stage: ``pretrain`` or ``finetune``.
        source: the config file, for the report.
        rows_per_manifest: rows each rank decodes per manifest.
        timeout_s: time limit of each check.
        keep: keep the doctor run's checkpoint and export in ``<output_dir>/doctor``.
    """
    return Doctor(cfg, stage, source, rows_per_manifest, timeout_s, keep).run()
