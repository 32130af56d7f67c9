"""MAE-CLIP through the real launcher and DeepSpeed engine on the captioned demo set: each loss combination
trains on 2 processes with a falling loss, the exports load as the vision classifier and the whole model, a killed
run resumes with the same losses, and rows without captions are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from run_helpers import ROOT, kill_at_first_checkpoint, launch_pretrain, losses, run_pretrain
from safetensors.torch import load_file

from videomae.checkpoint import load_exported
from videomae.checkpoint_info import summarize_checkpoint
from videomae.checkpoint_maeclip import load_maeclip
from videomae.config import ConfigError, ManifestSource, load_config
from videomae.engine import checkpointing as ckpt
from videomae.engine.data_setup import hybrid_dataset
from videomae.engine.export import export_checkpoint
from videomae.methods.maeclip import check_captions, warn_cut_captions
from videomae.text import load_tokenizer

RECIPE = ROOT / "videomae/recipes/pretrain/maeclip_demo.yaml"


def maeclip_overrides(demo: Path, out: Path, *extra: str) -> list[str]:
    """The demo recipe shrunk to a tiny model on 32 px, 4-frame clips, output in ``out``."""
    return [
        f"output_dir={out}", f"data.manifests=[{demo}/train.csv]",
        f"data.data_root={demo}", "data.input_size=32", "data.num_frames=4", "data.num_workers=0",
        "model.overrides={img_size: 32, patch_size: 8, all_frames: 4, embed_dim: 32, depth: 1, num_heads: 2}",
        "model.embed_dim=16", "model.decoder_embed_dim=16", "model.decoder_num_heads=2", "text.context_length=12",
        "text.width=16", "text.depth=1", "train.batch_size=4", "train.log_every=1", "train.warmup_steps=2",
        "train.lr=0.05", "zero_shot.val=null", *extra,
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("clip", "mae", "mlm"), [(1, 0, 0), (1, 0.5, 0), (1, 0.5, 0.5)])
def test_each_loss_combination_trains_on_two_processes(demo, tmp_path, clip, mae, mlm):
    out = tmp_path / "run"
    full = mlm > 0
    extra = [f"loss.clip={clip}", f"loss.mae={mae}", f"loss.mlm={mlm}", "train.max_steps=20", "train.save_every=20"]
    if full:  # one run also checks the end-of-training evaluation
        extra += [f"zero_shot.val={demo}/val.csv", "zero_shot.compare_init=true"]
    log = run_pretrain("deepspeed", maeclip_overrides(demo, out, *extra), nproc=2, config=RECIPE)
    assert "2 processes" in log
    seq = losses(out)
    assert sorted(seq) == list(range(1, 21))
    first, last = sum(seq[s] for s in range(1, 6)) / 5, sum(seq[s] for s in range(16, 21)) / 5
    assert last < 0.9 * first, seq
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"loss_clip", "loss_mae", "loss_mlm"} & set(record) == {"loss_clip"} | ({"loss_mae"} if mae else set()) | (
        {"loss_mlm"} if mlm else set()
    )
    vision, meta = load_exported(out / "export/model.safetensors")  # the probe's view: a registered classifier
    assert vision.model_config["name"] == "vit_tiny_patch16_224" and meta["method"] == "maeclip"
    model, info = load_maeclip(out)
    torch.testing.assert_close(model.vision.state_dict()["blocks.0.mlp.fc1.weight"],
                               vision.state_dict()["blocks.0.mlp.fc1.weight"])  # fmt: skip
    assert (model.decoder is not None) == (mae > 0) and (model.mlm_head is not None) == (mlm > 0)
    if full:
        report = json.loads((out / "zero_shot.json").read_text())
        assert report["step"] == 20 and report["trained"]["num_clips"] == 6
        assert report["trained"]["chance"] == pytest.approx(1 / 6) and "init" in report


@pytest.mark.slow
def test_killed_run_resumes_with_the_same_losses(demo, tmp_path):
    args = ["loss.mae=0.5", "loss.mlm=0.5", "train.max_steps=10", "train.save_every=2", "deepspeed.zero_stage=0"]
    reference = tmp_path / "reference"
    run_pretrain("python", maeclip_overrides(demo, reference, *args), config=RECIPE)
    # `videomae export` of a checkpoint (its config names towers, not a model) is the run's own vision export.
    again = export_checkpoint(reference, tmp_path / "again.safetensors").path
    ours, theirs = load_file(again), load_file(reference / "export/model.safetensors")
    assert sorted(ours) == sorted(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert summarize_checkpoint(again).method == "maeclip"
    whole = summarize_checkpoint(reference / "export/maeclip.safetensors")
    assert whole.method == "maeclip" and not whole.kind.startswith("pretraining")
    out = tmp_path / "killed"
    kill_at_first_checkpoint(launch_pretrain("python", maeclip_overrides(demo, out, *args), config=RECIPE), out)
    killed_at = ckpt.find_latest(out / "checkpoints")
    assert killed_at is not None and killed_at.step < 10, "the run finished before it could be killed"
    run_pretrain("python", maeclip_overrides(demo, out, *args), config=RECIPE)
    assert losses(out) == losses(reference)


def test_rows_without_captions_are_refused_by_manifest_and_line(tmp_path):
    manifest = tmp_path / "broken.csv"  # rows are checked before any clip is read: the videos need not exist
    manifest.write_text("path,label,text\na.mp4,square_up,a square\nb.mp4,disc_up,\nc.mp4,disc_up,a disc\n")
    cfg = load_config(RECIPE, [f"data.data_root={tmp_path}"])
    dataset = hybrid_dataset([ManifestSource(str(manifest))], cfg.data, return_text=True)
    with pytest.raises(ConfigError, match=rf"^data.manifests: 1 of 3 rows have no caption \(e.g. {manifest}:3\)"):
        check_captions(dataset, "data.manifests")
    manifest.write_text("path,label,text\na.mp4,square_up,a square\n")
    check_captions(hybrid_dataset([ManifestSource(str(manifest))], cfg.data, return_text=True), "data.manifests")


def test_captions_longer_than_the_context_are_counted_and_named(tmp_path, caplog):
    manifest = tmp_path / "long.csv"
    long = "a video of a triangle drifting down, coloured green"  # 17 tokens of the packaged vocabulary
    manifest.write_text(f'path,label,text\na.mp4,triangle_down,"{long}"\nb.mp4,disc_up,a disc\n')
    cfg = load_config(RECIPE, [f"data.data_root={tmp_path}"])
    dataset = hybrid_dataset([ManifestSource(str(manifest))], cfg.data, return_text=True)
    needed = load_tokenizer(None, 64).token_counts([long])[0]
    assert warn_cut_captions(dataset, load_tokenizer(None, needed), "data.manifests") == 0
    with caplog.at_level("WARNING"):
        assert warn_cut_captions(dataset, load_tokenizer(None, needed - 1), "data.manifests") == 1
    assert (f"1 of 2 captions are longer than text.context_length={needed - 1} tokens" in caplog.text
            and f"{manifest}:2" in caplog.text and f"raise text.context_length to {needed}" in caplog.text)  # fmt: skip
