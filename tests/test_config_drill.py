"""The config drill (issue 13): each bad config is refused (or warned about) with the key, file and line named and
the fix, in ``--dry-run`` and before any process group, and nothing is written.

Most cases call the loaders and :func:`videomae.launching.config_checks.config_findings` directly; two run the launch
script in a subprocess to show that nothing starts (no DeepSpeed import, no process group, no output folder).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch
from helpers import write_fake_demo_data

from videomae.config import ConfigError, FinetuneConfig, PretrainConfig, load_config, load_finetune_config
from videomae.launching import config_checks
from videomae.launching.config_checks import config_findings
from videomae.launching.findings import Finding
from videomae.masking import running_cell_mask, tube_mask
from videomae.models import create_model
from videomae.models.arguments import ModelArgumentError

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = ROOT / "videomae/recipes/pretrain/demo.yaml"
FINETUNE = ROOT / "videomae/recipes/finetune/demo.yaml"


def checks(*overrides: str, kind: str = "pretrain", out: str = "runs/x") -> dict[str, Finding]:
    """The config checks of a demo config with ``overrides`` (as ``--dry-run`` runs them), by check name."""
    load = load_config if kind == "pretrain" else load_finetune_config
    cfg = load(PRETRAIN if kind == "pretrain" else FINETUNE, [f"output_dir={out}", *overrides])
    found = config_findings(cfg)
    assert len({f.check for f in found}) == len(found), "one finding per check"
    return {f.check: f for f in found}


def failed(found: dict[str, Finding]) -> dict[str, Finding]:
    return {k: f for k, f in found.items() if not f.ok}


def refused(*overrides: str, kind: str = "pretrain") -> str:
    load = load_config if kind == "pretrain" else load_finetune_config
    with pytest.raises(ConfigError) as info:
        load(PRETRAIN if kind == "pretrain" else FINETUNE, list(overrides))
    return str(info.value)


# ---------------------------------------------------------------------------------------------------- YAML


def test_a_section_given_twice_is_refused_with_the_file_and_both_lines(tmp_path):
    path = tmp_path / "two_trains.yaml"
    path.write_text("train:\n  lr: 1.0e-3\n  max_steps: 5\ndata:\n  num_frames: 8\ntrain:\n  max_steps: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"config file {path}: train: given twice, at lines 1 and 6;")
    assert "merge them into one" in str(info.value)


def test_a_nested_key_given_twice_is_named_by_its_dotted_path(tmp_path):
    path = tmp_path / "two_lrs.yaml"
    path.write_text(
        "data:\n  manifests:\n    - path: a.csv\n      weight: 1\n      weight: 2\ntrain:\n  max_steps: 3\n"
    )
    with pytest.raises(ConfigError, match=r"data\.manifests\[0\]\.weight: given twice, at lines 4 and 5"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"^train: value '\{lr: 1, lr: 2\}': lr: given twice, at lines 1 and 1"):
        load_config(PRETRAIN, ["train={lr: 1, lr: 2}"])


def test_merge_keys_may_still_be_overridden():
    cfg = load_config(PRETRAIN, ["train={<<: {lr: 1.0, max_steps: 4}, lr: 2.0}"])  # YAML's way to override a merge
    assert (cfg.train.lr, cfg.train.max_steps) == (2.0, 4)


# ---------------------------------------------------------------------------------------------------- finite numbers


def _float_keys(cls: type, prefix: str = "") -> list[tuple[str, bool]]:
    """Every float-typed field below ``cls`` as ``(dotted key, is a list)``, found from the dataclass types."""
    keys = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        args = typing.get_args(tp)
        if dataclasses.is_dataclass(tp):
            keys += _float_keys(tp, f"{prefix}{f.name}.")
        elif tp is float or float in args:
            keys.append((prefix + f.name, False))
        elif typing.get_origin(tp) is list and args == (float,):
            keys.append((prefix + f.name, True))
    return keys


@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
@pytest.mark.parametrize("bad", [".inf", "-.inf", ".nan", "1e400"])
def test_every_float_key_refuses_nan_and_infinities(kind, bad):
    keys = _float_keys(PretrainConfig if kind == "pretrain" else FinetuneConfig)
    assert len(keys) >= 14 and ("train.lr", False) in keys and ("data.decode_timeout_s", False) in keys
    shown = {".inf": "inf", "-.inf": "-inf", ".nan": "nan", "1e400": "inf"}[bad]
    for key, is_list in keys:
        value = f"[{bad}]" if is_list else bad
        message = refused(f"{key}={value}", kind=kind)
        named = f"{key}[0]" if is_list else key
        assert message.startswith(f"{named}: got {shown}, allowed: a finite number"), (key, message)


def test_untyped_sections_refuse_nan_and_infinities_too():
    assert refused("model.overrides.drop_path_rate=.inf").startswith("model.overrides.drop_path_rate: got inf")
    assert refused("deepspeed.extra={zero_optimization: {x: [1, .nan]}}").startswith(
        "deepspeed.extra.zero_optimization.x[1]: got nan, allowed: a finite number"
    )


def test_a_decode_timeout_too_long_to_wait_on_is_refused():
    # threading's waits overflow beyond TIMEOUT_MAX (the drill's OverflowError in the loader, with .inf)
    assert refused("data.decode_timeout_s=1e12").startswith("data.decode_timeout_s: got 1000000000000.0, allowed: a ")
    assert load_config(PRETRAIN, ["data.decode_timeout_s=0"]).data.decode_timeout_s == 0  # 0: no limit


# ---------------------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("data.num_workers=-1", "data.num_workers: got -1, allowed: an integer >= 0"),
        ("train.batch_size=0", "train.batch_size: got 0, allowed: an integer >= 1"),
        ("data.num_frames=0", "data.num_frames: got 0, allowed: an integer >= 1"),
        ("data.input_size=-224", "data.input_size: got -224, allowed: an integer >= 1"),
        ("model.decoder_depth=0", "model.decoder_depth: got 0, allowed: an integer >= 1 or null"),
        ("data.manifests=[{path: a.csv, num_frames: 0}]", "data.manifests[0].num_frames: got 0, allowed: an integer"),
        ("deepspeed.reduce_bucket_size=0", "deepspeed.reduce_bucket_size: got 0, allowed: an integer >= 1"),
        ("train.eps=0", "train.eps: got 0.0, allowed: a number > 0"),
        ("train.warmup_epochs=-1", "train.warmup_epochs: got -1.0, allowed: a number >= 0 or null"),
    ],
)
def test_typed_sizes_must_be_positive(override, named):
    assert refused(override).startswith(named)


@pytest.mark.parametrize(
    ("override", "key", "detail"),
    [
        ("model.overrides.encoder_depth=-1", "model.overrides.encoder_depth", "got -1, allowed: an integer >= 1"),
        ("model.overrides.decoder_num_heads=0", "model.overrides.decoder_num_heads", "got 0, allowed: an integer >= 1"),
        ("model.overrides.encoder_num_heads=5", "model.overrides.encoder_embed_dim",
         "got 96, allowed: a multiple of encoder_num_heads (5)"),
        ("model.overrides.patch_size=7", "model.overrides.img_size", "got 64, allowed: a multiple of patch_size (7)"),
        ("model.overrides.mlp_ratio=0", "model.overrides.mlp_ratio", "got 0, allowed: a number > 0"),
        ("model.drop_path_rate=0.5", None, None),  # in range: passes
    ],
)  # fmt: skip
def test_model_sizes_are_checked_before_launch_naming_the_key(override, key, detail):
    bad = failed(checks(override))
    if key is None:
        assert not bad
        return
    assert list(bad) == [key] and bad[key].detail == detail
    assert "drop it to keep the registered model's own value" in bad[key].fix


def test_a_negative_depth_no_longer_builds_a_model_without_blocks():
    # the drill: encoder_depth=-1 built an encoder of zero blocks that trained; the constructor is the one place
    with pytest.raises(ModelArgumentError) as info, torch.device("meta"):
        create_model("pretrain_videomae_tiny_patch16_224", encoder_depth=-1)
    assert info.value.argument == "encoder_depth"
    bad = failed(checks("model.overrides.depth=0", kind="finetune"))
    assert bad["model.overrides.depth"].detail == "got 0, allowed: an integer >= 1"


# ---------------------------------------------------------------------------------------------------- clip shape


def _forward_fails(overrides: dict, clip: tuple[int, int, int, int]) -> bool:
    """Whether the real model refuses a clip ``(C, T, H, W)``: the reference for the preflight's clip check (the
    tiny classifier with the demo encoder's clip geometry; the patch embedding's shape check is the encoder's)."""
    geometry = {k: overrides[k] for k in ("img_size", "patch_size", "all_frames")}
    model = create_model("vit_tiny_patch16_224", **geometry).eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *clip))
    except (ValueError, RuntimeError):
        return True
    return False


