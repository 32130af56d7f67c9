"""Classifier head remapped by class name when loading (e.g. a Kinetics-710 head sliced to Kinetics-400)."""

from __future__ import annotations

import pytest
import torch

from videomae.checkpoint import (
    CheckpointError,
    export_weights,
    load_pretrained,
    match_class_names,
    normalize_class_name,
    remap_head,
)
from videomae.models import create_model

TINY = dict(img_size=32, patch_size=8, all_frames=4)
# A "710-way" source head in miniature; the target spells classes differently and has one the source lacks.
SOURCE = ["abseiling", "Playing_Guitar", "air drumming", "zumba", "Dancing  Charleston", "yoga"]
TARGET = ["playing guitar", "'Zumba'", "surfing water", "abseiling"]
EXPECTED_ROWS = [1, 3, None, 0]


def _videos() -> torch.Tensor:
    return torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))


def _source_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", num_classes=len(SOURCE), init_scale=1.0, **TINY)
    with torch.no_grad():
        model.head.bias.copy_(torch.arange(len(SOURCE), dtype=torch.float32))
    return model.eval()


def test_normalize_class_name() -> None:
    assert normalize_class_name("Playing_Guitar") == "playing guitar"
    assert normalize_class_name('  "dancing   charleston" ') == "dancing charleston"
    assert normalize_class_name("'Zumba'") == "zumba"
    assert match_class_names(SOURCE, TARGET) == EXPECTED_ROWS


def test_remap_head_rows_by_name() -> None:
    weight = torch.arange(len(SOURCE) * 3, dtype=torch.float32).reshape(len(SOURCE), 3)
    bias = torch.arange(len(SOURCE), dtype=torch.float32) * 10
    fresh_w, fresh_b = torch.full((len(TARGET), 3), -1.0), torch.full((len(TARGET),), -5.0)
    new_w, new_b, unmatched = remap_head(weight, bias, SOURCE, TARGET, fresh_w, fresh_b)
    assert unmatched == ["surfing water"]
    for target, source in enumerate(EXPECTED_ROWS):
        if source is None:
            assert torch.equal(new_w[target], fresh_w[target]) and new_b[target] == -5.0
        else:
            assert torch.equal(new_w[target], weight[source]) and new_b[target] == bias[source]
    assert fresh_w.eq(-1).all(), "the model's fresh tensors must not be modified in place"


def test_load_pretrained_with_label_map_keeps_logits_of_matched_classes() -> None:
    source = _source_model()
    target = create_model("vit_tiny_patch16_224", num_classes=len(TARGET), **TINY).eval()
    fresh_row = target.head.weight[2].detach().clone()
    report = load_pretrained(target, source.state_dict(), label_map=(SOURCE, TARGET))
    assert report.remapped_classes == 3 and report.unmatched_classes == ["surfing water"]
    assert not report.missing and not report.unexpected
    assert any("3/4 classes" in note and "surfing water" in note for note in report.notes)
    assert torch.equal(target.head.weight[2], fresh_row)
    with torch.no_grad():
        ref, out = source(_videos()), target(_videos())
    for t, s in enumerate(EXPECTED_ROWS):
        if s is not None:
            torch.testing.assert_close(out[:, t], ref[:, s], rtol=0, atol=1e-6)


def test_label_names_read_from_export_metadata(tmp_path) -> None:
    source = _source_model()
    path = export_weights(source, tmp_path / "k710.safetensors", {"label_names": SOURCE})
    target = create_model("vit_tiny_patch16_224", num_classes=len(TARGET), **TINY)
    report = load_pretrained(target, path, label_map=(None, TARGET))
    assert report.remapped_classes == 3
    assert torch.equal(target.head.bias[[0, 1, 3]], torch.tensor([1.0, 3.0, 0.0]))


def test_same_size_head_is_reordered_not_kept() -> None:
    source = _source_model()
    target = create_model("vit_tiny_patch16_224", num_classes=len(SOURCE), **TINY)
    load_pretrained(target, source.state_dict(), label_map=(SOURCE, SOURCE[::-1]))
    assert torch.equal(target.head.bias, torch.arange(len(SOURCE), dtype=torch.float32).flip(0))


@pytest.mark.parametrize(
    ("source_names", "target_names", "message"),
    [
        (SOURCE[:-1], TARGET, "6 classes but 5 source names"),
        (SOURCE, TARGET[:-1], "4 classes but 3 target names"),
        (["a_b", "A b", *SOURCE[2:]], TARGET, "same after normalisation"),
        (SOURCE, ["x", "y", "z", "w"], "none of the model's 4 classes"),
    ],
)
def test_bad_label_maps_are_refused(source_names, target_names, message) -> None:
    target = create_model("vit_tiny_patch16_224", num_classes=len(TARGET), **TINY)
    with pytest.raises(CheckpointError, match=message):
        load_pretrained(target, _source_model().state_dict(), label_map=(source_names, target_names))


def test_label_map_needs_a_head_and_names() -> None:
    target = create_model("vit_tiny_patch16_224", num_classes=len(TARGET), **TINY)
    headless = {k: v for k, v in _source_model().state_dict().items() if not k.startswith("head.")}
    with pytest.raises(CheckpointError, match="no classifier head.weight"):
        load_pretrained(target, headless, label_map=(SOURCE, TARGET))
    with pytest.raises(CheckpointError, match="no 'label_names'"):
        load_pretrained(target, _source_model().state_dict(), label_map=(None, TARGET))


def test_transformers_folder_names_from_id2label(tmp_path) -> None:
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    config = VideoMAEConfig(
        image_size=32, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=64, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=256, qkv_bias=True, use_mean_pooling=True,
        id2label=dict(enumerate(SOURCE)),
    )  # fmt: skip
    torch.manual_seed(0)
    hf = VideoMAEForVideoClassification(config)
    with torch.no_grad():
        hf.classifier.bias.copy_(torch.arange(len(SOURCE), dtype=torch.float32))
    hf.save_pretrained(tmp_path / "hf")
    target = create_model("vit_tiny_patch16_224", num_classes=len(TARGET), **TINY)
    report = load_pretrained(target, tmp_path / "hf", label_map=(None, TARGET))
    assert report.format == "transformers" and report.unmatched_classes == ["surfing water"]
    assert torch.equal(target.head.bias[[0, 1, 3]], torch.tensor([1.0, 3.0, 0.0]))
    torch.testing.assert_close(target.head.weight[0], hf.classifier.weight[1], rtol=0, atol=0)
