"""transformers VideoMAE folders both ways, against transformers' own models (the independent reference).

Writing: every published size maps to a ``VideoMAEConfig`` whose model has exactly our tensors (on ``meta``); tiny
models with each size's structure (heads, MLP ratio, patch, decoder heads and depth) give transformers' outputs.
Reading: a folder builds its own model from ``config.json``, a folder that leaves our parameters unset is refused,
crafted ``config.json`` values are refused before a model is built.

``transformers`` builds ``fc_norm`` and the decoder's final norm with eps 1e-5 (no config field sets it) where we use
1e-6; outputs are compared as they are (``RAW_TOL``) and with those two eps set to ours (``PARITY_TOL``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_GRID, randomise_every_weight, write_zero0_run
from run_helpers import finetune_overrides, run_finetune
from safetensors.torch import load_file, save_file
from transformers import VideoMAEConfig, VideoMAEForPreTraining, VideoMAEForVideoClassification

from videomae.checkpoint import CheckpointError, export_weights, load_exported, load_pretrained
from videomae.checkpoint_info import summarize_checkpoint
from videomae.cli import main
from videomae.hf_folder import classifier_trunk, load_hf_folder, write_hf_folder
from videomae.inference import load_inference_model
from videomae.methods.finetune_init import init_classifier
from videomae.models import create_model
from videomae.models.convert_hf import to_hf_state_dict
from videomae.models.hf_config import NotExpressibleError, from_hf_config, to_hf_config

PARITY_TOL = 1e-5
RAW_TOL = 1e-5
LABELS = ["archery", "bowling", "cooking", "dancing", "eating"]
# size: (width, depth, heads, decoder width, decoder heads, patch, MLP ratio) as registered
SIZES = {
    "small": (384, 12, 6, 192, 3, 16, 4.0),
    "base": (768, 12, 12, 384, 6, 16, 4.0),
    "large": (1024, 24, 16, 512, 8, 16, 4.0),
    "huge": (1280, 32, 16, 512, 8, 16, 4.0),
    "giant": (1408, 40, 16, 512, 8, 14, 48 / 11),
}
KINDS = ["pretraining", "classifier", "classifier_no_pooling"]


def _names(size: str) -> tuple[str, str]:
    patch = SIZES[size][5]
    return f"pretrain_videomae_{size}_patch{patch}_224", f"vit_{size}_patch{patch}_224"


def _build(size: str, kind: str, **kw) -> torch.nn.Module:
    """The registered model of ``size`` on a 2 x 2 patch grid of 4 frames (the structure is what matters)."""
    pretrain_name, vit_name = _names(size)
    grid = dict(img_size=2 * SIZES[size][5], all_frames=4)
    if kind == "pretraining":
        return create_model(pretrain_name, **grid, **kw)
    return create_model(vit_name, **grid, num_classes=5, use_mean_pooling=kind == "classifier", **kw)


def _hf_class(kind: str) -> type:
    return VideoMAEForPreTraining if kind == "pretraining" else VideoMAEForVideoClassification


def _outputs(ours: torch.nn.Module, hf: torch.nn.Module, kind: str, videos: torch.Tensor, mask: torch.Tensor):
    """(ours, transformers' raw, transformers' with our eps); transformers takes videos as [B, T, C, H, W]."""
    with torch.no_grad():
        if kind == "pretraining":
            got, run = ours(videos, mask), lambda: hf(videos.transpose(1, 2), bool_masked_pos=mask).logits
        else:
            got, run = ours(videos), lambda: hf(videos.transpose(1, 2)).logits
        raw = run()
        for module in hf.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.eps = 1e-6
        return got, raw, run()


def _clips(patch: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    videos = torch.randn(batch, 3, 4, 2 * patch, 2 * patch, generator=gen)
    mask = torch.stack([torch.randperm(8, generator=gen) < 6 for _ in range(batch)])  # 8 tokens, 6 hidden
    return videos, mask


# ----------------------------------------------------------------------------------------------- writing


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", list(SIZES))
def test_every_size_maps_to_a_transformers_model_with_exactly_our_tensors(size: str, kind: str) -> None:
    with torch.device("meta"):
        ours = _build(size, kind)
        config = to_hf_config(ours.model_config, LABELS if kind != "pretraining" else None)
        hf = _hf_class(kind)(VideoMAEConfig(**config))
    width, depth, heads, dec_width, dec_heads, patch, ratio = SIZES[size]
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (width, depth, heads)
    assert config["patch_size"] == patch and config["intermediate_size"] == int(width * ratio)
    if kind == "pretraining":
        assert (config["decoder_hidden_size"], config["decoder_num_attention_heads"]) == (dec_width, dec_heads)
        assert config["decoder_num_hidden_layers"] == 4 and config["use_mean_pooling"] is False  # ours has a norm
    else:
        assert config["use_mean_pooling"] is (kind == "classifier") and config["id2label"]["2"] == "cooking"
    expected = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in to_hf_state_dict(ours.state_dict()).items()} == expected
    # and back: the config rebuilds our model, the same tensors
    hf_kind = "pretraining" if kind == "pretraining" else "classifier"
    name, kwargs, _ = from_hf_config(config, hf_kind)
    assert name == _names(size)[0 if kind == "pretraining" else 1]
    with torch.device("meta"):
        again = create_model(name, **kwargs)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", list(SIZES))
def test_tiny_models_of_each_size_give_transformers_outputs(size: str, kind: str, tmp_path: Path) -> None:
    _, _, heads, _, dec_heads, patch, _ = SIZES[size]
    tiny = dict(depth=2) if kind != "pretraining" else dict(encoder_depth=2)
    widths = dict(embed_dim=4 * heads) if kind != "pretraining" else dict(encoder_embed_dim=4 * heads,
                                                                           decoder_embed_dim=4 * dec_heads)  # fmt: skip
    # layer scale (folded into the weights on export) in half of the cases
    ours = randomise_every_weight(
        _build(size, kind, **tiny, **widths, init_values=0.1 if heads % 2 == 0 else 0.0), seed=1
    )
    write_hf_folder(ours, tmp_path / "hf", LABELS if kind != "pretraining" else None)
    hf = _hf_class(kind).from_pretrained(tmp_path / "hf").eval()
    got, raw, aligned = _outputs(ours, hf, kind, *_clips(patch))
    error, raw_error = (got - aligned).abs().max().item(), (got - raw).abs().max().item()
    print(f"{size} {kind}: max abs error {error:.3g} (eps-aligned), {raw_error:.3g} (transformers' own eps)")
    assert got.shape == raw.shape and error < PARITY_TOL and raw_error < RAW_TOL
    if kind != "pretraining":
        assert hf.config.id2label == dict(enumerate(LABELS))
    # our reader builds the same model back from the folder
    back, folder = load_hf_folder(tmp_path / "hf")
    with torch.no_grad():
        again = back(*_clips(patch)) if kind == "pretraining" else back(_clips(patch)[0])
    assert (again - got).abs().max() < PARITY_TOL and folder.label_names == (LABELS if kind != "pretraining" else None)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (dict(cos_attn=True), "cosine attention"),
        (dict(use_learnable_pos_emb=True), "learned position table"),
        (dict(pos_table_grid=(4, 2, 2)), r"resampled from grid \(4, 2, 2\)"),
        (dict(num_classes=0), "without a head"),
    ],
)
def test_what_transformers_cannot_express_is_refused_and_nothing_written(change, reason, tmp_path: Path) -> None:
    model = create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, all_frames=4, **{"num_classes": 5, **change}
    )
    with pytest.raises(NotExpressibleError, match=reason):
        write_hf_folder(model, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    pretrain = create_model(
        "pretrain_videomae_tiny_patch16_224", img_size=32, patch_size=8, all_frames=4, cos_attn=True
    )
    with pytest.raises(NotExpressibleError, match="cosine attention"):
        write_hf_folder(pretrain, tmp_path / "hf")


def _tiny_trained_classifier() -> torch.nn.Module:
    """A tiny classifier after a few optimizer steps on random clips (its head no longer at init scale)."""
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, all_frames=4, num_classes=5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    videos, labels = torch.randn(8, 3, 4, 32, 32), torch.arange(8) % 5
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(videos), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_a_trained_export_through_the_cli_opens_in_transformers_with_the_same_logits(tmp_path: Path, capsys) -> None:
    model = _tiny_trained_classifier()
    export_weights(model, tmp_path / "model.safetensors", {"label_names": LABELS})
    assert main(["export", str(tmp_path / "model.safetensors"), str(tmp_path / "hf"), "--format", "transformers"]) == 0
    assert "VisionTransformer" in capsys.readouterr().out
    hf = VideoMAEForVideoClassification.from_pretrained(tmp_path / "hf").eval()
    got, raw, aligned = _outputs(model, hf, "classifier", torch.randn(3, 3, 4, 32, 32), torch.empty(0))
    error, raw_error = (got - aligned).abs().max().item(), (got - raw).abs().max().item()
    print(f"trained classifier via --format transformers: max abs logit error {error:.3g} (eps-aligned), "
          f"{raw_error:.3g} (transformers' own fc_norm eps 1e-5)")  # fmt: skip
    assert error < PARITY_TOL and raw_error < 1e-3 and hf.config.id2label == dict(enumerate(LABELS))
    assert hf.config.label2id == {name: i for i, name in enumerate(LABELS)}
    # an export transformers cannot express: refused with the reason, exit status 2
    export_weights(create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, all_frames=4, num_classes=5,
                                cos_attn=True), tmp_path / "cos.safetensors")  # fmt: skip
    assert main(["export", str(tmp_path / "cos.safetensors"), str(tmp_path / "no"), "--format", "transformers"]) == 2
    assert "cosine attention" in capsys.readouterr().err and not (tmp_path / "no").exists()


def test_a_run_checkpoint_folder_exports_to_transformers(tmp_path: Path) -> None:
    pretrain = randomise_every_weight(create_model("pretrain_videomae_tiny_patch16_224", img_size=16, patch_size=8,
                                       all_frames=4, decoder_depth=2), seed=3)  # fmt: skip
    section = {"name": "pretrain_videomae_tiny_patch16_224", "decoder_depth": 2,
               "overrides": dict(img_size=16, patch_size=8, all_frames=4)}  # fmt: skip
    run = write_zero0_run(tmp_path / "run", pretrain, section, 12)
    assert main(["export", str(run), str(tmp_path / "hf"), "--format", "transformers"]) == 0
    hf = VideoMAEForPreTraining.from_pretrained(tmp_path / "hf").eval()
    got, _, aligned = _outputs(pretrain, hf, "pretraining", *_clips(8))
    assert hf.config.decoder_num_hidden_layers == 2 and (got - aligned).abs().max() < PARITY_TOL


# ----------------------------------------------------------------------------------------------- reading


def _hf_folder(path: Path, cls: type, seed: int, **config) -> torch.nn.Module:
    base = dict(image_size=16, patch_size=8, num_frames=4, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=256, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                decoder_num_attention_heads=2, decoder_intermediate_size=128, layer_norm_eps=1e-6)  # fmt: skip
    hf = randomise_every_weight(cls(VideoMAEConfig(**{**base, **config})), seed)
    hf.save_pretrained(path)
    return hf


def test_a_mean_pooling_pretraining_folder_builds_its_own_model_or_is_refused(tmp_path: Path) -> None:
    hf = _hf_folder(tmp_path / "hf", VideoMAEForPreTraining, seed=4, use_mean_pooling=True)  # no final encoder norm
    loaded = load_inference_model(tmp_path / "hf")  # no model name, no overrides
    assert loaded.model.model_config["final_norm"] is False and not loaded.notes[0].startswith("config.json")
    got, _, aligned = _outputs(loaded.model, hf, "pretraining", *_clips(8))
    assert (got - aligned).abs().max() < PARITY_TOL
    # a model that applies a final norm would load with it unset: refused, saying why
    with pytest.raises(CheckpointError, match=r"encoder\.norm\.(weight|bias).*use_mean_pooling=true"):
        load_pretrained(create_model("pretrain_videomae_tiny_patch16_224", img_size=16, patch_size=8, all_frames=4),
                        tmp_path / "hf")  # fmt: skip
    with pytest.raises(CheckpointError, match=r"leaves norm\."):
        load_pretrained(create_model("vit_tiny_patch16_224", img_size=16, patch_size=8, all_frames=4,
                                     use_mean_pooling=False), tmp_path / "hf")  # fmt: skip


def test_finetuning_from_a_folder_takes_its_trunk_from_config_json(tmp_path: Path) -> None:
    sizes = dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=96)
    hf = _hf_folder(tmp_path / "hf", VideoMAEForPreTraining, seed=5, use_mean_pooling=False, **sizes,
                    decoder_intermediate_size=64)  # fmt: skip
    name, trunk = classifier_trunk(tmp_path / "hf")
    assert name == "vit_base_patch16_224"  # no registered variant 48 wide: the sizes are all passed
    assert (trunk["embed_dim"], trunk["depth"], trunk["num_heads"], trunk["mlp_ratio"]) == (48, 3, 3, 2.0)
    assert (trunk["img_size"], trunk["patch_size"], trunk["all_frames"]) == (16, 8, 4)
    model = create_model(name, **trunk, num_classes=3)  # the run's choices: mean pooling, 3 classes
    report = init_classifier(model, tmp_path / "hf", "auto", ["a", "b", "c"])
    assert sorted({k.split(".")[0] for k in report.missing}) == ["fc_norm", "head"]
    no_pooling = create_model(name, **trunk, num_classes=3, use_mean_pooling=False)
    report = init_classifier(no_pooling, tmp_path / "hf", "auto", ["a", "b", "c"])
    assert sorted({k.split(".")[0] for k in report.missing}) == ["head"]
    videos = _clips(8)[0]
    with torch.no_grad():
        error = (no_pooling.forward_tokens(videos) - hf.videomae(videos.transpose(1, 2)).last_hidden_state).abs().max()
    assert error < PARITY_TOL  # the whole trunk, final norm included, is the folder's
    assert classifier_trunk(tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (dict(num_hidden_layers=100000), r"encoder_depth=100000 is impossible"),
        (dict(num_hidden_layers=0), r"does not build a model: encoder_depth: got 0"),
        (dict(hidden_dropout_prob=1.5), r"drop_rate: got 1.5"),
        (dict(hidden_size=96, intermediate_size=384), "does not match the weights"),
        (dict(hidden_act="relu"), "exact GELU"),
        (dict(decoder_intermediate_size=100), "decoder shares it"),
        (dict(image_size=[16, 8]), "image_size"),
        (dict(id2label={"0": "a", "7": "b"}), "id2label"),
    ],
)
def test_crafted_config_json_is_refused_before_a_model_is_built(change, reason, tmp_path: Path) -> None:
    _hf_folder(tmp_path / "hf", VideoMAEForPreTraining, seed=6)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    if "id2label" in change:  # a classifier's label table
        config["architectures"] = ["VideoMAEForVideoClassification"]
        state = {k: v for k, v in load_file(tmp_path / "hf" / "model.safetensors").items()
                 if not k.startswith(("decoder", "encoder_to_decoder", "mask_token"))}  # fmt: skip
        state |= {"classifier.weight": torch.zeros(2, 64), "classifier.bias": torch.zeros(2),
                  "fc_norm.weight": torch.ones(64), "fc_norm.bias": torch.zeros(64)}  # fmt: skip
        save_file(state, tmp_path / "hf" / "model.safetensors")
        config["use_mean_pooling"] = True
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(CheckpointError, match=reason):
        load_inference_model(tmp_path / "hf")
    summary = summarize_checkpoint(tmp_path / "hf")  # info still describes it, from the tensors, saying why
    assert re.search(reason, summary.metadata["config.json problem"]) and summary.width == 64


# ----------------------------------------------------------------------------------------------- the commands


def test_commands_take_a_folder_without_model_flags(media, tmp_path: Path, capsys) -> None:
    """predict names classes by id2label, info names the class, extract-features and visualize build the model from
    config.json: no --model, the same results as our export of the same weights."""
    classifier = randomise_every_weight(create_model("vit_tiny_patch16_224", **TINY_GRID, num_classes=5), seed=7)
    write_hf_folder(classifier, tmp_path / "cls", LABELS)
    export_weights(classifier, tmp_path / "cls.safetensors", {"label_names": LABELS})  # the same weights, our format
    video = str(media["h264"])
    assert main(["predict", str(tmp_path / "cls"), video, "--top-k", "5", "--json"]) == 0
    from_folder = json.loads(capsys.readouterr().out)[0]["top_k"]
    assert main(["predict", str(tmp_path / "cls.safetensors"), video, "--top-k", "5", "--json"]) == 0
    from_export = json.loads(capsys.readouterr().out)[0]["top_k"]
    assert [t["name"] for t in from_folder] == [LABELS[t["class"]] for t in from_folder]
    assert [(t["class"], t["name"]) for t in from_folder] == [(t["class"], t["name"]) for t in from_export]
    assert [t["prob"] for t in from_folder] == pytest.approx([t["prob"] for t in from_export], abs=1e-6)
    assert main(["predict", str(tmp_path / "cls"), video, "--top-k", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith(f"  {from_folder[0]['name']}")

    assert main(["info", str(tmp_path / "cls")]) == 0
    text = capsys.readouterr().out
    assert "format:        transformers (classifier, VideoMAEForVideoClassification)" in text
    assert "model:         vit_tiny_patch16_224 (config.json)" in text and f"label names:   {', '.join(LABELS)}" in text
    pretrain = randomise_every_weight(create_model("pretrain_videomae_tiny_patch16_224", **TINY_GRID), seed=8)
    write_hf_folder(pretrain, tmp_path / "pre")
    assert main(["info", str(tmp_path / "pre"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "pretraining (encoder + decoder), VideoMAEForPreTraining" and info["decoder_depth"] == 1
    assert info["model_name"] == "pretrain_videomae_tiny_patch16_224" and info["name_from_metadata"]

    export_weights(pretrain, tmp_path / "pre.safetensors")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label\n{video},0\n")
    for source, out in ((tmp_path / "pre", "a"), (tmp_path / "pre.safetensors", "b")):
        assert main(["extract-features", str(source), str(manifest), str(tmp_path / out), "--stride", "16"]) == 0
    capsys.readouterr()
    folder_features = sorted((tmp_path / "a").glob("*.npy"))
    assert folder_features and all(
        np.array_equal(np.load(a), np.load(tmp_path / "b" / a.name)) for a in folder_features
    )
    for source, out in ((tmp_path / "pre", "a.png"), (tmp_path / "pre.safetensors", "b.png")):
        assert main(["visualize", str(source), video, str(tmp_path / out), "--sampling-rate", "2"]) == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


@pytest.mark.slow
def test_finetuning_run_from_a_folder_builds_the_folders_trunk(demo, tmp_path: Path) -> None:
    """init= a transformers folder whose MLP ratio (2) is not the registered one: the run's classifier takes it."""
    pretrain = randomise_every_weight(create_model("pretrain_videomae_tiny_patch16_224", **TINY_GRID,
                                                   encoder_embed_dim=32, mlp_ratio=2.0), seed=9)  # fmt: skip
    write_hf_folder(pretrain, tmp_path / "hf")
    output = run_finetune(finetune_overrides(demo, tmp_path / "run", "train.max_steps=2", f"init={tmp_path / 'hf'}"))
    assert f"initialising from {tmp_path / 'hf'}" in output
    trained, metadata = load_exported(tmp_path / "run/export/model.safetensors")
    classes = (demo / "labels.txt").read_text().splitlines()
    config = trained.model_config
    assert config["mlp_ratio"] == 2.0 and config["embed_dim"] == 32 and config["num_classes"] == len(classes)
    # and the trained demo classifier back to transformers: the same logits, the demo's class names
    assert main(["export", str(tmp_path / "run/export/model.safetensors"), str(tmp_path / "out"), "--format",
                 "transformers"]) == 0  # fmt: skip
    hf = VideoMAEForVideoClassification.from_pretrained(tmp_path / "out").eval()
    got, raw, aligned = _outputs(trained, hf, "classifier", torch.randn(2, 3, 4, 32, 32), torch.empty(0))
    error, raw_error = (got - aligned).abs().max().item(), (got - raw).abs().max().item()
    print(f"demo fine-tune via --format transformers: max abs logit error {error:.3g} (eps-aligned), {raw_error:.3g}")
    assert error < PARITY_TOL and raw_error < 1e-3 and list(hf.config.id2label.values()) == metadata["label_names"]