def test_clip_shape_must_be_the_models_the_check_matches_the_first_forward():
    cfg = load_config(PRETRAIN)
    overrides = cfg.model.overrides
    assert not failed(checks())
    assert not _forward_fails(overrides, (3, 8, 64, 64))
    bad = failed(checks("data.num_frames=4"))
    assert list(bad) == ["data.num_frames"]
    assert (
        bad["data.num_frames"].detail == "clips of 4 frames, but the model takes 8 frames (model.overrides.all_frames)"
    )
    assert bad["data.num_frames"].fix.startswith("set data.num_frames=8, or model.overrides.all_frames=4")
    assert _forward_fails(overrides, (3, 4, 64, 64))
    bad = failed(checks("data.input_size=32"))
    assert list(bad) == ["data.input_size"]
    assert bad["data.input_size"].detail == "clips of 32 px, but the model takes 64 px (model.overrides.img_size)"
    assert _forward_fails(overrides, (3, 8, 32, 32))
    # a size the patch does not divide cannot be the model's: the fix says so
    assert (
        "another multiple of the model's patch_size (8)" in failed(checks("data.input_size=36"))["data.input_size"].fix
    )
    # both sides changed together: a model on 4-frame, 32 px clips
    assert not failed(checks("data.num_frames=4", "data.input_size=32", "model.overrides.all_frames=4",
                             "model.overrides.img_size=32"))  # fmt: skip


