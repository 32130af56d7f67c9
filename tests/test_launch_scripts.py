"""The scripts under launch/: executable, the torch build install.sh picks, the job size a SLURM dry run shows off the
cluster, the demo's closing summary."""

from __future__ import annotations

import http.server
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import free_port

from videomae.launching.summary import format_row, summarize

ROOT = Path(__file__).resolve().parents[1]
SCRIPT_SUFFIXES = (".sh", ".sbatch", ".py")


def launch_scripts() -> list[Path]:
    """Every file under launch/ that is a script by its name or its first line."""
    found = []
    for path in sorted((ROOT / "launch").rglob("*")):
        if not path.is_file():
            continue
        if path.suffix in SCRIPT_SUFFIXES or path.read_bytes().startswith(b"#!"):
            found.append(path)
    return found


def test_every_launch_script_is_executable_with_a_shebang():
    scripts = launch_scripts()
    assert {p.name for p in scripts} >= {"demo.sh", "install.sh", "pretrain.py", "finetune.sbatch", "common.sh"}
    not_executable = [str(p.relative_to(ROOT)) for p in scripts if not p.stat().st_mode & stat.S_IXUSR]
    no_shebang = [str(p.relative_to(ROOT)) for p in scripts if not p.read_bytes().startswith(b"#!")]
    assert not_executable == [], "chmod +x (and git add) these"
    assert no_shebang == []


# ---------------------------------------------------------------------------------------------------- install.sh


def _install(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "launch/install.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


@pytest.fixture
def no_gpu_env(tmp_path) -> dict[str, str]:
    """An environment whose PATH has no nvidia-smi (bin/ holds what a test adds) and no index override."""
    (tmp_path / "bin").mkdir()
    path = [str(tmp_path / "bin")] + [p for p in os.environ["PATH"].split(":") if not (Path(p) / "nvidia-smi").exists()]
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_INDEX_URL", "VIDEOMAE_CPU_INDEX")}
    return {**env, "PATH": ":".join(path)}


@pytest.fixture
def index_server():
    """A PEP 503 index on loopback answering ``/whl/cpu/torch/``."""

    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the stdlib's name)
            ok = self.path.rstrip("/") == "/whl/cpu/torch"
            self.send_response(200 if ok else 404)
            self.end_headers()
            self.wfile.write(b"<html><body>torch</body></html>" if ok else b"")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/whl/cpu"
    server.shutdown()


def test_install_takes_the_cpu_index_without_a_gpu_when_it_answers(no_gpu_env, index_server, tmp_path):
    out = _install({**no_gpu_env, "VIDEOMAE_CPU_INDEX": index_server}, "--print-choice")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"torch: no GPU (no nvidia-smi): torch's CPU build from {index_server}",
                                       f"pip index: {index_server}"]  # fmt: skip
    # The pip line it runs: the index added for torch, the rest of the arguments as given.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/python").write_text("#!/bin/sh\n")
    (venv / "bin/pip").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/pip_args\n')
    for name in ("python", "pip"):
        (venv / "bin" / name).chmod(0o755)
    out = _install({**no_gpu_env, "VIDEOMAE_CPU_INDEX": index_server}, str(venv), "-e", ".[test]")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "pip_args").read_text().split() == ["install", "-q", "--extra-index-url", index_server, "-e",
                                                           ".[test]"]  # fmt: skip


def test_install_falls_back_to_pypi_when_the_cpu_index_is_unreachable(no_gpu_env):
    closed = f"http://127.0.0.1:{free_port()}/whl/cpu"
    out = _install({**no_gpu_env, "VIDEOMAE_CPU_INDEX": closed}, "--print-choice")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith(f"torch: no GPU, but {closed} does not answer: PyPI's torch")
    assert out.stdout.splitlines()[1] == "pip index: PyPI only"


def test_install_keeps_pypi_torch_where_a_gpu_is_listed_and_obeys_the_override(no_gpu_env, index_server, tmp_path):
    smi = tmp_path / "bin/nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3'\n")
    smi.chmod(0o755)
    out = _install({**no_gpu_env, "VIDEOMAE_CPU_INDEX": index_server}, "--print-choice")
    assert out.stdout.splitlines() == [
        "torch: nvidia-smi lists a GPU: PyPI's torch (CUDA build)",
        "pip index: PyPI only",
    ]
    out = _install({**no_gpu_env, "TORCH_INDEX_URL": "https://mirror.example/whl/cu128"}, "--print-choice")
    assert out.stdout.splitlines()[1] == "pip index: https://mirror.example/whl/cu128"


