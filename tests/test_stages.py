"""Stages files (videomae.stages, launch/stages.py): whole-file validation naming stage and key, the exact chained
commands, skip-if-done / resume / afresh decisions, the runner's order, failures and stages.json, and a real
pretrain -> post-pretrain -> fine-tune chain whose every stage starts from the previous export."""

from __future__ import annotations

import importlib.util
import io
import json
import shlex
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import write_fake_demo_data
from safetensors.torch import load_file

from videomae.config import ConfigError, load_config, load_finetune_config, save_config
from videomae.recipes import RECIPES
from videomae.stages import StagesError, decide, format_override, load_recipe, plan, run_recipe
from videomae.stages.plan import DONE

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
PRE, FT = str(ROOT / "videomae/recipes/pretrain/demo.yaml"), str(ROOT / "videomae/recipes/finetune/demo.yaml")
LOADERS = {"pretrain": load_config, "finetune": load_finetune_config}


def write_stages(folder: Path, stages: list[dict], **top) -> Path:
    path = folder / "stages.yaml"
    data = {"output_root": str(folder / "runs"), "launcher": "python", **top, "stages": stages}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def chain(ft_overrides: tuple[str, ...] = (), pre_overrides: tuple[str, ...] = ()) -> list[dict]:
    """pre (pretrain demo) -> post (finetune demo) -> ft (finetune demo), with extra overrides."""
    return [
        {"name": "pre", "kind": "pretrain", "config": PRE, "overrides": list(pre_overrides)},
        {"name": "post", "kind": "finetune", "config": FT, "init_from": "pre"},
        {"name": "ft", "kind": "finetune", "config": FT, "init_from": "post", "overrides": list(ft_overrides)},
    ]


# ---------------------------------------------------------------------------------------------------- validation


def _with(index: int, **changes) -> list[dict]:
    stages = chain()
    stages[index].update(changes)
    return stages