def test_a_manifests_own_frame_count_and_other_channels_are_checked():
    bad = failed(checks("data.manifests=[{path: a.csv, num_frames: 16}]"))
    assert list(bad) == ["data.manifests[0].num_frames"]
    assert bad["data.manifests[0].num_frames"].detail == "16-frame clips from a.csv, but the model takes 8"
    bad = failed(checks("data.val_manifests=[{path: v.csv, num_frames: 4}]", kind="finetune"))
    assert list(bad) == ["data.val_manifests[0].num_frames"]
    bad = failed(checks("model.overrides.in_chans=1"))
    assert bad["model.overrides.in_chans"].detail == "the model takes 1 channels; the data gives RGB clips (3)"


def test_finetune_clip_shape_and_tubelet():
    bad = failed(checks("data.num_frames=16", kind="finetune"))
    assert (
        bad["data.num_frames"].detail == "clips of 16 frames, but the model takes 8 frames (model.overrides.all_frames)"
    )
    bad = failed(checks("data.num_frames=7", "model.overrides.all_frames=7", kind="finetune"))
    assert list(bad) == ["model.overrides.all_frames"]
    assert bad["model.overrides.all_frames"].detail == "got 7, allowed: a multiple of tubelet_size (2)"
    bad = failed(checks("model.name=vit_tiny_patch16_224", "model.overrides={}", kind="finetune"))
    assert bad["data.num_frames"].detail == "clips of 8 frames, but the model takes 16 frames (the default of " \
                                            "vit_tiny_patch16_224)"  # fmt: skip


