"""Packaged recipes: ``--config NAME_OR_PATH`` resolved by one rule (file, legacy ``launch/configs`` path, packaged
name, refusals listing the names), and ``videomae pretrain | finetune | stages`` sharing the launch scripts'
arguments."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from videomae.cli import main as cli_main
from videomae.config import ConfigError, load_config, load_finetune_config
from videomae.data.demo import DemoConfig, write_demo_dataset
from videomae.launching import launcher
from videomae.recipes import KINDS, RECIPES, names, resolve

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """A working directory outside the repository (no launch/configs/ here)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_names_are_the_packaged_files():
    for kind in KINDS:
        assert names(kind) == sorted(p.name.removesuffix(".yaml") for p in (RECIPES / kind).iterdir())
    assert {"demo", "vit_g_hybrid"} <= set(names("pretrain")) and {"demo", "vit_g_hybrid"} == set(names("stages"))
    assert {"demo", "vit_b_k400", "vit_g_k710_to_k400"} <= set(names("finetune"))


@pytest.mark.parametrize(
    ("config", "kinds", "want"),
    [
        ("demo", ["pretrain"], "pretrain/demo.yaml"),
        ("demo.yaml", ["finetune"], "finetune/demo.yaml"),
        ("vit_g_hybrid", ["stages"], "stages/vit_g_hybrid.yaml"),
        ("vit_b_k400", ["pretrain", "finetune"], "finetune/vit_b_k400.yaml"),  # only one kind has it
        ("pretrain/demo", ["pretrain", "finetune"], "pretrain/demo.yaml"),  # the kind settles a clash
        ("finetune/demo.yaml", ["pretrain", "finetune"], "finetune/demo.yaml"),
        ("launch/configs/pretrain/vit_b_hybrid.yaml", ["pretrain"], "pretrain/vit_b_hybrid.yaml"),  # before the move
        ("/old/checkout/launch/configs/finetune/demo.yaml", ["finetune"], "finetune/demo.yaml"),
    ],
)
def test_a_name_is_the_packaged_recipe_from_any_folder(elsewhere, config, kinds, want):
    assert resolve(config, kinds) == RECIPES / want


def test_a_file_wins_over_a_packaged_name(elsewhere):
    (elsewhere / "demo").write_text("output_dir: mine\n")
    (elsewhere / "launch/configs/pretrain").mkdir(parents=True)
    (elsewhere / "launch/configs/pretrain/demo.yaml").write_text("output_dir: mine\n")
    assert resolve("demo", ["pretrain"]) == Path("demo")
    assert resolve("launch/configs/pretrain/demo.yaml", ["pretrain"]) == Path("launch/configs/pretrain/demo.yaml")
    assert load_config(resolve("demo", ["pretrain"]), ["train.max_steps=1"]).output_dir == "mine"


def test_an_ambiguous_name_is_refused_with_the_choices(elsewhere):
    with pytest.raises(ConfigError) as err:
        resolve("demo", ["pretrain", "finetune"])
    assert str(err.value) == "--config: demo names several packaged recipes: write pretrain/demo or finetune/demo"


def test_an_unknown_name_is_refused_listing_the_names(elsewhere):
    with pytest.raises(ConfigError) as err:
        resolve("dmeo", ["pretrain"])
    message = str(err.value)
    assert message.startswith(f"--config: dmeo is neither a file (relative to {elsewhere}) nor a packaged recipe")
    assert message.endswith(f"packaged recipes (pretrain: {', '.join(names('pretrain'))})")
    with pytest.raises(ConfigError, match=r"vit_b_k400 is neither .* \(finetune/vit_b_k400: another command's\)"):
        resolve("vit_b_k400", ["pretrain"])
    with pytest.raises(ConfigError, match=r"^config: nope is neither a file"):  # a stages file's key
        resolve("nope", ["finetune"], key="config")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("finetune/demo", "--config: finetune/demo is a finetune recipe; this command takes pretrain: demo, "),
        ("runs/my.yaml", "--config: runs/my.yaml not found (relative to "),  # a path, not a name
        ("a/b/c.yaml", "--config: a/b/c.yaml not found (relative to "),
        ("/abs/demo.yaml", "--config: /abs/demo.yaml not found (relative to "),
    ],
)
def test_other_kinds_and_missing_paths_are_refused(elsewhere, config, message):
    with pytest.raises(ConfigError) as err:
        resolve(config, ["pretrain"])
    assert str(err.value).startswith(message)
    assert "vit_s_hybrid" in str(err.value)  # the names to choose from