BAD = {
    "unknown kind": (_with(1, kind="finetuning"), "stage 'post' (stages[1]): kind: got 'finetuning', allowed values"),
    "unknown key": (_with(2, init="x"), "stage 'ft' (stages[2]): init: unknown key; allowed keys: name, kind"),
    "forward init_from": (_with(0, init_from="ft"), "stage 'pre' (stages[0]): init_from: 'ft' is a later stage"),
    "unknown init_from": (_with(2, init_from="nope"), "stage 'ft' (stages[2]): init_from: got 'nope', allowed: an"),
    "best of a pretrain": (_with(1, init_from="pre/best"), "stage 'post' (stages[1]): init_from: got 'pre/best'"),
    "bad override": (_with(1, overrides=["train.mixup=-1"]), "stage 'post' (stages[1]): train.mixup: got -1"),
    "misspelt override": (_with(2, overrides={"train.lr_dcy": 0.5}), "stage 'ft' (stages[2]): train.lr_dcy: unknown"),
    "init and init_from": (_with(2, overrides=["init=a.pt"]), "stage 'ft' (stages[2]): overrides: init: set by"),
    "missing config": (_with(1, config="/nowhere/ft.yaml"), "stage 'post' (stages[1]): config: /nowhere/ft.yaml not"),
    "duplicate name": (_with(2, name="pre"), "stage 'pre' (stages[2]): name: got 'pre', allowed: a name no other"),
    "shared folder": (_with(2, output_dir="RUNS/post"), "stage 'ft' (stages[2]): output_dir: RUNS/post overlaps"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_stages_file_is_refused_naming_the_stage_and_key(tmp_path, case):
    stages, expected = BAD[case]
    for stage in stages:
        if "output_dir" in stage:
            stage["output_dir"] = stage["output_dir"].replace("RUNS", str(tmp_path / "runs"))
    expected = expected.replace("RUNS", str(tmp_path / "runs"))
    path = write_stages(tmp_path, stages)
    with pytest.raises(StagesError) as err:
        load_recipe(path)
    assert str(err.value).startswith(f"{path}: {expected}"), str(err.value)


def test_encoders_that_would_not_load_into_each_other_are_refused(tmp_path):
    # The classifier's sizes spelt with the pretraining names are not its arguments; the right names with other
    # values build a different encoder, which meta-device shapes reveal before anything runs.
    typo = "model.overrides={img_size: 64, patch_size: 8, all_frames: 8, encoder_embed_dim: 96}"
    with pytest.raises(StagesError, match=r"stage 'post' \(stages\[1\]\): model.overrides: VisionTransformer does not "
                       r"take \['encoder_embed_dim'\]"):  # fmt: skip
        load_recipe(write_stages(tmp_path, _with(1, overrides=[typo])))
    shallow = "model.overrides={img_size: 64, patch_size: 8, all_frames: 8, embed_dim: 96, depth: 2, num_heads: 3}"
    with pytest.raises(StagesError) as err:
        load_recipe(write_stages(tmp_path, _with(1, overrides=[shallow])))
    message = str(err.value)
    assert "stage 'post' (stages[1]): model.overrides: the encoder does not match the one of stage 'pre'" in message
    assert "blocks.2.* only in the weights; blocks.3.* only in the weights" in message
    wide = "model.overrides={img_size: 64, patch_size: 8, all_frames: 8, embed_dim: 64, depth: 4, num_heads: 2}"
    with pytest.raises(StagesError, match=r"patch_embed.proj.weight: weights \(96, 3, 2, 8, 8\), model \(64, 3, 2, 8"):
        load_recipe(write_stages(tmp_path, _with(1, overrides=[wide])))
    # Another input size is fine (the position table is resampled when the weights load).
    size = "model.overrides={img_size: 32, patch_size: 8, all_frames: 8, embed_dim: 96, depth: 4, num_heads: 3}"
    load_recipe(write_stages(tmp_path, _with(2, overrides=[size, "data.input_size=32"])))


def test_mapping_overrides_resolve_like_key_value_strings(tmp_path):
    values = {"train.lr": 1e-3, "data.manifests": ["a b.csv", "c.csv"], "train.eval_every": 0,
              "model.overrides": {"img_size": 64, "patch_size": 8, "all_frames": 8, "embed_dim": 96, "depth": 4,
                                  "num_heads": 3, "qkv_bias": True}, "data.labels": "007"}  # fmt: skip
    post = load_recipe(write_stages(tmp_path, _with(1, overrides=values))).stage("post")
    as_map = post.cfg
    strings = [format_override(k, v) for k, v in values.items()]
    assert strings[0] == "train.lr=0.001" and strings[-1] == "data.labels='007'"
    assert post.overrides[2:] == strings
    assert load_finetune_config(FT, [*post.overrides[:2], *strings]) == as_map
    assert as_map.train.lr == 1e-3 and as_map.data.labels == "007" and as_map.data.manifests[0].path == "a b.csv"


@pytest.mark.parametrize("name", ["demo.yaml", "vit_g_hybrid.yaml"])
def test_shipped_stage_files_chain_their_exports(name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # packaged recipes name their configs, from any folder
    recipe = load_recipe(RECIPES / "stages" / name)
    kinds = [s.kind for s in recipe.stages]
    assert kinds == ["pretrain", "finetune", "finetune"]
    for before, stage in zip(recipe.stages, recipe.stages[1:]):
        assert stage.init == f"{before.output_dir}/export/model.safetensors" == stage.cfg.init
        assert stage.output_dir == f"{recipe.output_root}/{stage.name}" == stage.cfg.output_dir
    if name == "demo.yaml":
        post = recipe.stages[1].cfg
        assert [m.path for m in post.data.manifests] == ["demo_data/train.csv", "demo_data/train_frames.csv"]
        assert [m.path for m in recipe.stages[2].cfg.data.val_manifests] == ["demo_data/val.csv"]
    else:
        assert [s.config for s in recipe.stages] == ["vit_g_hybrid", "vit_g_k710", "vit_g_k710_to_k400"]
        assert recipe.stages[2].cfg.model.name == "vit_giant_patch14_224"


def test_output_root_replaces_the_files_for_every_default_folder_and_the_chain(tmp_path):
    stages = chain()
    stages[2]["output_dir"] = str(tmp_path / "own" / "ft")  # a stage's own output_dir stays
    elsewhere = tmp_path / "seed1"
    recipe = load_recipe(write_stages(tmp_path, stages), overrides=["seed=1"], output_root=str(elsewhere))
    assert recipe.output_root == str(elsewhere) and recipe.record_path == elsewhere / "stages.json"
    pre, post, ft = recipe.stages
    assert (pre.output_dir, post.output_dir, ft.output_dir) == (
        str(elsewhere / "pre"),
        str(elsewhere / "post"),
        str(tmp_path / "own" / "ft"),
    )
    assert post.init == f"{elsewhere}/pre/export/model.safetensors" == post.cfg.init
    assert ft.init == f"{elsewhere}/post/export/model.safetensors"
    assert all(stage.cfg.seed == 1 for stage in recipe.stages)


# ---------------------------------------------------------------------------------------------------- commands


def test_dry_run_prints_the_exact_chained_commands(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_fake_demo_data(tmp_path)  # a dry run checks that the manifests exist
    path = write_stages(tmp_path, chain(ft_overrides=("train.max_steps=7",)), launcher="deepspeed", nproc=2,
                        overrides=["seed=3"])  # fmt: skip
    recipe = load_recipe(path)
    text = io.StringIO()
    assert run_recipe(recipe, dry_run=True, out=text) == 0
    lines = text.getvalue().splitlines()
    assert lines[0] == "# pre (pretrain): run (not started)"
    commands = [shlex.split(line) for line in lines if not line.startswith("#")]
    runs = tmp_path / "runs"
    assert [c[:3] for c in commands] == [[str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2"]] * 3
    # Each stage runs the installed package's command (deepspeed --module videomae pretrain), not a launch/ script.
    assert [c[3:8] for c in commands] == [
        ["--module", "videomae", kind, "--config", config]
        for kind, config in (("pretrain", PRE), ("finetune", FT), ("finetune", FT))
    ]
    assert commands[0][8:] == [f"output_dir={runs}/pre", "seed=3"]
    assert commands[1][8:] == [f"output_dir={runs}/post", f"init={runs}/pre/export/model.safetensors", "seed=3"]
    assert commands[2][8:] == [f"output_dir={runs}/ft", f"init={runs}/post/export/model.safetensors", "seed=3",
                               "train.max_steps=7"]  # fmt: skip
    # What the command builds from those arguments is the config that was validated.
    for command, stage in zip(commands, recipe.stages):
        assert LOADERS[command[5]](command[7], command[8:]) == stage.cfg
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_dry_run_checks_each_stage_config_against_its_model(tmp_path, capsys, monkeypatch):
    """As a launch script's --dry-run: clips the fine-tune model cannot take are refused before any command prints."""
    monkeypatch.chdir(tmp_path)
    write_fake_demo_data(tmp_path)
    recipe = load_recipe(write_stages(tmp_path, chain(ft_overrides=("data.num_frames=4",))))
    text = io.StringIO()
    assert run_recipe(recipe, dry_run=True, out=text) == 2
    err = capsys.readouterr().err
    assert "stages: stage 'ft'" in err and "data.num_frames: clips of 4 frames, but the model takes 8 frames" in err
    assert "stage 'pre'" not in err and "stage 'post'" not in err
    assert text.getvalue() == "" and not (tmp_path / "runs").exists()


def test_dry_run_refuses_a_missing_manifest_as_the_launch_scripts_do(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_fake_demo_data(tmp_path)
    recipe = load_recipe(write_stages(tmp_path, chain(ft_overrides=("data.manifests=[demo_data/gone.csv]",))))
    assert run_recipe(recipe, dry_run=True, out=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert "stage 'ft'" in err and "data.manifests[0]: demo_data/gone.csv does not exist" in err
    assert "stage 'pre'" not in err


def test_launch_script_refuses_before_anything_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_fake_demo_data(tmp_path)
    spec = importlib.util.spec_from_file_location("launch_stages", LAUNCH / "stages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = write_stages(tmp_path, _with(1, overrides=["train.mixup=-1"]))
    assert module.main(["--stages", str(path)]) == 2
    assert "stages.py: config error: " in capsys.readouterr().err
    good = write_stages(tmp_path, chain())
    assert module.main(["--stages", str(good), "--dry-run", "--launcher", "torchrun", "--nproc", "4", "seed=9"]) == 0
    commands = [shlex.split(line) for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert len(commands) == 3 and not (tmp_path / "runs").exists()
    assert all(c[1] == "--nproc_per_node=4" and c[-1] == "seed=9" for c in commands)  # command-line overrides last
    assert [c[2:5] for c in commands] == [["-m", "videomae", kind] for kind in ("pretrain", "finetune", "finetune")]
    assert module.main(["--stages", str(good), "--only", "nope"]) == 2
    assert "no stage 'nope'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- done or not


class FakeLauncher:
    """Stands in for ``videomae pretrain|finetune``: loads the config from the command like they do, checks the init
    file is there, writes config.yaml, the export (naming its init) and, for finetune, eval/metrics.json."""

    def __init__(self, fail: str | None = None) -> None:
        self.ran: list[str] = []
        self.fail = fail

    def __call__(self, command: list[str]) -> int:
        kind = command[command.index("videomae") + 1]
        config, overrides = command[command.index("--config") + 1], command[command.index("--config") + 2 :]
        cfg = LOADERS[kind](config, overrides)
        out = Path(cfg.output_dir)
        self.ran.append(out.name)
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        if out.name == self.fail:
            return 1
        assert cfg.init is None or Path(cfg.init).is_file(), cfg.init
        (out / "export").mkdir(exist_ok=True)
        (out / "export/model.safetensors").write_text(f"from {cfg.init}")
        if kind == "finetune":
            (out / "eval").mkdir(exist_ok=True)
            (out / "eval/metrics.json").write_text(json.dumps({"top1": 0.5, "num_videos": 3}))
        return 0


def test_runner_preflights_every_stage_before_running_any(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_fake_demo_data(tmp_path)  # the demo configs' demo_data/, relative to the working directory
    path = write_stages(tmp_path, chain(ft_overrides=("data.val_manifests=[demo_data/missing.csv]",)))
    launcher = FakeLauncher()
    assert run_recipe(load_recipe(path), preflight=True, execute=launcher, out=io.StringIO()) == 2
    assert launcher.ran == [] and not (tmp_path / "runs").exists()
    assert capsys.readouterr().err.splitlines()[:2] == [
        "stages: stage 'ft': 1 problem found before launch; nothing was started:",
        f"  data.val_manifests[0]: demo_data/missing.csv: file not found "
        f"(relative to the working directory {tmp_path})",
    ]
    # The inits that post and ft start from are written by the stages before them: not looked for yet.
    assert run_recipe(load_recipe(write_stages(tmp_path, chain())), preflight=True, execute=launcher) == 0
    assert launcher.ran == ["pre", "post", "ft"]


def test_done_stages_are_skipped_changed_ones_rerun_afresh(tmp_path):
    recipe = load_recipe(write_stages(tmp_path, chain()))
    pre, post, ft = recipe.stages
    assert decide(pre, None, None).action == "run"
    # Fake a finished pretrain: config.yaml as the run writes it, and the export.
    out = Path(pre.output_dir)
    (out / "export").mkdir(parents=True)
    save_config(pre.cfg, out / "config.yaml")
    assert decide(pre, None, None).action == "run"  # no export yet: resumes its checkpoints
    (out / "export/model.safetensors").write_bytes(b"weights")
    assert decide(pre, None, None).reason == DONE
    assert decide(pre, None, None, force=True).action == "fresh"
    # A finished finetune stage is done only once its final evaluation is written.
    (Path(post.output_dir) / "export").mkdir(parents=True)
    save_config(post.cfg, Path(post.output_dir) / "config.yaml")
    post.export.write_bytes(b"weights")
    assert decide(post, pre.recipe, None).action == "run"
    (Path(post.output_dir) / "eval").mkdir()
    (Path(post.output_dir) / "eval/metrics.json").write_text("{}")
    assert decide(post, pre.recipe, {"init_recipe": pre.recipe}).reason == DONE
    # Another value in the declaration: the finished run is not this stage any more.
    changed = load_recipe(write_stages(tmp_path, chain(pre_overrides=("train.max_steps=5", "mask.ratio=0.75"))))
    decision = decide(changed.stages[0], None, None)
    assert (decision.action, decision.reason) == ("fresh", "its config.yaml differs in mask.ratio, train.max_steps")
    # post's own config is unchanged, but it was started from the old pretrain: its recorded upstream differs.
    assert changed.stages[1].cfg == post.cfg and changed.stages[0].recipe != pre.recipe
    stale = decide(changed.stages[1], changed.stages[0].recipe, {"init_recipe": pre.recipe})
    assert (stale.action, stale.reason) == ("fresh", "stage 'pre' changed since it ran")
    # Planned together: pre reruns, so post (done before) reruns afresh and ft (never started) just runs.
    decisions = plan(changed, ["pre", "post", "ft"], {})
    assert [(d.action, d.reason) for d in decisions.values()] == [
        ("fresh", "its config.yaml differs in mask.ratio, train.max_steps"),
        ("fresh", "stage 'pre' runs first"),
        ("run", "not started"),
    ]
    # --only ft needs post done: it is not (with this declaration) -> refused before anything runs.
    with pytest.raises(ConfigError, match="stage 'ft' starts from stage 'post', which is left out but not done"):
        plan(changed, ["ft"], {})


def test_runner_chains_skips_stops_at_a_failure_and_resumes(tmp_path, capsys):
    path = write_stages(tmp_path, chain())
    runs = tmp_path / "runs"
    failing = FakeLauncher(fail="post")
    assert run_recipe(load_recipe(path), execute=failing, out=io.StringIO()) == 1
    assert failing.ran == ["pre", "post"]
    assert "stages: stage 'post' failed (exit status 1)" in capsys.readouterr().err
    record = json.loads((runs / "stages.json").read_text())
    pre, post, ft = record["stages"]
    assert (pre["status"], post["status"], ft["status"]) == ("done", "failed", "pending")
    assert post["returncode"] == 1 and pre["export"] == str(runs / "pre/export/model.safetensors")

    # The same command again: pre is done, post resumes in its folder (same config), ft runs.
    launcher = FakeLauncher()
    assert run_recipe(load_recipe(path), execute=launcher, out=io.StringIO()) == 0
    assert launcher.ran == ["post", "ft"]
    assert (runs / "ft/export/model.safetensors").read_text() == f"from {runs}/post/export/model.safetensors"
    record = json.loads((runs / "stages.json").read_text())
    assert [(s["status"], s["skipped"]) for s in record["stages"]] == [("done", True), ("done", False), ("done", False)]
    assert record["stages"][2]["metrics"] == {"top1": 0.5, "num_videos": 3}
    assert all(s["wall_s"] is not None for s in record["stages"])
    assert record["stages"][2]["init_recipe"] == record["stages"][1]["recipe"]

    # Nothing left: nothing runs; nor when stages.json was lost (the run folders say done; the new file too).
    idle = FakeLauncher()
    assert run_recipe(load_recipe(path), execute=idle, out=io.StringIO()) == 0 and idle.ran == []
    (runs / "stages.json").unlink()
    for _ in range(2):
        assert run_recipe(load_recipe(path), execute=idle, out=io.StringIO()) == 0 and idle.ran == []

    # A changed pretrain reruns afresh and so does everything after it; the old folders are kept aside.
    path = write_stages(tmp_path, chain(pre_overrides=("train.max_steps=5",)))
    rerun = FakeLauncher()
    text = io.StringIO()
    assert run_recipe(load_recipe(path), execute=rerun, out=text) == 0
    assert rerun.ran == ["pre", "post", "ft"]
    assert sorted(p.name.split(".replaced-")[0] for p in runs.glob("*.replaced-*")) == ["ft", "post", "pre"]
    assert "=== stage 2/3 post (finetune): run afresh (stage 'pre' runs first)" in text.getvalue()

    # --from ft --force: only ft again.
    forced = FakeLauncher()
    assert run_recipe(load_recipe(path), start="ft", force=True, execute=forced, out=io.StringIO()) == 0
    assert forced.ran == ["ft"]


# ---------------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    from videomae.data.demo import DemoConfig, write_demo_dataset

    out = tmp_path_factory.mktemp("demo_stages")
    write_demo_dataset(out, DemoConfig(num_train=8, num_val=4, frames=16), workers=1)
    return out


@pytest.mark.slow
def test_three_stages_chain_through_their_exports(demo, tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    tiny = "img_size: 32, patch_size: 8, all_frames: 4"
    shared = {"data.data_root": str(demo), "data.input_size": 32, "data.num_frames": 4, "data.num_workers": 0,
              "train.max_steps": 4, "train.batch_size": 2, "train.warmup_steps": 1, "train.log_every": 1}  # fmt: skip
    labelled = {"data.labels": f"{demo}/labels.txt", "data.val_manifests": [f"{demo}/val.csv"],
                "data.test_num_segment": 2, "train.eval_every": 0, "train.save_best": False,
                "model.overrides": yaml.safe_load(f"{{{tiny}, embed_dim: 32, depth: 2, num_heads: 2}}")}  # fmt: skip
    stages = [
        {
            "name": "pre",
            "kind": "pretrain",
            "config": PRE,
            "overrides": {
                "data.manifests": [f"{demo}/train_unlabeled.csv"],
                "model.decoder_depth": 1,
                "train.picture_every": 0,
                "model.overrides": yaml.safe_load(
                    f"{{{tiny}, encoder_embed_dim: 32, encoder_depth: 2, "
                    "encoder_num_heads: 2, decoder_embed_dim: 32, decoder_num_heads: 2}"
                ),
            },
        },
        # Layer decay 1e-30: the encoder's lr is <= 1e-34, far below float32 resolution at its weights' sizes, so the
        # post-pretrain export keeps the encoder it started from bit for bit (its head and fc_norm train at full lr).
        {
            "name": "post",
            "kind": "finetune",
            "config": FT,
            "init_from": "pre",
            "overrides": {
                **labelled,
                "data.manifests": [f"{demo}/train.csv", f"{demo}/train_frames.csv"],
                "train.layer_decay": 1e-30,
            },
        },
        # lr ~1e-32 and min_lr 0: no weight moves, so the fine-tune export is exactly what it started from.
        {
            "name": "ft",
            "kind": "finetune",
            "config": FT,
            "init_from": "post",
            "overrides": {**labelled, "data.manifests": [f"{demo}/train.csv"], "train.lr": 1e-30, "train.min_lr": 0.0},
        },
    ]
    path = write_stages(tmp_path, stages, overrides=shared)
    spec = importlib.util.spec_from_file_location("launch_stages", LAUNCH / "stages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--stages", str(path)]) == 0

    runs = tmp_path / "runs"
    pre, post, ft = (load_file(runs / name / "export/model.safetensors") for name in ("pre", "post", "ft"))
    encoder = [k for k in post if k.startswith(("patch_embed.", "blocks."))]
    assert len(encoder) > 20
    assert all(torch.equal(post[k], pre[f"encoder.{k}"]) for k in encoder)  # post started from pre's export
    assert not torch.equal(post["fc_norm.weight"], torch.ones_like(post["fc_norm.weight"]))  # ... and trained
    assert ft.keys() == post.keys() and all(torch.equal(ft[k], post[k]) for k in ft)  # ft started from post's
    record = json.loads((runs / "stages.json").read_text())
    assert [(s["name"], s["status"]) for s in record["stages"]] == [("pre", "done"), ("post", "done"), ("ft", "done")]
    assert [s["init"] for s in record["stages"]] == [None, f"{runs}/pre/export/model.safetensors",
                                                     f"{runs}/post/export/model.safetensors"]  # fmt: skip
    assert record["stages"][0]["last_log"]["step"] == 4
    metrics = record["stages"][2]["metrics"]
    assert metrics == json.loads((runs / "ft/eval/metrics.json").read_text())
    assert metrics["num_videos"] == 4 and metrics["num_views"] == 2 and 0.0 <= metrics["top1"] <= 1.0

    # The config.yaml each run wrote equals the resolved one: the same command again runs nothing.
    idle = FakeLauncher()
    assert run_recipe(load_recipe(path), execute=idle, out=io.StringIO()) == 0 and idle.ran == []
