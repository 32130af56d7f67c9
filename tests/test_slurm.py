"""SLURM: host-list expansion, the variable mapping in dist.py, and the sbatch script's --dry-run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from videomae.engine.dist import DistEnv, env_from_slurm, expand_nodelist, resolve_env

ROOT = Path(__file__).resolve().parents[1]

# What srun sets for task 11 of a 2-node x 8-task job (node 1, local task 3).
SLURM_TASK = {
    "SLURM_PROCID": "11",
    "SLURM_NTASKS": "16",
    "SLURM_LOCALID": "3",
    "SLURM_NODEID": "1",
    "SLURM_JOB_NODELIST": "gpu[007-008]",
    "SLURM_TASKS_PER_NODE": "8(x2)",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_JOB_ID": "4242",
}


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("node1", ["node1"]),
        ("gpu[007-009]", ["gpu007", "gpu008", "gpu009"]),
        ("gpu[1,3-4],cpu-a[09-10]", ["gpu1", "gpu3", "gpu4", "cpu-a09", "cpu-a10"]),
        ("a[1],b", ["a1", "b"]),
    ],
)
def test_expand_nodelist(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


def test_expand_nodelist_refuses_garbage():
    with pytest.raises(ValueError, match="bad range"):
        expand_nodelist("gpu[x-3]")


def test_slurm_variables_map_to_ranks_and_rendezvous():
    env = env_from_slurm(SLURM_TASK)
    assert env == DistEnv(
        rank=11, world_size=16, local_rank=3, local_world_size=8, node_rank=1, num_nodes=2,
        master_addr="gpu007", master_port=20000 + 4242,
    )  # fmt: skip
    assert env.as_environ()["MASTER_ADDR"] == "gpu007"
    # An explicit MASTER_ADDR / MASTER_PORT (set by the job script) wins over the derived ones.
    env = env_from_slurm({**SLURM_TASK, "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "6000"})
    assert (env.master_addr, env.master_port) == ("10.0.0.5", 6000)


def test_missing_slurm_variable_is_named():
    task = dict(SLURM_TASK)
    del task["SLURM_LOCALID"]
    with pytest.raises(KeyError, match="SLURM_LOCALID"):
        env_from_slurm(task)


def test_launcher_variables_win_over_slurm_and_single_process_default():
    torchrun = {**SLURM_TASK, "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "7"}
    env = resolve_env(torchrun)
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port) == (1, 2, 1, "h", 7)
    assert resolve_env(SLURM_TASK).rank == 11
    alone = resolve_env({})
    assert (alone.rank, alone.world_size) == (0, 1) and alone.master_port > 0
    # `salloc` shells have SLURM variables for a single task: that is one process, not a broken job.
    assert resolve_env({**SLURM_TASK, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}).world_size == 1


def test_sbatch_dry_run_prints_the_mapped_environment(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "MASTER_"))}
    env.update(SLURM_TASK, PYTHON=sys.executable)
    manifest = tmp_path / "h.csv"
    manifest.write_text("path\na.mp4\n")
    out = subprocess.run(
        ["bash", "launch/slurm/pretrain.sbatch", "--dry-run", "train.batch_size=16", f"data.manifests=[{manifest}]"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line and " " not in line)
    assert lines["RANK"] == "11" and lines["WORLD_SIZE"] == "16" and lines["LOCAL_RANK"] == "3"
    assert lines["NODE_RANK"] == "1" and lines["NUM_NODES"] == "2"
    assert lines["MASTER_ADDR"] == "gpu007" and lines["MASTER_PORT"] == "24242"
    # vit_b_hybrid: 16 videos x 16 ranks (lr_scale_by=videos) = 256 -> the base lr 1e-3 itself.
    assert lines["EFFECTIVE_BATCH"] == "256" and float(lines["PEAK_LR"]) == pytest.approx(1e-3)
    assert f"- path: {manifest}" in out.stdout


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_sbatch_requests_the_preemption_signal_and_requeues(stage):
    text = (ROOT / f"launch/slurm/{stage}.sbatch").read_text()
    assert "#SBATCH --signal=B:USR1@120" in text
    assert "source launch/slurm/common.sh" in text and f"run_stage launch/{stage}.py" in text
    shared = (ROOT / "launch/slurm/common.sh").read_text()
    assert "trap on_preempt USR1" in shared and "scontrol requeue" in shared
    assert "CHECKPOINT_AND_STOP" in shared