def test_a_teacher_that_takes_other_clips_is_refused(tmp_path):
    from videomae.checkpoint import export_weights

    teacher = create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, all_frames=8, num_classes=2)
    export_weights(teacher, tmp_path / "teacher.safetensors", {"label_names": ["a", "b"]})
    bad = failed(checks(f"distill.teacher={tmp_path / 'teacher.safetensors'}", kind="finetune"))
    assert list(bad) == ["distill.teacher clips"]
    assert bad["distill.teacher clips"].detail == "the teacher takes 8-frame clips of 32 px, the data gives 8 x 64 px"
    same = ("data.input_size=32", "model.overrides.img_size=32")
    assert checks(f"distill.teacher={tmp_path / 'teacher.safetensors'}", *same, kind="finetune")[
        "distill.teacher clips"
    ].ok
    by_name = ("distill.teacher=t.pth", "distill.teacher_model=vit_tiny_patch16_224")
    bad = failed(checks(*by_name, "distill.teacher_overrides={depth: -3}", kind="finetune"))
    assert bad["distill.teacher_overrides.depth"].detail == "got -3, allowed: an integer >= 1"
    bad = failed(checks(*by_name, kind="finetune"))  # the registered teacher takes 16 x 224 px
    assert bad["distill.teacher clips"].detail.startswith("the teacher takes 16-frame clips of 224 px")


# ---------------------------------------------------------------------------------------------------- masks


def test_a_mask_ratio_the_grid_cannot_realise_is_warned_with_the_ratio_training_uses():
    found = checks("mask.ratio=0.99")["mask.ratio"]
    assert found.ok and found.warning
    # the count the training draws: tube_mask on the demo's 4 x 8 x 8 grid
    drawn = tube_mask(1, (4, 8, 8), 0.99).sum().item() / (4 * 64)
    assert drawn == 63 / 64
    assert found.detail.startswith("0.99 hides 63 of 64 tokens per frame (tube mask on a 4x8x8 token grid): "
                                   "effective ratio 0.9844; the encoder sees 1 of them, not the 0.64")  # fmt: skip
    random = checks("mask.type=random", "mask.ratio=0.99")["mask.ratio"]
    assert random.warning and "hides 253 of 256 tokens per clip" in random.detail
    # the released 0.9 on 14 x 14 patches (176 of 196) and the demo's 0.9 on 8 x 8 (57 of 64) stay quiet
    demo = checks()["mask.ratio"]
    assert demo.ok and not demo.warning and "effective ratio 0.8906" in demo.detail
    released = checks("data.input_size=224", "model.overrides.img_size=224", "model.overrides.patch_size=16")
    assert not released["mask.ratio"].warning and "hides 176 of 196" in released["mask.ratio"].detail


def test_a_mask_ratio_that_hides_no_token_is_refused():
    bad = failed(checks("mask.ratio=0.01"))
    assert list(bad) == ["mask.ratio"]
    assert "mask ratio 0.01 over 64 tokens hides 0 of them" in bad["mask.ratio"].detail
    assert bad["mask.ratio"].fix.startswith("a mask.ratio of at least 0.01562")
    with pytest.raises(ValueError):  # what the training would have raised at its first step
        tube_mask(1, (4, 8, 8), 0.01)


def test_running_cells_need_an_even_grid():
    odd = ("data.input_size=56", "model.overrides.img_size=56")  # 7 x 7 patches
    bad = failed(checks(*odd))
    assert list(bad) == ["mask.decoder_type"] and "even spatial grid" in bad["mask.decoder_type"].detail
    with pytest.raises(ValueError):
        running_cell_mask(1, (4, 7, 7), 0.5)
    assert not failed(checks(*odd, "mask.decoder_type=none"))


# ---------------------------------------------------------------------------------------------------- output_dir


def test_output_dir_that_is_a_file_or_under_one(tmp_path):
    (tmp_path / "a_file").write_text("")
    assert failed(checks(out=str(tmp_path / "a_file")))["output_dir"].detail == f"{tmp_path / 'a_file'} is a file"
    bad = failed(checks(out=str(tmp_path / "a_file/run")))["output_dir"]
    assert bad.detail == f"{tmp_path / 'a_file/run'} cannot be made: {tmp_path / 'a_file'} is a file"
    assert bad.fix == "choose a folder this user can write, e.g. output_dir=runs/NAME"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a 0o555 folder; see the simulated read-only test")
