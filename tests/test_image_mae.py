"""Image MAE: the release's random-mask shuffle, and parity with ``transformers``' ViTMAE / ViT and the MAE release's
key layout (fp32, < 1e-5) on tiny random models whose every weight is random."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import randomise_every_weight
from run_helpers import ROOT, losses, run_pretrain
from transformers import ViTConfig, ViTForImageClassification, ViTMAEConfig, ViTMAEForPreTraining, ViTMAEModel

from videomae.checkpoint import load_exported, load_pretrained
from videomae.checkpoint_info import summarize_checkpoint
from videomae.config import ConfigError, load_config
from videomae.config.mae_image import ImageMAEConfig
from videomae.evaluation.probes import encode_tokens
from videomae.hf_folder import classifier_trunk, load_hf_folder, write_hf_folder
from videomae.launching.config_checks import config_findings
from videomae.masking import random_mask, random_shuffle, shuffle_from_noise
from videomae.models import create_model
from videomae.models.convert_mae import to_mae_release_state_dict
from videomae.models.hf_config import NotExpressibleError
from videomae.models.pos_embed import sincos_2d_table
from videomae.models.registry import variant_for_width
from videomae.objectives.mae_pixels import MAEPixelLoss

TOL = 1e-5
SIZE, PATCH, WIDTH, DEPTH, HEADS, DEC_WIDTH, DEC_DEPTH, DEC_HEADS = 32, 8, 64, 2, 2, 32, 2, 2
TOKENS = (SIZE // PATCH) ** 2


# ------------------------------------------------------------------------------------------------------ masks


def test_random_shuffle_hides_75_percent_and_restore_inverts_the_shuffle() -> None:
    gen = torch.Generator().manual_seed(0)
    shuffle = random_shuffle(64, 196, 0.75, generator=gen)
    assert shuffle.ids_keep.shape == (64, 49) and shuffle.ids_restore.shape == (64, 196)
    assert (shuffle.mask.sum(dim=1) == 147).all()
    tokens = torch.arange(196).expand(64, -1)
    order = shuffle.ids_restore.argsort(dim=1)  # the shuffled order of the tokens
    shuffled = torch.gather(tokens, 1, order)
    assert torch.equal(torch.gather(shuffled, 1, shuffle.ids_restore), tokens)  # restore inverts the shuffle
    assert torch.equal(order[:, :49], shuffle.ids_keep)
    kept = torch.zeros(64, 196, dtype=torch.bool).scatter_(1, shuffle.ids_keep, True)
    assert torch.equal(kept, ~shuffle.mask)
    # positions are uniform over many samples, and random_mask draws the same masks from the same seed
    assert torch.equal(random_mask(64, (1, 14, 14), 0.75, torch.Generator().manual_seed(0)), shuffle.mask)
    frequency = random_shuffle(20000, 16, 0.75, torch.Generator().manual_seed(1)).mask.float().mean(0)
    assert torch.allclose(frequency, torch.full_like(frequency, 0.75), atol=0.02)


def test_shuffle_from_noise_is_transformers_random_masking() -> None:
    hf = ViTMAEModel(_hf_config()).eval()
    noise = torch.rand(3, TOKENS, generator=torch.Generator().manual_seed(2))
    sequence = torch.arange(TOKENS, dtype=torch.float32)[None, :, None].expand(3, -1, 2)
    kept, hf_mask, hf_restore = hf.embeddings.random_masking(sequence, noise)
    ours = shuffle_from_noise(noise, 0.75)
    assert torch.equal(ours.mask, hf_mask.bool()) and torch.equal(ours.ids_restore, hf_restore)
    assert torch.equal(ours.ids_keep, kept[..., 0].long())


# ------------------------------------------------------------------------------------------------------ parity


def _hf_config(**kw) -> ViTMAEConfig:
    return ViTMAEConfig(
        image_size=SIZE, patch_size=PATCH, hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
        intermediate_size=4 * WIDTH, decoder_hidden_size=DEC_WIDTH, decoder_num_hidden_layers=DEC_DEPTH,
        decoder_num_attention_heads=DEC_HEADS, decoder_intermediate_size=4 * DEC_WIDTH, layer_norm_eps=1e-6,
        **({"mask_ratio": 0.75, "norm_pix_loss": True} | kw),
    )  # fmt: skip


def _ours(name: str = "pretrain_mae_tiny_patch16_224", **kw) -> torch.nn.Module:
    if name.startswith("pretrain"):
        sizes = dict(encoder_embed_dim=WIDTH, encoder_depth=DEPTH, encoder_num_heads=HEADS,
                     decoder_embed_dim=DEC_WIDTH, decoder_depth=DEC_DEPTH, decoder_num_heads=DEC_HEADS)  # fmt: skip
    else:
        sizes = dict(embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS)
    return create_model(name, img_size=SIZE, patch_size=PATCH, **sizes, **kw).eval()


def _hf_pretraining(seed: int = 1) -> ViTMAEForPreTraining:
    hf = randomise_every_weight(ViTMAEForPreTraining(_hf_config()), seed)
    with torch.no_grad():  # the fixed tables back to sin-cos (randomised above with every other tensor)
        hf.vit.embeddings.position_embeddings.copy_(sincos_2d_table(SIZE // PATCH, SIZE // PATCH, WIDTH))
        hf.decoder.decoder_pos_embed.copy_(sincos_2d_table(SIZE // PATCH, SIZE // PATCH, DEC_WIDTH))
    return hf


def _images_and_noise(batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, SIZE, SIZE, generator=gen), torch.rand(batch, TOKENS, generator=gen)


def _release_layout(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The MAE release's key names for a transformers ViTMAEForPreTraining state dict, written out by hand."""
    out = {
        "cls_token": hf_state["vit.embeddings.cls_token"],
        "pos_embed": hf_state["vit.embeddings.position_embeddings"],
        "patch_embed.proj.weight": hf_state["vit.embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": hf_state["vit.embeddings.patch_embeddings.projection.bias"],
        "norm.weight": hf_state["vit.layernorm.weight"],
        "norm.bias": hf_state["vit.layernorm.bias"],
        "mask_token": hf_state["decoder.mask_token"],
        "decoder_pos_embed": hf_state["decoder.decoder_pos_embed"],
    }
    for leaf in ("weight", "bias"):
        for name in ("decoder_embed", "decoder_norm", "decoder_pred"):
            out[f"{name}.{leaf}"] = hf_state[f"decoder.{name}.{leaf}"]
    stacks = (("blocks", "vit.layers", DEPTH), ("decoder_blocks", "decoder.decoder_layers", DEC_DEPTH))
    for ours, theirs, depth in stacks:
        for i in range(depth):
            a, b = f"{ours}.{i}.", f"{theirs}.{i}."
            for leaf in ("weight", "bias"):
                qkv = [hf_state[f"{b}attention.{p}_proj.{leaf}"] for p in "qkv"]
                out[f"{a}attn.qkv.{leaf}"] = torch.cat(qkv)
                pairs = (("attn.proj", "attention.o_proj"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"),
                         ("norm1", "layernorm_before"), ("norm2", "layernorm_after"))  # fmt: skip
                for mine, hf_name in pairs:
                    out[f"{a}{mine}.{leaf}"] = hf_state[f"{b}{hf_name}.{leaf}"]
    return out


def _check_pretraining(ours: torch.nn.Module, hf: ViTMAEForPreTraining) -> None:
    images, noise = _images_and_noise()
    mask = shuffle_from_noise(noise, 0.75).mask
    with torch.no_grad():
        expected = hf(pixel_values=images, noise=noise)
        pred = ours(images, mask)
        pred_clips = ours(images.unsqueeze(2), mask)  # one-frame clips: the same
        loss = MAEPixelLoss(PATCH, normalize_target=True)(pred, images, mask)
    assert torch.equal(expected.mask.bool(), mask)
    hf_pred = expected.logits[mask].reshape(pred.shape)  # transformers predicts every token; ours the hidden ones
    assert (pred - hf_pred).abs().max() < TOL and torch.equal(pred, pred_clips)
    assert abs(loss.item() - expected.loss.item()) < TOL


def test_pretraining_matches_transformers_from_its_state_dict_and_its_folder(tmp_path: Path) -> None:
    hf = _hf_pretraining()
    ours = _ours()
    report = load_pretrained(ours, hf.state_dict(), strict=True)  # transformers 5's in-memory names
    assert report.format == "transformers" and any("key biases dropped" in n for n in report.notes)
    _check_pretraining(ours, hf)
    hf.save_pretrained(tmp_path / "hf")  # the names transformers writes (decoder.decoder_encoder.layer.N...)
    again = randomise_every_weight(_ours(), seed=5)
    load_pretrained(again, tmp_path / "hf", strict=True)
    _check_pretraining(again, hf)


def test_release_layout_loads_with_the_same_outputs(tmp_path: Path) -> None:
    hf = _hf_pretraining(seed=3)
    release = _release_layout(hf.state_dict())
    torch.save({"model": release}, tmp_path / "mae_pretrain.pth")
    ours = _ours()
    report = load_pretrained(ours, tmp_path / "mae_pretrain.pth", strict=True)
    assert report.format == "mae" and not report.missing and not report.unexpected
    assert sum("fixed position table" in n for n in report.notes) == 2  # pos_embed, decoder_pos_embed: recomputed
    summary = summarize_checkpoint(tmp_path / "mae_pretrain.pth")  # what `videomae info` prints
    assert (summary.format, summary.model_name, summary.depth, summary.decoder_depth) == (
        "mae", "pretrain_mae_tiny_patch16_224", DEPTH, DEC_DEPTH,
    )  # fmt: skip
    _check_pretraining(ours, hf)
    # and back to the release's names: the same tensors (the key bias, which ours drops, written as zero)
    back = to_mae_release_state_dict(ours.state_dict(), {"pos_embed": ours.encoder.pos_embed})
    assert set(back) == set(release) - {"decoder_pos_embed"}
    for key, value in back.items():
        expected = release[key].clone()
        if key.endswith("qkv.bias"):
            expected[WIDTH if key.startswith("blocks") else DEC_WIDTH :][: expected.shape[0] // 3] = 0
        assert torch.allclose(value, expected, atol=1e-6), key


def test_classifier_logits_match_vit_for_image_classification() -> None:
    config = ViTConfig(
        image_size=SIZE, patch_size=PATCH, hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
        intermediate_size=4 * WIDTH, layer_norm_eps=1e-6, num_labels=5,
    )  # fmt: skip
    hf = randomise_every_weight(ViTForImageClassification(config), seed=4)
    with torch.no_grad():
        hf.vit.embeddings.position_embeddings.copy_(sincos_2d_table(SIZE // PATCH, SIZE // PATCH, WIDTH))
    ours = _ours("vit_image_tiny_patch16_224", num_classes=5, use_mean_pooling=False)
    report = load_pretrained(ours, hf.state_dict(), strict=True)
    assert report.format == "transformers"
    images, _ = _images_and_noise()
    with torch.no_grad():
        assert (ours(images) - hf(pixel_values=images).logits).abs().max() < TOL
    # a learned table (fine-tuned ViT) into a fixed-table model is refused; a learnable one takes it
    with torch.no_grad():
        hf.vit.embeddings.position_embeddings.add_(0.5)
    with pytest.raises(Exception, match="learned position table"):
        load_pretrained(_ours("vit_image_tiny_patch16_224", num_classes=5, use_mean_pooling=False), hf.state_dict())
    learnable = _ours("vit_image_tiny_patch16_224", num_classes=5, use_mean_pooling=False, use_learnable_pos_emb=True)
    load_pretrained(learnable, hf.state_dict(), strict=True)
    with torch.no_grad():
        assert (learnable(images) - hf(pixel_values=images).logits).abs().max() < TOL


def test_encoder_tokens_match_vit_mae_model_and_mean_pooling_excludes_the_class_token() -> None:
    hf = randomise_every_weight(ViTMAEModel(_hf_config(mask_ratio=0.0)), seed=6)
    with torch.no_grad():
        hf.embeddings.position_embeddings.copy_(sincos_2d_table(SIZE // PATCH, SIZE // PATCH, WIDTH))
    images, _ = _images_and_noise()
    in_order = torch.arange(TOKENS, dtype=torch.float32).expand(3, -1)  # noise that keeps the token order
    for pooling in (True, False):
        ours = _ours("vit_image_tiny_patch16_224", num_classes=0, use_mean_pooling=pooling)
        load_pretrained(ours, hf.state_dict())
        with torch.no_grad():
            tokens = hf(pixel_values=images, noise=in_order).last_hidden_state  # (B, 1 + N, D), normed
            features = ours.forward_features(images)
        if pooling:  # fc_norm over the mean of the patch tokens before the final norm: check the trunk's blocks
            ours.norm = hf.layernorm
            with torch.no_grad():
                assert (ours.forward_tokens(images) - tokens).abs().max() < TOL
            assert ours.fc_norm is not None and features.shape == (3, WIDTH)
        else:
            assert (features - tokens[:, 0]).abs().max() < TOL


# ------------------------------------------------------------------------------------------------------ training

MAE_DEMO_YAML = ROOT / "videomae/recipes/pretrain/mae_image_demo.yaml"


@pytest.mark.slow
def test_the_demo_config_trains_20_steps_on_2_processes_with_a_falling_loss(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [
        f"output_dir={out}", f"data.manifests=[{demo}/train_images_unlabeled.csv]", f"data.data_root={demo}",
        "data.input_size=32", "data.num_workers=0", "train.batch_size=12", "train.max_steps=20", "train.log_every=1",
        "train.warmup_steps=3", "train.save_every=20",
        "model.overrides={img_size: 32, patch_size: 8, encoder_embed_dim: 32, encoder_depth: 2, encoder_num_heads: 2,"
        " decoder_embed_dim: 32, decoder_num_heads: 2}",
        "model.decoder_depth=1",
    ]  # fmt: skip
    run_pretrain("deepspeed", args, nproc=2, config=MAE_DEMO_YAML)
    loss = losses(out)
    assert sorted(loss) == list(range(1, 21))
    first, last = sum(loss[s] for s in range(1, 6)) / 5, sum(loss[s] for s in range(16, 21)) / 5
    assert last < 0.8 * first, loss
    # the export is an image MAE that reconstructs: its masked-patch loss on a batch is the run's last figures' size
    model, info = load_exported(out / "export/model.safetensors")
    assert info["model_config"]["name"] == "pretrain_mae_tiny_patch16_224" and info["num_frames"] == 1
    images = torch.randn(2, 3, 32, 32)
    mask = random_mask(2, model.grid_size, 0.75, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert model(images, mask).shape == (2, 12, 8 * 8 * 3)


# ------------------------------------------------------------------------------------------------------ export


def test_image_models_export_to_transformers_folders_and_read_back(tmp_path: Path) -> None:
    images, noise = _images_and_noise()
    mask = shuffle_from_noise(noise, 0.75).mask
    # pretraining, with layer scale (folded into the Linears it scales on the way out)
    ours = randomise_every_weight(_ours(init_values=0.1), seed=7)
    write_hf_folder(ours, tmp_path / "mae", norm_pix_loss=True)
    hf = ViTMAEForPreTraining.from_pretrained(tmp_path / "mae").eval()
    with torch.no_grad():
        expected, got = hf(pixel_values=images, noise=noise), ours(images, mask)
        assert (expected.logits[mask].reshape(got.shape) - got).abs().max() < TOL
        assert abs(expected.loss.item() - MAEPixelLoss(PATCH)(got, images, mask).item()) < TOL
    back, folder = load_hf_folder(tmp_path / "mae")
    assert folder.kind == "pretraining" and folder.model_name == "pretrain_mae_tiny_patch16_224"
    assert "ViTMAEForPreTraining" in summarize_checkpoint(tmp_path / "mae").kind
    with torch.no_grad():
        assert (back(images, mask) - got).abs().max() < TOL
    # the classifier: ViTForImageClassification classifies the class token; global pooling is refused
    classifier = randomise_every_weight(_ours("vit_image_tiny_patch16_224", num_classes=3, use_mean_pooling=False), 8)
    write_hf_folder(classifier, tmp_path / "vit", label_names=["a", "b", "c"])
    hf_classifier = ViTForImageClassification.from_pretrained(tmp_path / "vit").eval()
    with torch.no_grad():
        logits = classifier(images)
        assert (hf_classifier(pixel_values=images).logits - logits).abs().max() < TOL
    assert hf_classifier.config.id2label == {0: "a", 1: "b", 2: "c"}
    back, folder = load_hf_folder(tmp_path / "vit")
    with torch.no_grad():
        assert (back(images) - logits).abs().max() < TOL and folder.label_names == ["a", "b", "c"]
    assert classifier_trunk(tmp_path / "mae")[0] == "vit_image_tiny_patch16_224"
    with pytest.raises(NotExpressibleError, match="mean pooling"):
        write_hf_folder(_ours("vit_image_tiny_patch16_224", num_classes=3), tmp_path / "pooled")
    assert not (tmp_path / "pooled").exists()


# ------------------------------------------------------------------------------------------------------ config


def test_families_by_name_prefix_keep_video_and_image_models_apart() -> None:
    assert variant_for_width(768, pretraining=True) == "pretrain_videomae_base_patch16_224"
    assert variant_for_width(768, pretraining=False) == "vit_base_patch16_224"
    assert variant_for_width(768, pretraining=True, image=True) == "pretrain_mae_base_patch16_224"
    assert variant_for_width(1024, pretraining=False, image=True) == "vit_image_large_patch16_224"
    assert variant_for_width(1280, pretraining=True, image=True) is None  # patch 14 (the release's) and 16
    assert variant_for_width(1280, True, image=True, patch_size=14) == "pretrain_mae_huge_patch14_224"
    with torch.device("meta"):
        huge = create_model("pretrain_mae_huge_patch14_224")
    assert huge.grid_size == (1, 16, 16) and len(huge.decoder.blocks) == 8 and huge.mask_token.shape[-1] == 512


def test_the_mae_image_config_has_mae_defaults_and_refuses_what_images_cannot_do(tmp_path: Path) -> None:
    cfg = load_config(None, ["method=mae_image", "train.max_steps=1"])
    assert isinstance(cfg, ImageMAEConfig) and cfg.model.name == "pretrain_mae_base_patch16_224"
    assert (cfg.data.num_frames, cfg.data.num_sample, cfg.mask.type, cfg.mask.ratio, cfg.mask.decoder_type) == (
        1, 1, "random", 0.75, "none",
    )  # fmt: skip
    refused = {
        "data.num_frames=4": "data.num_frames: got 4",
        "data.manifests=[{path: a.csv, num_frames: 2}]": r"data.manifests\[0\].num_frames: got 2",
        "mask.type=tube": "mask.type: got 'tube'",
        "mask.decoder_type=run_cell": "mask.decoder_type: got 'run_cell'",
        "model.name=pretrain_videomae_tiny_patch16_224": "model.name: got 'pretrain_videomae_tiny_patch16_224'",
        "train.picture_every=10": "train.picture_every: got 10",
    }
    for override, message in refused.items():
        with pytest.raises(ConfigError, match=message):
            load_config(None, ["method=mae_image", "train.max_steps=1", override])
    # preflight builds the model on meta and checks the data against it, naming the key
    demo = load_config(MAE_DEMO_YAML, [f"output_dir={tmp_path}", "model.overrides.all_frames=2"])
    failed = {f.check: f.detail for f in config_findings(demo) if not f.ok}
    assert "model.overrides.all_frames" in failed and "one-frame clips" in failed["model.overrides.all_frames"]
    findings = {f.check: f for f in config_findings(load_config(MAE_DEMO_YAML, [f"output_dir={tmp_path}"]))}
    assert all(f.ok for f in findings.values()) and "hides 48 of 64 tokens" in findings["mask.ratio"].detail


def test_probes_encode_image_mae_tokens_with_the_class_token_first() -> None:
    model = randomise_every_weight(_ours(), seed=9)
    images, _ = _images_and_noise()
    tokens = encode_tokens(model, images.unsqueeze(2))  # the probes' frozen features of one-frame clips
    assert tokens.shape == (3, 1 + TOKENS, WIDTH)
    with torch.no_grad():
        direct = model.encoder.norm(model.encoder.blocks[1](model.encoder.blocks[0](model.encoder.embed(images))))
    assert torch.allclose(tokens, direct, atol=1e-6)
