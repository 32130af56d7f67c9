"""Resuming on a different number of processes: ZeRO checkpoints converted to DeepSpeed universal checkpoints.

Fast tests drive the conversion bookkeeping with a fake converter and engine; the slow ones train a tiny model on
the demo data with the real engine (2 processes under ``torchrun``, ``gloo``) and resume it on 1 process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import load_deepspeed_file
from run_helpers import PRETRAIN_DEMO_YAML, ROOT, losses, pretrain_overrides, run_pretrain

from videomae.engine import checkpointing as ckpt

# ----------------------------------------------------------------------------------------------------------------
# bookkeeping (no DeepSpeed)


def _checkpoint(root: Path, step: int, world_size: int, zero_stage: int) -> ckpt.CheckpointInfo:
    path = root / ckpt.tag_for(step)
    path.mkdir(parents=True)
    torch.save({"step": step}, path / "client.pt")
    meta = {"step": step, "time": 1000.0 + step, "world_size": world_size, "zero_stage": zero_stage}
    (path / ckpt.COMMIT_FILE).write_text(json.dumps(meta))
    return ckpt.checkpoint_at(path)


class Converter:
    """Stands in for ``ds_to_universal``: copies the folder, or dies half-way."""

    def __init__(self, die: type[BaseException] | None = None) -> None:
        self.calls: list[tuple[Path, Path]] = []
        self.die = die

    def __call__(self, src: Path, out: Path) -> None:
        self.calls.append((src, out))
        out.mkdir(parents=True)
        (out / "zero").mkdir()
        if self.die is not None:
            raise self.die("killed mid-conversion")
        shutil.copy(src / "client.pt", out / "client.pt")


def test_which_resumes_need_a_universal_checkpoint(tmp_path):
    zero2 = _checkpoint(tmp_path, 4, world_size=2, zero_stage=2)
    assert ckpt.resume_needs_universal(zero2, world_size=2, zero_stage=2) is False  # loads as written
    assert ckpt.resume_needs_universal(zero2, world_size=1, zero_stage=2) is True
    assert ckpt.resume_needs_universal(zero2, world_size=8, zero_stage=2) is True
    zero0 = _checkpoint(tmp_path, 5, world_size=2, zero_stage=0)
    assert ckpt.resume_needs_universal(zero0, world_size=3, zero_stage=0) is False  # whole states on every rank
    with pytest.raises(ckpt.ResumeError) as error:
        ckpt.resume_needs_universal(zero2, world_size=4, zero_stage=3)
    message = str(error.value)
    assert "ZeRO stage 2 by 2 processes; this run uses ZeRO stage 3 with 4" in message
    assert "deepspeed.zero_stage=2" in message and "init=" in message
    with pytest.raises(ckpt.ResumeError, match="ZeRO stage 0 by 2 processes; this run uses ZeRO stage 1 with 2"):
        ckpt.resume_needs_universal(zero0, world_size=2, zero_stage=1)


def test_conversion_is_committed_last_and_a_killed_one_is_redone(tmp_path):
    info = _checkpoint(tmp_path, 4, world_size=2, zero_stage=2)
    with pytest.raises(KeyboardInterrupt):
        ckpt.prepare_universal(info, Converter(die=KeyboardInterrupt))
    # What a kill leaves: a .tmp folder without marker; nothing that looks like a finished conversion.
    assert (tmp_path / "step_00000004.universal.tmp" / "zero").is_dir()
    assert not ckpt.universal_path(info).exists()
    assert [i.tag for i in ckpt.list_complete(tmp_path)] == ["step_00000004"]

    convert = Converter()
    universal = ckpt.prepare_universal(info, convert)
    assert len(convert.calls) == 1 and convert.calls[0] == (info.path, tmp_path / "step_00000004.universal.tmp")
    assert universal.path == tmp_path / "step_00000004.universal" and universal.step == 4
    marker = json.loads((universal.path / ckpt.COMMIT_FILE).read_text())
    assert marker["source_step"] == 4 and marker["source_world_size"] == 2 and marker["source_zero_stage"] == 2
    assert torch.load(universal.path / "client.pt") == {"step": 4}
    assert not (tmp_path / "step_00000004.universal.tmp").exists()
    with pytest.raises(FileNotFoundError, match="point resume at the original checkpoint .*step_00000004$"):
        ckpt.checkpoint_at(universal.path)
    # A second resume reuses the finished conversion.
    again = Converter()
    assert ckpt.prepare_universal(info, again).path == universal.path and again.calls == []
    # A conversion left from an older checkpoint of the same step (other commit time) is not reused.
    shutil.rmtree(info.path)
    newer = _checkpoint(tmp_path, 4, world_size=4, zero_stage=2)
    marker_path = newer.path / ckpt.COMMIT_FILE
    marker_path.write_text(json.dumps({**newer.meta, "time": 5000.0}))
    newer = ckpt.checkpoint_at(newer.path)
    redo = Converter()
    ckpt.prepare_universal(newer, redo)
    assert len(redo.calls) == 1
    assert json.loads((universal.path / ckpt.COMMIT_FILE).read_text())["source_world_size"] == 4


def test_a_failed_conversion_names_the_checkpoint_and_what_to_do(tmp_path):
    info = _checkpoint(tmp_path, 4, world_size=4, zero_stage=1)
    with pytest.raises(ckpt.ResumeError) as error:
        ckpt.prepare_universal(info, Converter(die=ValueError))
    message = str(error.value)
    assert str(info.path) in message and "ZeRO stage 1, 4 processes" in message
    assert "ValueError: killed mid-conversion" in message and "Resume on 4 processes" in message
    assert not ckpt.universal_path(info).exists()


class UniversalEngine:
    """The engine API ``load_checkpoint`` uses, set up for universal loading (like the trainer's)."""

    global_rank = 0

    def __init__(self, world_size: int, zero_stage: int, universal: bool = True) -> None:
        self.world_size, self.stage, self.universal = world_size, zero_stage, universal
        groups = [{"params": [], "name": "decay", "apply_wd": True, "weight_decay": 0.05},
                  {"params": [], "name": "no_decay", "apply_wd": False, "weight_decay": 0.0}]  # fmt: skip
        self.optimizer = type("Optimizer", (), {"param_groups": groups})()
        self.loaded: list[tuple[str, str]] = []

    def zero_optimization_stage(self) -> int:
        return self.stage

    def load_universal_checkpoint(self) -> bool:
        return self.universal

    def load_checkpoint(self, load_dir, tag, **kwargs):
        self.loaded.append((load_dir, tag))
        for group in self.optimizer.param_groups:  # what DeepSpeed's ZeRO-3 universal loader does
            group.update(name="decay", apply_wd=True, weight_decay=0.05)
        return str(Path(load_dir) / tag), torch.load(Path(load_dir) / tag / "client.pt")


def test_load_goes_through_the_universal_folder_and_keeps_this_runs_param_groups(tmp_path):
    info = _checkpoint(tmp_path, 6, world_size=2, zero_stage=3)
    torch.save({"rng": 0}, info.path / "rank_state_00000.pt")
    engine = UniversalEngine(world_size=1, zero_stage=3)
    client, rank_state = ckpt.load_checkpoint(engine, info, convert=Converter())
    assert engine.loaded == [(str(tmp_path), "step_00000006.universal")]
    assert client == {"step": 6} and rank_state == {"rng": 0}  # rank files come from the original folder
    groups = engine.optimizer.param_groups
    assert [(g["name"], g["apply_wd"], g["weight_decay"]) for g in groups] == [
        ("decay", True, 0.05),
        ("no_decay", False, 0.0),
    ]
    # An engine not created for universal loading is refused with the counts named.
    with pytest.raises(ckpt.ResumeError, match="written by 2 processes with ZeRO stage 3; this run has 1"):
        ckpt.load_checkpoint(UniversalEngine(world_size=1, zero_stage=3, universal=False), info)


def test_pruning_drops_the_conversion_of_a_pruned_checkpoint(tmp_path):
    old = _checkpoint(tmp_path, 2, world_size=2, zero_stage=2)
    ckpt.prepare_universal(old, Converter())
    (tmp_path / "step_00000003.universal.tmp").mkdir()  # a killed conversion
    for step in (4, 6):
        _checkpoint(tmp_path, step, world_size=1, zero_stage=2)
    ckpt._prune(tmp_path, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000004", "step_00000006"]


# ----------------------------------------------------------------------------------------------------------------
# the real engine

INSPECT = """
import sys, torch
from videomae.config import load_config
from videomae.engine.deepspeed_setup import full_fp32_params, full_optimizer_state
from videomae.methods.pretrain import build_pretrain_trainer

run = build_pretrain_trainer(load_config(sys.argv[2], sys.argv[3:]))
run.resume()
opt = run.engine.optimizer
torch.save({
    "fp32": full_fp32_params(run.engine),
    "exp_avg": full_optimizer_state(run.engine, "exp_avg"),
    "adam_steps": sorted({int(s["step"]) for s in opt.optimizer.state.values() if "step" in s}),
    "groups": [(g["name"], g["apply_wd"], g["weight_decay"]) for g in opt.param_groups],
    "state": dict(run.state),
    "epoch_draws": run.sampler.global_indices(),
    "next_draws": list(iter(run.sampler)),
}, sys.argv[1])
"""


def inspect_resume(args: list[str], out: Path) -> dict:
    """Build a 1-process run from ``args``, resume it and return what it loaded (in a fresh interpreter)."""
    dump = out / "inspect.pt"
    proc = subprocess.run(
        [sys.executable, "-c", INSPECT, str(dump), str(PRETRAIN_DEMO_YAML), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return torch.load(dump, weights_only=True)


def consolidated(checkpoint: Path, stage: int) -> dict[str, torch.Tensor]:
    """fp32 weights merged from the per-rank files by DeepSpeed's zero_to_fp32 (independent of the conversion)."""
    from videomae.engine.deepspeed_setup import consolidated_fp32_state_dict

    rank0 = {"global_rank": 0, "zero_optimization_stage": lambda self: stage, "module": torch.nn.Module()}
    engine = type("Rank0", (), rank0)()  # a module without frozen parameters: nothing comes from it
    return consolidated_fp32_state_dict(engine, str(checkpoint.parent), checkpoint.name)


def sampler_state(run_dir: Path, step: int) -> dict:
    """The sampler position stored in a checkpoint's client state."""
    path = run_dir / "checkpoints" / ckpt.tag_for(step) / "mp_rank_00_model_states.pt"
    return load_deepspeed_file(path)["sampler"]


@pytest.fixture(scope="module")
def zero2_two_processes(demo, tmp_path_factory) -> tuple[Path, list[str]]:
    """8 steps of ZeRO-2 fp32 on 2 processes, checkpoints at 4 and 8."""
    out = tmp_path_factory.mktemp("zero2_uc") / "run"
    args = pretrain_overrides(demo, out, "deepspeed.zero_stage=2", "train.max_steps=8", "train.save_every=4")
    run_pretrain("torchrun", args, nproc=2)
    return out, args


@pytest.mark.slow
def test_zero2_two_processes_resume_on_one(zero2_two_processes, tmp_path):
    reference, args = zero2_two_processes
    out = tmp_path / "run"
    shutil.copytree(reference / "checkpoints", out / "checkpoints")
    # As if killed right after step 4: the step-8 checkpoint never happened.
    shutil.rmtree(out / "checkpoints/step_00000008")
    one = [a.replace(str(reference), str(out)) for a in args]
    # Same effective batch on one process: 2 micro-batches of 2 per step instead of 2 ranks x 2.
    log = run_pretrain("torchrun", [*one, "train.grad_accum=2", "train.save_every=5", "train.keep_last=3"], nproc=1)
    assert "converting" in log and "resuming a 2-process checkpoint on 1 processes (epoch 0, 16 draws consumed)" in log
    assert "effective batch changes" not in log
    assert f"resumed from {out / 'checkpoints/step_00000004'} at step 4" in log

    universal = out / "checkpoints/step_00000004.universal"
    marker = json.loads((universal / ckpt.COMMIT_FILE).read_text())
    assert marker["source_world_size"] == 2 and marker["source_zero_stage"] == 2
    assert not list((out / "checkpoints").glob("*.tmp")) and not (out / "checkpoints/latest_universal").exists()
    # The run goes on from step 5 and writes 1-process checkpoints.
    resumed, uninterrupted = losses(out), losses(reference)
    assert sorted(resumed) == [5, 6, 7, 8]
    infos = ckpt.list_complete(out / "checkpoints")
    assert [(i.step, i.meta["world_size"]) for i in infos] == [(4, 2), (5, 1), (8, 1)]
    # Sampler positions saved after the resume: 4 draws a step, 24 an epoch (the uninterrupted run's at step 8).
    assert sampler_state(out, 5) == {"epoch": 0, "offset": 20, "seed": 0, "total": 24}
    assert sampler_state(out, 8) == sampler_state(reference, 8) == {"epoch": 1, "offset": 8, "seed": 0, "total": 24}
    # Loss continuity: same clips per step, other masks and augmentation draws, so close to the 2-process run and
    # far below the loss of a fresh start.
    for step in (5, 6, 7, 8):
        assert abs(resumed[step] - uninterrupted[step]) < 0.02 * uninterrupted[step], (resumed, uninterrupted)
    assert resumed[5] < uninterrupted[1] - 0.05, (resumed, uninterrupted)


@pytest.mark.slow
def test_zero2_universal_load_restores_exact_fp32_weights_and_run_state(zero2_two_processes, tmp_path):
    reference, args = zero2_two_processes
    out = tmp_path / "run"
    shutil.copytree(reference / "checkpoints", out / "checkpoints")
    shutil.rmtree(out / "checkpoints/step_00000008")
    one = [a.replace(str(reference), str(out)) for a in args]
    loaded = inspect_resume([*one, "train.grad_accum=2"], out)

    saved = consolidated(out / "checkpoints/step_00000004", stage=2)
    assert set(loaded["fp32"]) <= set(saved)
    for name, value in loaded["fp32"].items():
        assert torch.equal(value, saved[name].reshape(value.shape)), name
    moments = torch.load(out / "checkpoints/step_00000004.universal/zero/encoder.patch_embed.proj.weight/exp_avg.pt")
    assert torch.equal(loaded["exp_avg"]["encoder.patch_embed.proj.weight"], moments["param"].float())
    assert any(v.abs().sum() > 0 for v in loaded["exp_avg"].values())
    assert loaded["adam_steps"] == [4]
    assert loaded["groups"] == [("decay", True, 0.05), ("no_decay", False, 0.0)]
    # Run counters as saved; this rank's batch count re-derived from the global sampler position (16 draws = 8
    # batches of 2 on one rank); the sampler continues right after them.
    assert loaded["state"]["step"] == 4 and loaded["state"]["epoch"] == 0
    assert loaded["state"]["batches_in_epoch"] == 8
    assert loaded["next_draws"] == loaded["epoch_draws"][16:] and len(loaded["next_draws"]) > 0


@pytest.mark.slow
def test_zero3_one_process_resumes_on_two(demo, tmp_path):
    out = tmp_path / "run"
    one = pretrain_overrides(
        demo, out, "deepspeed.zero_stage=3", "train.max_steps=3", "train.save_every=3", "train.grad_accum=2"
    )
    run_pretrain("torchrun", one, nproc=1)
    before = losses(out)
    saved = consolidated(out / "checkpoints/step_00000003", stage=3)
    two = [a for a in one if not a.startswith("train.max_steps") and not a.startswith("train.grad_accum")]
    log = run_pretrain("torchrun", [*two, "train.max_steps=5"], nproc=2)
    assert "resuming a 1-process checkpoint on 2 processes (epoch 0, 12 draws consumed)" in log
    assert "effective batch changes" not in log
    after = losses(out)
    assert sorted(after) == [1, 2, 3, 4, 5] and all(after[s] == before[s] for s in (1, 2, 3))
    assert after[4] < before[1] - 0.02 and after[4] < before[3] + 0.01, after  # goes on down, no restart
    infos = ckpt.list_complete(out / "checkpoints")
    assert [(i.step, i.meta["world_size"], i.meta["zero_stage"]) for i in infos] == [(3, 1, 3), (5, 2, 3)]
    # The weights loaded on 2 ranks and trained on: the step-5 export differs from the step-3 weights, same keys.
    from safetensors.torch import load_file

    final = load_file(out / "export/model.safetensors")
    assert set(saved) <= set(final) and any(not torch.equal(final[k], saved[k]) for k in saved)
