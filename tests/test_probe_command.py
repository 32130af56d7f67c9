"""``videomae probe``: the report equals the probes fitted by hand on the same features, a second call reads the
cached features without building the model, ``random:NAME`` is seeded, bad inputs exit 2, images meet video models
and clips meet image models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_GRID, csv_manifest, randomise_spread_out, write_zero0_run
from PIL import Image
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from videomae.checkpoint import export_weights, load_exported
from videomae.cli import main
from videomae.data import HybridVideoDataset, SourceSpec, collate_clips
from videomae.evaluation.probes import encode_clips, encode_tokens, extract_features, fit_linear_probe, pool_tokens
from videomae.inference.probe_models import ProbeModel, resolve_probe_model
from videomae.models import create_model

PRETRAIN = "pretrain_videomae_tiny_patch16_224"
IMAGE_GRID = dict(img_size=32, patch_size=8, all_frames=1, tubelet_size=1)


@pytest.fixture(scope="module")
def pretrain_export(tmp_path_factory) -> Path:
    """A tiny pretraining export whose run sampled every 2nd frame."""
    model = randomise_spread_out(create_model(PRETRAIN, **TINY_GRID), seed=1)
    path = tmp_path_factory.mktemp("export") / "pretrain.safetensors"
    return export_weights(model, path, {"config": {"data": {"sampling_rate": 2}}})


def _probe(checkpoint, demo: Path, out: Path, *extra: str, train: str = "train.csv") -> int:
    manifests = ["--train", str(demo / train), "--val", str(demo / "val.csv"), "--data-root", str(demo)]
    return main(["probe", str(checkpoint), *manifests, "--out", str(out), "--workers", "0", "--batch-size=8", *extra])


def test_report_equals_the_probe_fitted_by_hand_and_the_cache_skips_the_model(
    demo, pretrain_export, tmp_path, monkeypatch, capsys
):
    assert _probe(pretrain_export, demo, tmp_path / "p", "--kind", "both", "--epochs", "2") == 0
    table = capsys.readouterr().out
    report = json.loads((tmp_path / "p" / "probe.json").read_text())
    linear, attentive = report["results"]
    assert (linear["kind"], attentive["kind"]) == ("linear", "attentive") and "linear" in table
    assert report["clip"]["num_frames"] == 4 and report["clip"]["sampling_rate"] == 2  # model's frames, run's rate
    assert report["clip"]["modality"] == "same" and report["pool"] == "mean"  # no class token
    assert linear["train_samples"] == 24 and linear["val_samples"] == 6 and linear["classes"] == 6

    # the same features and probe by hand: the dataset, the model and fit_linear_probe
    model, _ = load_exported(pretrain_export)
    feats = {}
    for split in ("train", "val"):
        dataset = HybridVideoDataset([SourceSpec(str(demo / f"{split}.csv"), data_root=str(demo))], num_frames=4,
                                     sampling_rate=2, input_size=32, train=False,
                                     label_names=feats.get("names"))  # fmt: skip
        feats["names"] = dataset.label_names
        loader = DataLoader(dataset, batch_size=8, collate_fn=collate_clips)
        feats[split] = extract_features(model, loader)
    expected = fit_linear_probe(*feats["train"], *feats["val"], num_classes=6)
    assert linear["val_top1"] == pytest.approx(expected.accuracy, abs=1e-9)
    assert linear["train_top1"] == pytest.approx(expected.train_accuracy, abs=1e-9)

    # second call: every feature is cached, the model is never built; the same figures
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although the features are cached")

    monkeypatch.setattr(ProbeModel, "load", no_model)
    assert _probe(pretrain_export, demo, tmp_path / "p", "--kind", "linear") == 0
    again = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert all(split["cached"] for split in again["splits"].values())
    assert {**again["results"][0], "seconds": 0} == {**linear, "seconds": 0}
    cached = sorted(p.name for p in (tmp_path / "p" / "features").iterdir())
    assert len(cached) == 2 and all(name.endswith(".safetensors") for name in cached)
    # other clip settings make other features: the model is needed again
    with pytest.raises(AssertionError, match="cached"):
        _probe(pretrain_export, demo, tmp_path / "p", "--sampling-rate", "3")


def _colour_folders(root: Path, split: str, n: int) -> str:
    """Frame folders of one flat colour each, red or blue with random brightness: the colour is the class."""
    gen = np.random.default_rng(len(split))
    rows = []
    for i in range(n):
        label = "red" if i % 2 else "blue"
        folder = root / split / f"{i:02d}"
        folder.mkdir(parents=True)
        pixel = np.zeros(3, np.uint8)
        pixel[0 if label == "red" else 2] = gen.integers(120, 255)
        for f in range(1, 5):
            Image.fromarray(np.tile(pixel, (32, 32, 1))).save(folder / f"img_{f:05d}.jpg")
        rows.append((f"{split}/{i:02d}", label, 4))
    return csv_manifest(root / f"{split}.csv", rows)


def test_a_random_encoder_separates_flat_colours_and_random_is_seeded(tmp_path):
    for split, n in (("train", 8), ("val", 6)):
        _colour_folders(tmp_path, split, n)
    overrides = [a for k, v in TINY_GRID.items() for a in ("--override", f"{k}={v}")]
    assert _probe("random:vit_tiny_patch16_224", tmp_path, tmp_path / "p", *overrides, "--sampling-rate", "1") == 0
    result = json.loads((tmp_path / "p" / "probe.json").read_text())["results"][0]
    assert result["val_top1"] == 1.0 and result["train_top1"] == 1.0 and result["classes"] == 2

    def weights(seed: int) -> dict[str, torch.Tensor]:
        probe = resolve_probe_model("random:vit_tiny_patch16_224", overrides=TINY_GRID, seed=seed)
        return probe.load().model.state_dict()

    before = torch.random.get_rng_state()
    first, same, other = weights(3), weights(3), weights(4)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's random stream is left alone
    assert all(torch.equal(first[k], same[k]) for k in first)
    assert not torch.equal(first["blocks.0.attn.qkv.weight"], other["blocks.0.attn.qkv.weight"])


def test_bad_checkpoints_and_unlabelled_manifests_exit_2(demo, pretrain_export, tmp_path, capsys):
    assert _probe(tmp_path / "missing.safetensors", demo, tmp_path / "p") == 2
    assert "missing.safetensors does not exist" in capsys.readouterr().err
    assert _probe("random:vit_nonexistent", demo, tmp_path / "p") == 2
    assert "unknown model 'vit_nonexistent'" in capsys.readouterr().err
    assert _probe(pretrain_export, demo, tmp_path / "p", train="train_unlabeled.csv") == 2
    err = capsys.readouterr().err
    assert "train_unlabeled.csv: 24 of 24 rows have no label" in err and "labelled" in err
    assert _probe(pretrain_export, demo, tmp_path / "p", "--num-frames", "8") == 2
    assert "takes clips of 4 frames" in capsys.readouterr().err
    plain = tmp_path / "plain.safetensors"
    save_file(create_model(PRETRAIN, **TINY_GRID).state_dict(), str(plain))
    assert _probe(plain, demo, tmp_path / "p") == 2
    assert "plain.safetensors: not a videomae export" in capsys.readouterr().err
    plain.write_bytes(b"not a safetensors file")
    assert _probe(plain, demo, tmp_path / "p") == 2
    assert "plain.safetensors: unreadable safetensors metadata" in capsys.readouterr().err


def test_images_on_video_models_and_clips_on_image_models():
    torch.manual_seed(0)
    video_model = create_model(PRETRAIN, **TINY_GRID).eval()
    image = torch.randn(2, 3, 1, 32, 32)
    tokens = encode_clips(video_model, image)
    assert tokens.shape == (2, 32, 64)  # the image held over the model's 4 frames: its whole grid of 2x4x4 tokens
    assert torch.equal(tokens, encode_tokens(video_model, image.expand(-1, -1, 4, -1, -1)))

    image_model = create_model("vit_tiny_patch16_224", **IMAGE_GRID, num_classes=0).eval()
    clip = torch.randn(2, 3, 5, 32, 32)
    tokens = encode_clips(image_model, clip)
    per_frame = torch.stack([image_model.forward_tokens(clip[:, :, t : t + 1]) for t in range(5)])  # (T, B, N, D)
    assert tokens.shape == (2, 16, 64)
    torch.testing.assert_close(tokens, per_frame.mean(0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="clips of 5 frames for a model of 4 frames"):
        encode_clips(video_model, clip)


def test_pooling_takes_the_class_token_where_there_is_one():
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)  # (B, 1 + 4, D)
    assert torch.equal(pool_tokens(tokens, 4, "auto"), tokens[:, 0])
    assert torch.equal(pool_tokens(tokens, 4, "mean"), tokens[:, 1:].mean(1))
    assert torch.equal(pool_tokens(tokens[:, 1:], 4, "auto"), tokens[:, 1:].mean(1))
    with pytest.raises(ValueError, match="no class token"):
        pool_tokens(tokens[:, 1:], 4, "cls")


def test_a_run_folder_probes_as_its_consolidated_checkpoint(demo, tmp_path):
    model = randomise_spread_out(create_model(PRETRAIN, **TINY_GRID), seed=1)
    section = {"name": PRETRAIN, "overrides": TINY_GRID}
    run = write_zero0_run(tmp_path / "run", model, section, 5, config={"model": section, "data": {"sampling_rate": 2}})
    assert _probe(run, demo, tmp_path / "p") == 0
    report = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert report["checkpoint"]["kind"] == "checkpoint" and report["clip"]["sampling_rate"] == 2
    exports = list((tmp_path / "p" / "features" / "exports").iterdir())
    rebuilt, _ = load_exported(exports[0])
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in model.state_dict().items())


def test_random_twin_of_an_export_has_its_shape_and_other_weights(pretrain_export):
    export, _ = load_exported(pretrain_export)
    twin = resolve_probe_model(f"random:{pretrain_export}", seed=0)
    assert twin.kind == "random" and twin.model_name == PRETRAIN and twin.shape().num_patches == 32
    weights = twin.load().model.state_dict()
    assert {k: v.shape for k, v in weights.items()} == {k: v.shape for k, v in export.state_dict().items()}
    assert not torch.equal(
        weights["encoder.blocks.0.mlp.fc1.weight"], export.state_dict()["encoder.blocks.0.mlp.fc1.weight"]
    )


def _colour_images(root: Path, split: str, n: int) -> str:
    """Image rows (one flat-colour JPEG each): the colour is the class."""
    rows = []
    for i in range(n):
        label = "red" if i % 2 else "blue"
        pixel = np.zeros(3, np.uint8)
        pixel[0 if label == "red" else 2] = 100 + 20 * (i % 7)
        Image.fromarray(np.tile(pixel, (32, 32, 1))).save(root / f"{split}_{i:02d}.jpg")
        rows.append((f"{split}_{i:02d}.jpg", label))
    return csv_manifest(root / f"{split}.csv", rows)


def test_an_image_manifest_is_read_as_one_frame_per_row(tmp_path):
    pytest.importorskip("videomae.data.images", reason="image rows arrive with the image-data work")
    for split, n in (("train", 8), ("val", 6)):
        _colour_images(tmp_path, split, n)
    for name, grid, modality in (("vit_tiny_patch16_224", TINY_GRID, "repeat"), ("vit_image_tiny_patch16_224",
                                 {"img_size": 32, "patch_size": 8}, "same")):  # fmt: skip
        overrides = [a for k, v in {**grid, "num_classes": 0}.items() for a in ("--override", f"{k}={v}")]
        assert _probe(f"random:{name}", tmp_path, tmp_path / name, *overrides) == 0
        report = json.loads((tmp_path / name / "probe.json").read_text())
        assert report["splits"]["val"]["num_frames"] == 1 and report["splits"]["val"]["modality"] == modality
        assert report["results"][0]["val_top1"] == 1.0
