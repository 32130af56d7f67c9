"""bench/gpu_check.sh stays runnable in one go: its smoke mode runs every part at toy sizes on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("model_step_vit_b", "model_step_vit_g", "collectives", "engine_vit_b", "doctor")


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_part_and_writes_its_report(tmp_path):
    env = {**os.environ, "GPU_CHECK_SMOKE": "1", "OUT": str(tmp_path), "PYTHON": sys.executable}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    result = subprocess.run(
        ["bash", str(ROOT / "bench/gpu_check.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    report = (tmp_path / "gpu_check.md").read_text()
    assert result.returncode == 0, report + result.stderr[-3000:]
    assert "FAILED" not in report
    for part in PARTS:
        assert f"### {part} (" in report
    assert report.count("| PASS |") >= 8  # the collectives table
    assert "| ours-dual |" in report and "| transformers |" in report
    steps = [line for line in report.splitlines() if line.startswith("| 6 |")]  # the engine's last logged step
    assert len(steps) == 1
    assert "0 FAIL" in report  # the doctor's summary line
