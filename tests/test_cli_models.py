"""``videomae predict / extract-features / visualize / export / info`` through ``main([...])`` on real files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from helpers import EXPORT_LABELS, TINY_GRID, csv_manifest, randomise_spread_out, write_zero0_run
from PIL import Image
from run_helpers import pretrain_overrides, run_pretrain
from safetensors.torch import load_file

from videomae.checkpoint import load_exported
from videomae.cli import main
from videomae.data.decoding import read_frames
from videomae.data.sampling import sample_test_indices
from videomae.data.transforms import EvalTransform
from videomae.inference import load_inference_model, predict_videos
from videomae.models import create_model

TINY_ARGS = [f"--override={k}={v}" for k, v in TINY_GRID.items()]


def test_predict_json_and_text(exports, media, tmp_path, capsys):
    videos = [str(media["h264"]), str(media["frames"])]
    args = ["predict", str(exports["classifier"]), *videos, "--num-segments", "2", "--num-crops", "3"]
    assert main([*args, "--sampling-rate", "2", "--top-k", "3", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    expected = predict_videos(load_inference_model(exports["classifier"]), videos, num_segments=2, num_crops=3,
                              sampling_rate=2)  # fmt: skip
    for got, want in zip(results, expected):
        assert got["path"] == want.path and got["valid"]
        assert [t["class"] for t in got["top_k"]] == [c for c, _ in want.top_k(3)]
        assert [t["name"] for t in got["top_k"]] == [EXPORT_LABELS[c] for c, _ in want.top_k(3)]
        assert [t["prob"] for t in got["top_k"]] == pytest.approx([p for _, p in want.top_k(3)], abs=1e-6)
    # text output, class names from --labels, an unreadable video -> exit status 1
    (tmp_path / "labels.txt").write_text("".join(f"class_{i}\n" for i in range(5)))
    code = main(["predict", str(exports["classifier"]), str(media["junk"]), videos[0], "--top-k", "2", "--labels",
                 str(tmp_path / "labels.txt")])  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert code == 1 and out[0] == f"{media['junk']}: unreadable, no prediction" and out[1] == videos[0]
    assert len(out) == 4 and out[2].startswith("   1. 0.") and "class_" in out[2]
    assert main(["predict", str(exports["pretrain"]), videos[0]]) == 2
    assert "not a classifier" in capsys.readouterr().err


def test_extract_features_from_an_export_and_from_a_release_file(exports, media, tmp_path, capsys):
    manifest = csv_manifest(tmp_path / "m.csv", [(media["h264"].name, "a"), (media["frames"].relative_to(
        media["h264"].parent), "b")])  # fmt: skip
    common = [manifest, "--data-root", str(media["h264"].parent), "--stride", "16", "--batch-size", "3"]
    assert main(["extract-features", str(exports["pretrain"]), common[0], str(tmp_path / "a"), *common[1:]]) == 0
    assert "wrote features of 2 videos (7 clips)" in capsys.readouterr().out  # 64 and 40 frames, span 4, stride 16
    with open(tmp_path / "a" / "features.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["file"], r["num_clips"]) for r in rows] == [("000000_h264.npy", "4"), ("000001_frames_clip_a.npy", "3")]
    # The same encoder weights in the release's layout, loaded by name: the same features.
    model, _ = load_exported(exports["pretrain"])
    torch.save({"model": model.state_dict()}, tmp_path / "checkpoint-799.pth")
    code = main(["extract-features", str(tmp_path / "checkpoint-799.pth"), common[0], str(tmp_path / "b"),
                 *common[1:], "--model", "pretrain_videomae_tiny_patch16_224", *TINY_ARGS])  # fmt: skip
    assert code == 0
    for row in rows:
        np.testing.assert_array_equal(np.load(tmp_path / "a" / row["file"]), np.load(tmp_path / "b" / row["file"]))
    assert main(["extract-features", str(exports["pretrain"]), manifest, str(tmp_path / "c"), "--override",
                 "img_size=64"]) == 2  # fmt: skip
    assert "--override needs --model" in capsys.readouterr().err


def test_visualize_writes_a_picture_whose_first_row_is_the_clip(exports, media, tmp_path, capsys):
    out = tmp_path / "pictures" / "recon.png"
    assert main(["visualize", str(exports["pretrain"]), str(media["h264"]), str(out), "--sampling-rate", "3"]) == 0
    image = np.asarray(Image.open(out))
    assert image.shape == (3 * 32, 4 * 32, 3)  # rows: original, masked, reconstruction; 4 frames of 32 px
    clip = sample_test_indices(64, 4, 3)[0]  # the centred clip; its 4 frames are all shown
    original = EvalTransform(32).crops(read_frames(media["h264"], clip))[0]  # (T, C, 32, 32) uint8
    expected = original.permute(2, 0, 3, 1).reshape(32, 4 * 32, 3).numpy()  # frames side by side
    assert np.abs(image[:32].astype(int) - expected.astype(int)).max() <= 1
    grey = (image[32:64] == 128).all(axis=-1).mean()  # hidden tubes are drawn grey: 14 of the 16 (90%, rounded)
    assert 14 / 16 - 0.02 <= grey <= 14 / 16 + 0.02
    assert main(["visualize", str(exports["classifier"]), str(media["h264"]), str(out)]) == 2
    assert "needs a pretraining checkpoint" in capsys.readouterr().err


def test_export_a_checkpoint_folder_then_info(tmp_path, capsys):
    pretrain = randomise_spread_out(
        create_model("pretrain_videomae_tiny_patch16_224", **TINY_GRID, decoder_depth=2), seed=3
    )
    section = {"name": "pretrain_videomae_tiny_patch16_224", "decoder_depth": 2, "drop_path_rate": None,
               "with_cp": False, "overrides": TINY_GRID}  # fmt: skip
    run = write_zero0_run(tmp_path / "run", pretrain, section, 40)
    assert main(["export", str(run), str(tmp_path / "p.safetensors")]) == 0
    tensors = len(pretrain.state_dict())
    assert f"exported {tensors} fp32 tensors of pretrain_videomae_tiny_patch16_224 (step 40" in capsys.readouterr().out
    rebuilt, meta = load_exported(tmp_path / "p.safetensors")
    assert meta["step"] == 40 and meta["config"]["model"] == section and meta["model_config"]["decoder_depth"] == 2
    for key, value in pretrain.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value)

    # a fine-tuning run: classifier fields of its model section, class count from the head, class names stored
    classifier = randomise_spread_out(
        create_model("vit_tiny_patch16_224", **TINY_GRID, num_classes=5, use_mean_pooling=False), 4
    )
    section = {"name": "vit_tiny_patch16_224", "use_mean_pooling": False, "fc_drop_rate": 0.0, "init_scale": None,
               "drop_path_rate": 0.1, "with_cp": False, "overrides": TINY_GRID}  # fmt: skip
    run = write_zero0_run(tmp_path / "ft", classifier, section, 7, label_names=EXPORT_LABELS)
    assert main(["export", str(run / "checkpoints" / "step_00000007"), str(tmp_path / "c.safetensors")]) == 0
    rebuilt, meta = load_exported(tmp_path / "c.safetensors")
    assert meta["label_names"] == EXPORT_LABELS and meta["model_config"]["num_classes"] == 5
    assert meta["model_config"]["drop_path_rate"] == 0.1 and not meta["model_config"]["use_mean_pooling"]
    videos = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(videos), classifier(videos))
    capsys.readouterr()

    assert main(["info", str(tmp_path / "c.safetensors")]) == 0
    text = capsys.readouterr().out
    params = sum(p.numel() for p in classifier.state_dict().values())
    assert "model:         vit_tiny_patch16_224 (metadata)" in text and f"parameters:    {params:,}" in text
    assert "token grid:    (2, 4, 4); fixed sinusoid" in text and "classes:       5" in text
    assert f"label names:   {', '.join(EXPORT_LABELS)}" in text and "step: 7" in text
    # an original-release file without metadata: the architecture is read off the shapes
    torch.save({"module": pretrain.state_dict()}, tmp_path / "release.pth")
    assert main(["info", str(tmp_path / "release.pth"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model_name"] == "pretrain_videomae_tiny_patch16_224" and not info["name_from_metadata"]
    assert (info["width"], info["depth"], info["decoder_depth"], info["patch_size"], info["tubelet_size"]) == (
        64, 2, 2, 8, 2)  # fmt: skip
    assert info["num_params"] == sum(p.numel() for p in pretrain.state_dict().values())

    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "x.safetensors")]) == 2
    assert f"{tmp_path / 'nothing'} does not exist" in capsys.readouterr().err
    (tmp_path / "empty_run").mkdir()
    assert main(["export", str(tmp_path / "empty_run"), str(tmp_path / "x.safetensors")]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_export_of_a_real_zero2_checkpoint_equals_the_runs_own_export(tmp_path, capsys):
    from videomae.data.demo import DemoConfig, write_demo_dataset

    demo = tmp_path / "demo"
    write_demo_dataset(demo, DemoConfig(num_train=8, num_val=2, frames=8), workers=1)
    out = tmp_path / "run"
    run_pretrain(
        "python", pretrain_overrides(demo, out, "train.max_steps=2", "deepspeed.zero_stage=2", "precision=bf16")
    )
    assert main(["export", str(out), str(tmp_path / "again.safetensors")]) == 0
    capsys.readouterr()
    ours, theirs = load_file(tmp_path / "again.safetensors"), load_file(out / "export" / "model.safetensors")
    assert sorted(ours) == sorted(theirs)
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    assert main(["info", str(tmp_path / "again.safetensors")]) == 0
    assert "pretrain_videomae_tiny_patch16_224 (metadata)" in capsys.readouterr().out
