"""launch/finetune.py and launch/slurm/finetune.sbatch: config errors before anything starts, dry runs."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "videomae/recipes/finetune/demo.yaml"


@pytest.fixture(scope="module")
def finetune():
    spec = importlib.util.spec_from_file_location("launch_finetune", ROOT / "launch/finetune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lines(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and " " not in line)


def test_bad_override_is_refused_before_anything_starts(finetune, capsys, tmp_path):
    out = tmp_path / "never"
    code = finetune.main(["--config", str(DEMO), f"output_dir={out}", "train.mixup=-1", "--eval-only"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("finetune.py: config error: train.mixup: got -1") and "a number >= 0" in err
    assert not out.exists()


def _manifest_overrides(folder: Path) -> list[str]:
    """Training and validation manifests that exist (a dry run refuses missing ones)."""
    (folder / "m.csv").write_text("path,label\na.mp4,0\n")
    return [f"data.manifests=[{folder / 'm.csv'}]", f"data.val_manifests=[{folder / 'm.csv'}]"]


def test_dry_run_shows_the_scaled_lr(finetune, capsys, monkeypatch, tmp_path):
    for name in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    args = ["--local_rank=0", "--config", str(DEMO), "--dry-run", "train.batch_size=4", *_manifest_overrides(tmp_path)]
    assert finetune.main(args) == 0
    lines = _lines(capsys.readouterr().out)
    # demo.yaml: 4 videos x 1 process x 1 clip = 4 clips -> 1.6e-2 * 4 / 256
    assert lines["WORLD_SIZE"] == "1" and lines["EFFECTIVE_BATCH"] == "4"
    assert float(lines["PEAK_LR"]) == pytest.approx(1.6e-2 * 4 / 256)


def test_sbatch_dry_run_maps_slurm_ranks_and_uses_the_release_lr(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "MASTER_"))}
    env.update(SLURM_PROCID="5", SLURM_NTASKS="32", SLURM_LOCALID="5", SLURM_NODEID="0",
               SLURM_JOB_NODELIST="gpu[01-04]", SLURM_TASKS_PER_NODE="8(x4)", SLURM_JOB_NUM_NODES="4",
               SLURM_JOB_ID="77", CONFIG="vit_g_k710", PYTHON=sys.executable)  # fmt: skip
    out = subprocess.run(["bash", "launch/slurm/finetune.sbatch", "--dry-run", "data.data_root=/k",
                          *_manifest_overrides(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = _lines(out.stdout)
    assert (lines["RANK"], lines["WORLD_SIZE"], lines["MASTER_ADDR"], lines["NUM_NODES"]) == ("5", "32", "gpu01", "4")
    # vit_g_k710: 3 videos x 32 GPUs (lr_scale_by=videos) -> 1e-3 * 96 / 256, the release's script.
    assert lines["EFFECTIVE_BATCH"] == "96" and float(lines["PEAK_LR"]) == pytest.approx(3.75e-4)
    assert "data_root: /k" in out.stdout and "layer_decay: 0.9" in out.stdout
