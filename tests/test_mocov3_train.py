"""MoCo v3 end to end: the demo recipes (images and clips) trained 20 steps by ``deepspeed --num_gpus 2`` on CPU,
the export and the momentum encoder's export, the frozen patch projection after training, and a run resumed from
its middle checkpoint that repeats the uninterrupted losses bit for bit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from run_helpers import launch_pretrain, losses
from safetensors.torch import load_file

from videomae.checkpoint import load_exported
from videomae.checkpoint_info import summarize_checkpoint
from videomae.config import load_config
from videomae.engine.export import export_checkpoint
from videomae.inference.probe_models import resolve_probe_model
from videomae.methods.mocov3 import MocoV3Method
from videomae.recipes import resolve


def moco_args(demo: Path, out: Path, frames: int, *extra: str) -> list[str]:
    """A tiny model and batch on the demo set (24 videos: one step of 12 videos x 2 processes is an epoch)."""
    tubelet = 2 if frames > 1 else 1
    return [
        f"output_dir={out}", f"data.manifests=[{demo}/train_unlabeled.csv]", f"data.data_root={demo}",
        "data.input_size=32", f"data.num_frames={frames}", "data.num_workers=0",
        f"model.overrides={{img_size: 32, patch_size: 8, all_frames: {frames}, tubelet_size: {tubelet}, "
        "embed_dim: 32, depth: 1, num_heads: 2}",
        "moco.mlp_dim=64", "moco.proj_dim=16", "train.batch_size=12", "train.max_steps=20", "train.log_every=1",
        "train.warmup_steps=2", "train.lr=0.02", *extra,
    ]  # fmt: skip


def run(recipe: str, args: list[str]) -> str:
    """``deepspeed --num_gpus 2 launch/pretrain.py --config RECIPE ARGS`` to the end; its output."""
    proc = launch_pretrain("deepspeed", args, nproc=2, config=resolve(recipe, ("pretrain",)))
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-4000:]
    return output


def assert_offline_export_is_the_runs(out: Path, tmp: Path) -> None:
    """``videomae export`` of the final checkpoint equals the run's own export bit for bit, and says it is MoCo's."""
    again = export_checkpoint(out, tmp / "again.safetensors").path
    ours, theirs = load_file(again), load_file(out / "export/model.safetensors")
    assert sorted(ours) == sorted(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    summary = summarize_checkpoint(again)
    assert summary.method == "mocov3" and summary.kind == "encoder"


def assert_falls(seq: dict[int, float]) -> None:
    assert sorted(seq) == list(range(1, 21))
    first, last = sum(seq[s] for s in (1, 2, 3)) / 3, sum(seq[s] for s in (18, 19, 20)) / 3
    assert last < 0.9 * first, seq


@pytest.fixture(scope="module")
def image_run(demo, tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("mocov3") / "images"
    args = moco_args(demo, out, 1, "train.save_every=10", "moco.export_momentum=true")
    log = run("mocov3_demo", args)
    assert "2 processes" in log and "DeepSpeed ZeRO-2 fp32" in log
    return out, args


@pytest.mark.slow
def test_image_demo_trains_exports_the_backbone_and_keeps_the_patch_projection(image_run):
    out, args = image_run
    assert_falls(losses(out))
    model, info = load_exported(out / "export/model.safetensors")
    assert info["method"] == "mocov3" and model.model_config["name"] == "vit_tiny_patch16_224"
    assert model(torch.zeros(2, 3, 1, 32, 32)).shape == (2, 32)  # a classifier without a head: pooled features
    momentum, _ = load_exported(out / "export/momentum.safetensors")
    start = MocoV3Method(load_config(resolve("mocov3_demo", ("pretrain",)), args), None, None).build_model()
    trained, lagging, initial = model.state_dict(), momentum.state_dict(), start.backbone.state_dict()
    patch, fc1 = "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight"
    assert torch.equal(trained[patch], initial[patch]) and torch.equal(lagging[patch], initial[patch])  # frozen
    assert not torch.equal(trained[fc1], initial[fc1])
    # The momentum encoder lies between where both started and where the query encoder is.
    moved, behind = (lagging[fc1] - initial[fc1]).norm(), (trained[fc1] - initial[fc1]).norm()
    assert 0 < moved < behind


@pytest.mark.slow
def test_offline_export_and_probe_of_the_run_folder_are_the_backbone(image_run, tmp_path):
    out, _ = image_run
    assert_offline_export_is_the_runs(out, tmp_path)
    bare = tmp_path / "no_export"  # a run folder without its export: the probe consolidates the newest checkpoint
    shutil.copytree(out, bare, ignore=shutil.ignore_patterns("export"))
    probe = resolve_probe_model(bare, exports=tmp_path / "cache")
    assert probe.kind == "checkpoint" and probe.metadata["method"] == "mocov3"
    model = probe.load().model
    theirs = load_file(out / "export/model.safetensors")
    assert sorted(model.state_dict()) == sorted(theirs)
    assert all(torch.equal(model.state_dict()[k].float(), theirs[k]) for k in theirs)


@pytest.mark.slow
def test_resumed_from_the_middle_checkpoint_the_losses_repeat_bit_for_bit(image_run, tmp_path):
    reference, args = image_run
    out = tmp_path / "resumed"
    shutil.copytree(reference, out)
    shutil.rmtree(out / "checkpoints/step_00000020")  # as if killed after the step-10 checkpoint
    shutil.rmtree(out / "export")
    (out / "metrics.jsonl").write_text("")
    log = run("mocov3_demo", [a if not a.startswith("output_dir=") else f"output_dir={out}" for a in args])
    assert "resumed from" in log and "step_00000010" in log
    assert losses(out) == {s: v for s, v in losses(reference).items() if s > 10}


@pytest.mark.slow
def test_video_demo_trains_on_clips_in_bf16_zero1(demo, tmp_path):
    out = tmp_path / "clips"
    log = run("mocov3_video_demo", moco_args(demo, out, 4, "precision=bf16", "deepspeed.zero_stage=1",
                                             "train.save_every=20"))  # fmt: skip
    assert "DeepSpeed ZeRO-1 bf16" in log
    assert_falls(losses(out))
    model, _ = load_exported(out / "export/model.safetensors")
    assert model.model_config["all_frames"] == 4 and model.model_config["use_mean_pooling"]
    # The frozen patch projection (no optimizer holds it; ZeRO-1 saves it nowhere) is exported as the bf16 module
    # held it: the seeded initial projection rounded to bf16.
    cfg = load_config(resolve("mocov3_video_demo", ("pretrain",)), moco_args(demo, out, 4, "precision=bf16"))
    initial = MocoV3Method(cfg, None, None).build_model().backbone.patch_embed.proj.weight.detach()
    assert torch.equal(model.patch_embed.proj.weight, initial.bfloat16().float())
    assert_offline_export_is_the_runs(out, tmp_path)
