"""launch/pretrain.py: argument handling, config errors before anything starts, dry run, the demo script."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "videomae/recipes/pretrain/demo.yaml"


@pytest.fixture(scope="module")
def pretrain():
    spec = importlib.util.spec_from_file_location("launch_pretrain", ROOT / "launch/pretrain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bad_override_is_refused_before_anything_starts(pretrain, capsys, tmp_path):
    out = tmp_path / "never"
    code = pretrain.main(["--config", str(DEMO), f"output_dir={out}", "train.max_step=3"])
    assert code == 2
    err = capsys.readouterr().err
    assert "train.max_step: unknown key" in err and "max_steps" in err
    assert not out.exists()


def test_deepspeed_local_rank_argument_is_accepted(pretrain, capsys):
    assert pretrain.main(["--local_rank=1", "--config", str(DEMO), "output_dir=/x/y", "--print-output-dir"]) == 0
    assert capsys.readouterr().out.strip() == "/x/y"


def test_dry_run_single_process(pretrain, capsys, monkeypatch, tmp_path):
    for name in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "m.csv").write_text("path\na.mp4\n")
    args = ["--config", str(DEMO), "--dry-run", "train.batch_size=8", f"data.manifests=[{tmp_path / 'm.csv'}]"]
    assert pretrain.main(args) == 0
    out = capsys.readouterr().out
    lines = dict(line.split("=", 1) for line in out.splitlines() if "=" in line and " " not in line)
    assert lines["RANK"] == "0" and lines["WORLD_SIZE"] == "1"
    # demo.yaml: 8 videos x 1 process x 1 clip = 8 -> 1.2e-2 * 8 / 256
    assert lines["EFFECTIVE_BATCH"] == "8" and float(lines["PEAK_LR"]) == pytest.approx(1.2e-2 * 8 / 256)


def test_demo_script_is_valid_bash_and_runs_the_documented_command():
    subprocess.run(["bash", "-n", str(ROOT / "launch/demo.sh")], check=True)
    text = (ROOT / "launch/demo.sh").read_text()
    assert "videomae demo-data demo_data" in text
    assert 'deepspeed --num_gpus 2 --master_port "$port" launch/pretrain.py --config demo' in text
    # the port is one the script asks the OS for, not deepspeed's default 29500 that another job may hold
    assert re.search(r"^port=\$\(python -c .*bind\(\('', 0\)\)", text, re.M)