def test_stages_recipes_name_their_configs():
    """The packaged stages files name packaged recipes (no repository path), so they run from any folder."""
    for name in names("stages"):
        text = (RECIPES / "stages" / f"{name}.yaml").read_text()
        assert "launch/configs" not in text
        assert "    config: " in text and "    config: launch" not in text


# ---------------------------------------------------------------------------------------------------- commands


def test_help_lists_the_training_commands():
    env = {k: v for k, v in os.environ.items()}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-m", "videomae", "--help"], capture_output=True, text=True, env=env,
                         cwd="/", timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    listed = [m.group(1) for m in re.finditer(r"^    (\S+)", out.stdout, re.MULTILINE)]  # wrapped lines indent more
    assert listed[:3] == ["pretrain", "finetune", "stages"] and "demo-data" in listed


def _launch_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"launch_{name}", ROOT / "launch" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
def test_the_command_and_the_launch_script_read_the_same_arguments(elsewhere, kind, capsys):
    args = ["--config", "demo", "--print-output-dir", "output_dir=runs/x y", "train.max_steps=3"]
    assert cli_main([kind, *args]) == 0
    assert _launch_script(kind).main(args) == 0
    assert capsys.readouterr().out.splitlines() == ["runs/x y", "runs/x y"]
    # Both parsers come from one declaration: the same options, in the same order.
    launch = {"pretrain": launcher.PRETRAIN, "finetune": launcher.FINETUNE}[kind]
    script = launcher.parse_args(["--config", "demo"], "", launch)
    from videomae.cli import build_parser

    command = build_parser().parse_args([kind, "--config", "demo"])
    assert set(vars(script)) <= set(vars(command))
    assert {k: getattr(command, k) for k in vars(script) if k != "local_rank"} == {
        k: v for k, v in vars(script).items() if k != "local_rank"
    }


def test_the_arguments_deepspeed_module_passes_parse(elsewhere, capsys):
    """``deepspeed --module videomae finetune ...`` runs ``python -u -m videomae --local_rank=N finetune ...``."""
    argv = ["--local_rank=1", "finetune", "--config", "demo", "--print-output-dir", "output_dir=o", "--eval-only"]
    assert cli_main(argv) == 0 and capsys.readouterr().out == "o\n"


def test_the_command_refuses_an_unknown_recipe_naming_the_command(elsewhere, capsys):
    assert cli_main(["finetune", "--config", "nope", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("videomae finetune: config error: --config: nope is neither a file")
    assert ", ".join(names("finetune")) in err


def test_stages_by_name_run_each_stage_as_the_module(elsewhere, capsys):
    # The dry run checks that the manifests the demo recipes name are there: the real (small) demo set.
    write_demo_dataset(elsewhere / "demo_data", DemoConfig(num_train=6, num_val=6, frames=8), workers=1)
    assert cli_main(["stages", "--config", "demo", "--dry-run", "--launcher", "torchrun", "--nproc", "2"]) == 0
    commands = [shlex.split(line) for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert [c[1:6] for c in commands] == [
        ["--nproc_per_node=2", "-m", "videomae", kind, "--config"] for kind in ("pretrain", "finetune", "finetune")
    ]
    # Each stage's config name resolves in the child as in the parent: to the packaged recipe of its kind.
    for command in commands:
        kind, config = command[4], command[6]
        load = {"pretrain": load_config, "finetune": load_finetune_config}[kind]
        assert load(resolve(config, [kind]), command[7:]).output_dir == command[7].partition("=")[2]
    assert _launch_script("stages").main(["--stages", "nope"]) == 2
    assert "stages.py: config error: --config: nope is neither" in capsys.readouterr().err
