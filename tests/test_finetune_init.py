"""Fine-tuning initialisation: encoder weights from a pretraining export, heads remapped by class name, fresh or
kept as ``init_label_map`` says (no DeepSpeed here; the run calls the same function)."""

from __future__ import annotations

import pytest
import torch

from videomae.checkpoint import export_weights
from videomae.config import ConfigError
from videomae.methods.finetune_init import checkpoint_class_names, init_classifier
from videomae.models import create_model

TINY = dict(img_size=32, patch_size=8, all_frames=4)
PRETRAIN = dict(encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2, decoder_embed_dim=32,
                decoder_num_heads=2, decoder_depth=1, **TINY)  # fmt: skip
SOURCE_CLASSES = ["abseiling", "Playing_Guitar", "zumba", "yoga"]
TARGET_CLASSES = ["yoga", "surfing water", "playing guitar"]  # rows 3, fresh, 1 of the source head


def _classifier(num_classes: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("vit_tiny_patch16_224", num_classes=num_classes, init_scale=1.0, **TINY)


def test_pretraining_export_fills_the_encoder_and_leaves_a_fresh_head(tmp_path) -> None:
    torch.manual_seed(0)
    pretrain = create_model("pretrain_videomae_tiny_patch16_224", **PRETRAIN)
    path = export_weights(pretrain, tmp_path / "pretrain.safetensors", {"step": 10})
    model = _classifier(len(TARGET_CLASSES), seed=1)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = init_classifier(model, path, "auto", TARGET_CLASSES)
    encoder = pretrain.state_dict()
    state = model.state_dict()
    blocks = [k for k in state if k.startswith(("blocks.", "patch_embed."))]
    assert len(blocks) > 10
    for key in blocks:
        assert torch.equal(state[key], encoder["encoder." + key]), key
    for key in ("head.weight", "head.bias", "fc_norm.weight"):
        assert torch.equal(state[key], fresh[key]), key  # no head in a pretraining export; fc_norm starts fresh
    assert set(report.missing) == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    assert any(k.startswith("decoder.") for k in report.unexpected)
    assert report.remapped_classes == 0 and report.source == str(path)


def test_classifier_export_with_other_classes_is_remapped_by_name(tmp_path) -> None:
    source = _classifier(len(SOURCE_CLASSES), seed=0)
    path = export_weights(source, tmp_path / "k4.safetensors", {"label_names": SOURCE_CLASSES})
    model = _classifier(len(TARGET_CLASSES), seed=1)
    fresh_row = model.head.weight[1].detach().clone()
    report = init_classifier(model, path, "auto", TARGET_CLASSES)
    assert report.remapped_classes == 2 and report.unmatched_classes == ["surfing water"]
    assert torch.equal(model.head.weight[0], source.head.weight[3]) and model.head.bias[0] == source.head.bias[3]
    assert torch.equal(model.head.weight[2], source.head.weight[1]) and model.head.bias[2] == source.head.bias[1]
    assert torch.equal(model.head.weight[1], fresh_row)
    assert torch.equal(model.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)
    assert checkpoint_class_names({"videomae": '{"label_names": ["a", "b"]}'}) == ["a", "b"]
    assert checkpoint_class_names({"id2label": {"1": "b", "0": "a"}}) == ["a", "b"]
    assert checkpoint_class_names({}) is None


def test_label_file_names_the_head_rows_of_a_checkpoint_without_names(tmp_path) -> None:
    source = _classifier(len(SOURCE_CLASSES), seed=0)
    (tmp_path / "labels.txt").write_text("".join(f"{name}\n" for name in SOURCE_CLASSES))
    model = _classifier(len(TARGET_CLASSES), seed=1)
    torch.save({"module": source.state_dict()}, tmp_path / "release.pth")  # the original release's layout
    report = init_classifier(model, tmp_path / "release.pth", str(tmp_path / "labels.txt"), TARGET_CLASSES)
    assert report.remapped_classes == 2
    assert torch.equal(model.head.weight[0], source.head.weight[3])
    with pytest.raises(ConfigError, match="init_label_map: .*missing.txt"):
        init_classifier(model, tmp_path / "release.pth", str(tmp_path / "missing.txt"), TARGET_CLASSES)
    with pytest.raises(ConfigError, match="init_label_map: .* bare integers"):
        init_classifier(model, tmp_path / "release.pth", str(tmp_path / "labels.txt"), None)


@pytest.mark.parametrize("mode", ["auto", "fresh", "keep"])
def test_head_without_names_is_fresh_unless_kept(tmp_path, mode) -> None:
    source = _classifier(3, seed=0)
    torch.save(source.state_dict(), tmp_path / "same_size.pth")
    model = _classifier(3, seed=1)
    fresh = model.head.weight.detach().clone()
    report = init_classifier(model, tmp_path / "same_size.pth", mode, ["a", "b", "c"])
    expected = source.head.weight if mode == "keep" else fresh
    assert torch.equal(model.head.weight, expected)
    assert ("head.weight" in report.loaded) == (mode == "keep")
    assert torch.equal(model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
