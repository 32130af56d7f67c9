"""The real DeepSpeed engine on CPU (gloo), the real tiny model, masks, loss and demo data, through
``launch/pretrain.py`` under ``python``, ``torchrun`` and the ``deepspeed`` launcher."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from helpers import load_deepspeed_file
from run_helpers import PRETRAIN_DEMO_YAML, launch_pretrain, losses, pretrain_overrides, run_pretrain
from safetensors.torch import load_file

from videomae.config import ConfigError, load_config
from videomae.engine import checkpointing as ckpt
from videomae.engine.checkpointing import find_resume_checkpoint
from videomae.models import create_model


@pytest.mark.slow
def test_deepspeed_launcher_zero3_bf16_two_processes_loss_goes_down(demo, tmp_path):
    out = tmp_path / "run"
    args = pretrain_overrides(demo, out, "deepspeed.zero_stage=3", "precision=bf16", "train.max_steps=16",
                              "train.save_every=8", "train.picture_every=8", "train.picture_clips=2")  # fmt: skip
    log = run_pretrain("deepspeed", args, nproc=2)
    assert "2 processes" in log and "DeepSpeed ZeRO-3 bf16" in log
    seq = losses(out)
    assert sorted(seq) == list(range(1, 17))
    first, last = sum(seq[s] for s in (1, 2, 3)) / 3, sum(seq[s] for s in (14, 15, 16)) / 3
    assert last < 0.9 * first, seq
    assert [i.step for i in ckpt.list_complete(out / "checkpoints")] == [8, 16]
    assert ckpt.find_latest(out / "checkpoints").meta["zero_stage"] == 3
    # Consolidated fp32 export of the partitioned model: every parameter, full shapes.
    weights = load_file(out / "export/model.safetensors")
    cfg = load_config(PRETRAIN_DEMO_YAML, args)
    reference = create_model(cfg.model.name, **cfg.model.create_kwargs()).state_dict()
    params = {k for k in reference if not k.endswith("pos_embed")}  # fixed sinusoid tables are buffers
    assert params <= set(weights)
    assert all(weights[k].dtype == torch.float32 and weights[k].shape == reference[k].shape for k in params)
    # Pictures: 2 clips x 3 rows (original, masked, reconstruction) of 32 px, 4 frames wide.
    from PIL import Image

    pictures = sorted((out / "pictures").glob("*.png"))
    assert [p.name for p in pictures] == ["step_00000000.png", "step_00000008.png", "step_00000016.png"]
    assert Image.open(pictures[-1]).size == (4 * 32, 2 * 3 * 32)
    saved = load_config(out / "config.yaml")
    assert saved == cfg


@pytest.fixture(scope="module")
def zero2_run(demo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zero2") / "run"
    run_pretrain(
        "torchrun",
        pretrain_overrides(demo, out, "deepspeed.zero_stage=2", "train.max_steps=6", "train.save_every=3"),
        nproc=2,
    )
    return out


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2])
def test_zero_stages_two_processes(stage, demo, tmp_path, zero2_run):
    if stage == 2:
        out = zero2_run
    else:
        out = tmp_path / "run"
        run_pretrain(
            "torchrun",
            pretrain_overrides(
                demo, out, "deepspeed.zero_stage=1", "train.max_steps=6", "train.save_every=3", "train.grad_accum=2"
            ),
            2,
        )
    seq = losses(out)
    assert sorted(seq) == list(range(1, 7)) and all(v == v and 0 < v < 10 for v in seq.values())
    infos = ckpt.list_complete(out / "checkpoints")
    assert [(i.step, i.meta["world_size"], i.meta["zero_stage"]) for i in infos] == [(3, 2, stage), (6, 2, stage)]
    assert len(list((out / "checkpoints/step_00000006").glob("zero_pp_rank_*optim_states.pt"))) == 2


@pytest.mark.slow
def test_checkpoint_killed_mid_write_is_ignored_and_resume_is_exact(zero2_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(zero2_run, out)
    cfg = yaml_overrides_from(out)
    # The step-6 checkpoint as a kill mid-write leaves it: still under its temporary tag, no commit marker.
    os.rename(out / "checkpoints/step_00000006", out / "checkpoints/step_00000006.tmp")
    os.remove(out / "checkpoints/step_00000006.tmp" / ckpt.COMMIT_FILE)
    (out / "metrics.jsonl").write_text("")
    log = run_pretrain("torchrun", cfg, nproc=2)
    assert "resumed from" in log and "step_00000003" in log
    assert losses(out) == {s: v for s, v in losses(zero2_run).items() if s > 3}  # bit-identical in fp32


def yaml_overrides_from(out: Path) -> list[str]:
    """Overrides reproducing the run in ``out`` exactly (its saved config, flattened)."""
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    saved["output_dir"] = str(out)
    return [f"{k}={json.dumps(v)}" for k, v in saved.items()]


@pytest.mark.slow
def test_killed_run_resumes_with_the_same_losses(demo, tmp_path):
    # One process, ZeRO-0, a loader worker (augmentation seeded per sample, not per worker).
    args = ["train.max_steps=12", "train.save_every=2", "data.num_workers=1", "deepspeed.zero_stage=0"]
    reference = tmp_path / "reference"
    run_pretrain("python", pretrain_overrides(demo, reference, *args))
    out = tmp_path / "killed"
    proc = launch_pretrain("python", pretrain_overrides(demo, out, *args))
    deadline = time.time() + 300
    while ckpt.find_latest(out / "checkpoints") is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    killed_at = ckpt.find_latest(out / "checkpoints")
    assert killed_at is not None and killed_at.step < 12, "the run finished before it could be killed"
    run_pretrain("python", pretrain_overrides(demo, out, *args))
    assert losses(out) == losses(reference)


@pytest.mark.slow
def test_nonfinite_loss_is_skipped_counted_and_stops_the_run_when_repeated(demo, tmp_path):
    # tests/nonfinite_pretrain.py: the real method, its loss made NaN once at step 2 (the retried batch is real)
    double = {"script": "tests/nonfinite_pretrain.py", "env": {"NONFINITE_AT": "2"}}
    out = tmp_path / "nan"
    proc = launch_pretrain("python", pretrain_overrides(demo, out, "train.max_steps=3", "train.save_every=3"), **double)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-4000:]
    assert "step 2: non-finite loss/gradient, skipped (1 in a row)" in log
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert [r["nonfinite_skipped"] for r in records] == [0, 1, 1]
    assert all(r["loss"] == r["loss"] for r in records)  # every logged step is finite
    stop = pretrain_overrides(demo, tmp_path / "stop", "train.max_steps=3", "train.max_nonfinite_steps=1")
    proc = launch_pretrain("python", stop, **double)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0 and "NonFiniteError: 1 consecutive non-finite steps" in output


def test_the_retired_nan_hook_key_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match=r"^train.inject_nan_at: no longer a config key \(a testing hook"):
        load_config(PRETRAIN_DEMO_YAML, ["train.inject_nan_at=[2]"])


def test_auto_resume_never_replaces_an_explicit_init(tmp_path):
    root = tmp_path / "checkpoints"
    (root / "step_00000004").mkdir(parents=True)
    (root / "step_00000004" / ckpt.COMMIT_FILE).write_text(json.dumps({"step": 4, "init": "a.safetensors"}))
    same = load_config(PRETRAIN_DEMO_YAML, [f"output_dir={tmp_path}", "init=a.safetensors"])
    assert find_resume_checkpoint(same, root).step == 4
    other = load_config(PRETRAIN_DEMO_YAML, [f"output_dir={tmp_path}", "init=b.safetensors"])
    with pytest.raises(RuntimeError, match="auto-resume never replaces an explicit init"):
        find_resume_checkpoint(other, root)
    assert find_resume_checkpoint(load_config(PRETRAIN_DEMO_YAML, ["resume=never"]), root) is None


@pytest.mark.slow
def test_usr1_checkpoints_and_stops_then_the_rerun_finishes(demo, tmp_path):
    """What the sbatch trap relies on: SIGUSR1 -> checkpoint at the current step, exit 0; rerun resumes."""
    out = tmp_path / "preempted"
    args = pretrain_overrides(demo, out, "train.max_steps=400", "train.save_every=1000", "train.log_every=1")
    proc = launch_pretrain("python", args)
    deadline = time.time() + 300
    while not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().count("\n") >= 3):
        assert proc.poll() is None and time.time() < deadline, "run ended before it could be signalled"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGUSR1)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]
    assert "stopped at step" in output
    stopped = ckpt.find_latest(out / "checkpoints")
    assert stopped is not None and 3 <= stopped.step < 400
    assert not (out / "export").exists()  # no export for an interrupted run
    log = run_pretrain("python", [*args, "train.max_steps=" + str(stopped.step + 2)])
    assert f"resumed from {stopped.path}" in log
    assert max(losses(out)) == stopped.step + 2


class _Payload:
    marker: Path

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.slow
def test_resume_refuses_a_tampered_deepspeed_file(zero2_run, tmp_path):
    # DeepSpeed's own loader unpickles with weights_only=False; ours wraps it, so the payload never runs.
    out = tmp_path / "run"
    shutil.copytree(zero2_run, out)
    _Payload.marker = tmp_path / "pwned"
    states = out / "checkpoints/step_00000006/mp_rank_00_model_states.pt"
    torch.save({**load_deepspeed_file(states), "payload": _Payload()}, states)
    proc = launch_pretrain("torchrun", [*yaml_overrides_from(out), "train.max_steps=8"], nproc=2)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0
    assert f"{states}: refused to unpickle" in output, output[-3000:]
    assert not _Payload.marker.exists()