def test_output_dir_in_a_folder_without_write_permission(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        bad = failed(checks(out=str(locked / "run")))["output_dir"]
        assert bad.detail == f"{locked / 'run'}: cannot write in {locked}: Permission denied"
    finally:
        locked.chmod(0o755)


def test_output_dir_on_a_read_only_mount_simulated(tmp_path, monkeypatch):
    """A read-only mount cannot be made without privileges, so the write probe's OSError is simulated: EROFS, which
    permission bits and ``os.access`` (as root) do not show."""

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    assert os.access(tmp_path, os.W_OK)
    monkeypatch.setattr(config_checks.tempfile, "mkstemp", read_only)
    bad = failed(checks(out=str(tmp_path / "run")))["output_dir"]
    assert bad.detail == f"{tmp_path / 'run'}: cannot write in {tmp_path}: Read-only file system"


# ---------------------------------------------------------------------------------------------------- the launchers


def _launch(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``launch/<script>`` as one process; prints whether DeepSpeed was imported and a process group made."""
    code = (
        "import sys, runpy; sys.argv = sys.argv[1:]; mod = runpy.run_path(sys.argv[0]); rc = mod['main']();"
        " import torch.distributed as d; print('deepspeed' in sys.modules, d.is_initialized()); sys.exit(rc)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code, str(ROOT / "launch" / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_dry_run_refuses_before_anything_starts(tmp_path):
    write_fake_demo_data(tmp_path)  # the manifests exist: a dry run refuses missing ones first
    out = tmp_path / "run"
    proc = _launch("pretrain.py", "--config", str(PRETRAIN), "--dry-run", f"output_dir={out}",
                   "model.overrides.encoder_depth=-1", "data.num_frames=4", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "False False\n", "no config printed, no DeepSpeed, no process group"
    assert proc.stderr.splitlines() == [
        "pretrain.py: 1 problem found before launch; nothing was started:",
        "  model.overrides.encoder_depth: got -1, allowed: an integer >= 1",
        "    fix: set model.overrides.encoder_depth as allowed, or drop it to keep the registered model's own value",
    ]
    assert not out.exists()
    (tmp_path / "dup.yaml").write_text(PRETRAIN.read_text() + "train:\n  max_steps: 1\n")
    proc = _launch("finetune.py", "--config", "dup.yaml", "--dry-run", cwd=tmp_path)
    line = PRETRAIN.read_text().splitlines().index("train:") + 1
    assert proc.returncode == 2 and proc.stderr.startswith(
        f"finetune.py: config error: config file dup.yaml: train: given twice, at lines {line} and "
    )


def test_launch_refuses_a_clip_shape_before_any_process_group_and_warns_of_a_mask_ratio(tmp_path):
    write_fake_demo_data(tmp_path)
    out = tmp_path / "run"
    proc = _launch("pretrain.py", "--config", str(PRETRAIN), f"output_dir={out}", "data.num_frames=4", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == "False False\n", proc.stderr
    assert proc.stderr.splitlines()[1] == "  data.num_frames: clips of 4 frames, but the model takes 8 frames " \
                                          "(model.overrides.all_frames)"  # fmt: skip
    assert not out.exists()
    proc = _launch("pretrain.py", "--config", str(PRETRAIN), "--dry-run", f"output_dir={out}", "mask.ratio=0.99",
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0 and "\nOUTPUT_DIR=" in proc.stdout
    assert proc.stderr.startswith("pretrain.py: warning: mask.ratio: 0.99 hides 63 of 64 tokens per frame")
    assert not out.exists(), "a dry run writes nothing"


def test_doctor_shows_a_warning_as_warn(tmp_path, monkeypatch):
    from videomae.launching.doctor import static_findings

    monkeypatch.chdir(tmp_path)
    write_fake_demo_data(tmp_path)
    rows = {row.check: row for row in static_findings(load_config(PRETRAIN, ["output_dir=runs/x", "mask.ratio=0.99"]))}
    assert rows["mask.ratio"].status == "WARN" and "; fix: the run trains with 63/64" in rows["mask.ratio"].detail
    assert rows["data.num_frames"].status == "PASS"