def test_demo_installs_through_install_sh():
    text = (ROOT / "launch/demo.sh").read_text()
    assert "python3 -m venv .venv && bash launch/install.sh .venv -e ." in text


# ---------------------------------------------------------------------------------------------------- SLURM dry run


def _sbatch_dry_run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "MASTER_"))}
    env.update(PYTHON=sys.executable, PYTHONPATH=str(ROOT))
    return subprocess.run(["bash", f"launch/slurm/{script}", "--dry-run", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def _values(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and " " not in line)


def test_sbatch_dry_run_off_the_cluster_shows_the_jobs_size(tmp_path):
    manifest = tmp_path / "hybrid.csv"
    manifest.write_text("path\na.mp4\n")
    # pretrain.sbatch asks for 8 nodes x 8 tasks; vit_b_hybrid scales lr by videos: 4 x 64 = 256 -> the base lr.
    out = _sbatch_dry_run("pretrain.sbatch", f"data.manifests=[{manifest}]", "train.batch_size=4")
    assert out.returncode == 0, out.stderr
    values = _values(out.stdout)
    assert (values["WORLD_SIZE"], values["LOCAL_WORLD_SIZE"], values["NUM_NODES"], values["RANK"]) == (
        "64", "8", "8", "0")  # fmt: skip
    assert values["EFFECTIVE_BATCH"] == "256" and float(values["PEAK_LR"]) == pytest.approx(1e-3)
    assert "8 node(s) x 8 task(s) from launch/slurm/pretrain.sbatch's #SBATCH lines" in out.stdout
    # sbatch's own size options after --dry-run win; one task per GPU when only --gpus-per-node is given.
    out = _sbatch_dry_run("pretrain.sbatch", "--nodes", "2", "--gpus-per-node=4", f"data.manifests=[{manifest}]")
    assert out.returncode == 0, out.stderr
    values = _values(out.stdout)
    assert (values["WORLD_SIZE"], values["LOCAL_WORLD_SIZE"], values["NUM_NODES"]) == ("8", "4", "2")


def test_sbatch_dry_run_refuses_empty_or_missing_manifests(tmp_path):
    out = _sbatch_dry_run("pretrain.sbatch")  # vit_b_hybrid.yaml lists none: set on the command line
    assert out.returncode == 2 and out.stdout.count("=") == 0
    assert "data.manifests: empty" in out.stderr and "fix: list at least one manifest" in out.stderr
    missing = tmp_path / "k710_train.csv"
    out = _sbatch_dry_run("finetune.sbatch", f"data.manifests=[{missing}]", f"data.val_manifests=[{missing}]")
    assert out.returncode == 2
    assert f"data.manifests[0]: {missing} does not exist" in out.stderr
    assert f"data.val_manifests[0]: {missing} does not exist" in out.stderr


# ---------------------------------------------------------------------------------------------------- demo summary


def test_demo_summary_keeps_whole_numbers(tmp_path):
    rows = [
        {"step": 0, "recon_mse": 1.309309, "recon_baseline_mse": 0.992108},  # the untrained model's pictures
        {"step": 1, "loss": 1.174834132194519, "lr": 0.0, "wd": 0.05, "grad_norm": 0.4809276759624481},
        {"step": 300, "loss": 0.4321, "lr": 1.0046892717e-05, "wd": 0.05, "bad_samples_total": 2},
        {"step": 300, "recon_mse": 0.817412, "recon_baseline_mse": 0.992108},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 30')
    (tmp_path / "pictures").mkdir()
    for step in (100, 300):
        (tmp_path / f"pictures/step_{step:06d}.png").write_bytes(b"")
    text = summarize(tmp_path)
    assert "first logged: step 1, loss 1.175, lr 0, wd 0.05, grad_norm 0.4809" in text
    assert "last logged:  step 300, loss 0.4321, lr 1.005e-05, wd 0.05, bad_samples_total 2" in text
    assert "reconstruction error (hidden patches): step 0 1.309 -> step 300 0.8174; flat-patch baseline 0.9921" in text
    assert f"reconstructions: {tmp_path}/pictures/step_000100.png  ...  {tmp_path}/pictures/step_000300.png" in text
    assert format_row({"lr": 1e-5, "wd": 0.05, "loss": 12345.678}) == "loss 1.235e+04, lr 1e-05, wd 0.05"
    demo = (ROOT / "launch/demo.sh").read_text()
    assert 'python -m videomae.launching.summary "$out"' in demo and "cut -c" not in demo
