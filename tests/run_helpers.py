"""Real runs of ``launch/pretrain.py`` and ``launch/finetune.py`` on the tiny demo set: the demo configs, the
overrides that shrink them to a tiny model, the launchers, and what a run's ``metrics.jsonl`` says.

Not a test module: test modules import from here (tests/ is on sys.path under pytest's default import mode).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PRETRAIN_DEMO_YAML = ROOT / "videomae/recipes/pretrain/demo.yaml"
FINETUNE_DEMO_YAML = ROOT / "videomae/recipes/finetune/demo.yaml"
PRETRAIN_TINY_MODEL = (
    "model.overrides={img_size: 32, patch_size: 8, all_frames: 4, encoder_embed_dim: 32, encoder_depth: 1, "
    "encoder_num_heads: 2, decoder_embed_dim: 32, decoder_num_heads: 2}"
)
FINETUNE_TINY_MODEL = (
    "model.overrides={img_size: 32, patch_size: 8, all_frames: 4, embed_dim: 32, depth: 2, num_heads: 2}"
)


def _launcher(launcher: str, nproc: int) -> list[str]:
    """The command line that starts a script under ``python``, ``torchrun`` or ``deepspeed`` on ``nproc`` CPUs."""
    return {
        "python": [sys.executable],
        "torchrun": [str(BIN / "torchrun"), f"--nproc_per_node={nproc}", f"--master_port={free_port()}"],
        "deepspeed": [str(BIN / "deepspeed"), f"--num_gpus={nproc}", f"--master_port={free_port()}"],
    }[launcher]


def _launcher_env() -> dict[str, str]:
    """This environment without a parent run's rank variables, one thread per process."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def pretrain_overrides(demo: Path, out: Path, *extra: str) -> list[str]:
    """Overrides of the pretraining demo config: the demo set in ``demo``, output in ``out``, a tiny fp32 model."""
    return [
        f"output_dir={out}",
        f"data.manifests=[{demo}/train_unlabeled.csv]",
        f"data.data_root={demo}",
        "data.input_size=32",
        "data.num_frames=4",
        "data.num_sample=2",
        "data.num_workers=0",
        PRETRAIN_TINY_MODEL,
        "model.decoder_depth=1",
        "train.batch_size=2",
        "train.log_every=1",
        "train.picture_every=0",
        "train.warmup_steps=2",
        "train.lr=0.1",
        "precision=fp32",
        *extra,
    ]


def finetune_overrides(demo: Path, out: Path, *extra: str) -> list[str]:
    """Overrides of the fine-tuning demo config: the demo set in ``demo``, output in ``out``, a tiny classifier."""
    return [
        f"output_dir={out}",
        f"data.manifests=[{demo}/train.csv]",
        f"data.val_manifests=[{demo}/val.csv]",
        f"data.data_root={demo}",
        f"data.labels={demo}/labels.txt",
        "data.input_size=32",
        "data.num_frames=4",
        "data.num_workers=0",
        "data.num_sample=2",  # repeated sampling on, whatever the demo recipe uses
        "data.test_num_segment=2",
        FINETUNE_TINY_MODEL,
        "train.batch_size=2",
        "train.log_every=1",
        "train.warmup_steps=2",
        "train.eval_every=0",
        *extra,
    ]


def launch_pretrain(
    launcher: str,
    args: list[str],
    nproc: int = 1,
    script: str = "launch/pretrain.py",
    env: dict | None = None,
    config: Path = PRETRAIN_DEMO_YAML,
    **popen,
) -> subprocess.Popen:
    """Start ``script`` (``launch/pretrain.py``) on ``config`` (the demo config) under ``python``, ``torchrun`` or
    ``deepspeed`` (own session, so a test can signal the whole group), with ``env`` added; stdout and stderr
    together."""
    return subprocess.Popen(
        [*_launcher(launcher, nproc), script, "--config", str(config), *args],
        cwd=ROOT, env={**_launcher_env(), **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, **popen,
    )  # fmt: skip


def kill_run(proc: subprocess.Popen) -> None:
    """``kill -9`` a launched run: its process group and every process under it (``torchrun`` starts its workers
    in sessions of their own, out of the group's reach)."""
    import signal

    import psutil

    below = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGKILL)
    for child in below:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    proc.communicate()


def kill_at_first_checkpoint(proc: subprocess.Popen, out: Path, timeout: float = 300) -> None:
    """``kill -9`` a launched run (its process group) as soon as its first checkpoint in ``out`` is complete."""
    import signal
    import time

    from videomae.engine import checkpointing as ckpt

    deadline = time.time() + timeout
    while ckpt.find_latest(out / "checkpoints") is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def run_pretrain(
    launcher: str, args: list[str], nproc: int = 1, timeout: int = 600, config: Path = PRETRAIN_DEMO_YAML
) -> str:
    """Run ``launch/pretrain.py`` on ``config`` to the end; its output, asserted to have succeeded."""
    proc = launch_pretrain(launcher, args, nproc, config=config)
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, output[-4000:]
    return output


def run_finetune(args: list[str], launcher: str = "python", nproc: int = 1, timeout: int = 600) -> str:
    """Run ``launch/finetune.py`` on the demo config to the end; its output, asserted to have succeeded."""
    command = [*_launcher(launcher, nproc), "launch/finetune.py", "--config", str(FINETUNE_DEMO_YAML), *args]
    proc = subprocess.run(command, cwd=ROOT, env=_launcher_env(), capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


def losses(out: Path) -> dict[int, float]:
    """Loss per step from metrics.jsonl; a resumed run appends, and its later lines win."""
    values = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:  # not the step-0 row of the pictures' figures
            values[record["step"]] = float(record["loss"])
    return values


def records(out: Path) -> dict[int, dict]:
    """metrics.jsonl by step; a resumed run appends, and its later lines win."""
    return {r["step"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}
