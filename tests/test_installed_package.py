"""The package trains when installed: the wheel, installed into a fresh virtual environment outside the repository
(its dependencies borrowed from this environment, nothing downloaded), writes the demo data and runs the packaged
demo pretraining recipe by name, from a folder that holds nothing of the repository."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from run_helpers import pretrain_overrides
from safetensors.torch import load_file

from videomae.engine.checkpointing import find_latest

ROOT = Path(__file__).resolve().parents[1]
STEPS = 3


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> str:
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{command}\n{output[-4000:]}"
    return output


def _build_wheel(tmp_path: Path, env: dict[str, str]) -> Path:
    """``pip wheel`` of a copy of the project's packaging files and package (the checkout stays clean); offline with
    this environment's setuptools, else (a venv without it) pip fetches the build backend pyproject.toml names."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "videomae", src / "videomae", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    offline = ["--no-index", "--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "wheel", *offline, "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src)], tmp_path, env)
    (wheel,) = (tmp_path / "dist").glob("videomae-*.whl")
    return wheel


def _fresh_venv(tmp_path: Path, wheel: Path, env: dict[str, str]) -> Path:
    """A venv holding only pip and the wheel; a .pth line adds this environment's site-packages (torch,
    deepspeed...) after its own, as a plain path: the .pth files there (our editable install) are not run."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env)
                .strip())  # fmt: skip
    borrowed = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "borrowed_dependencies.pth").write_text("".join(f"{path}\n" for path in borrowed))
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "install", "--no-index", "--no-deps", "-q", str(wheel)], tmp_path, env)
    return venv


@pytest.mark.slow
def test_the_installed_wheel_trains_the_packaged_demo_recipe_outside_the_repository(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "PYTHONPATH",
            "RANK",
            "WORLD_SIZE",
            "LOCAL_RANK",
            "MASTER_PORT",
            "MASTER_ADDR",
            "PIP_REQUIRE_VIRTUALENV",
        )
    }
    env.update(OMP_NUM_THREADS="1", PYTHONNOUSERSITE="1")  # fmt: skip
    venv = _fresh_venv(tmp_path, _build_wheel(tmp_path, env), env)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    work = tmp_path / "work"
    work.mkdir()
    try:
        probe = ("import json, sys, pathlib, videomae, videomae.recipes as r; print(json.dumps([videomae.__file__, "
                 "str(r.RECIPES), [str(pathlib.Path(p).resolve()) for p in sys.path]]))")  # fmt: skip
        package, recipes, path = json.loads(_run(["python", "-c", probe], work, env))
        assert venv in Path(package).parents and ROOT not in Path(package).parents, package
        assert (Path(recipes) / "pretrain/demo.yaml").is_file() and venv in Path(recipes).parents
        # No other videomae is reachable: only the venv's site-packages holds one (no checkout on sys.path).
        holders = [p for p in path if (Path(p) / "videomae" / "__init__.py").is_file()]
        assert holders == [str(Path(package).parents[1])], path

        # The console script of the venv writes the demo set where the demo recipe looks for it (demo_data/).
        _run(["videomae", "demo-data", "demo_data", "--num-train", "8", "--num-val", "2", "--frames", "16",
              "--workers", "1", "--quiet"], work, env)  # fmt: skip
        out = work / "runs" / "demo"
        steps = (f"train.max_steps={STEPS}", f"train.save_every={STEPS}")
        overrides = pretrain_overrides(Path("demo_data"), Path("runs/demo"), *steps)
        _run(["python", "-m", "videomae", "pretrain", "--config", "demo", *overrides], work, env)

        latest = find_latest(out / "checkpoints")
        assert latest is not None and latest.step == STEPS
        steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert steps[-1] == STEPS
        weights = load_file(out / "export" / "model.safetensors")
        assert weights["encoder.patch_embed.proj.weight"].shape[0] == 32  # the tiny override, not the recipe's 96
        assert "decoder.head.weight" in weights
        # The run used the packaged recipe: its resolved config holds the demo's mask and optimiser settings.
        assert "decoder_type: run_cell" in (out / "config.yaml").read_text()
    finally:
        shutil.rmtree(venv, ignore_errors=True)
