"""Checkpoints: parity with transformers, the original release layout, safe loading, export round trip."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import TINY_GRID, randomise_every_weight
from transformers import VideoMAEConfig, VideoMAEForPreTraining, VideoMAEForVideoClassification, VideoMAEModel

from videomae.checkpoint import CheckpointError, export_weights, load_exported, load_pretrained
from videomae.models import create_model, interpolate_pos_table, sinusoid_table

PARITY_TOL = 1e-5


def _hf_config(use_mean_pooling: bool) -> VideoMAEConfig:
    return VideoMAEConfig(
        image_size=32, patch_size=8, num_channels=3, num_frames=4, tubelet_size=2, hidden_size=64,
        num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, decoder_hidden_size=32,
        decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=128, qkv_bias=True,
        use_mean_pooling=use_mean_pooling, layer_norm_eps=1e-6, num_labels=5,
    )  # fmt: skip


def _align_eps(hf: torch.nn.Module) -> None:
    """transformers builds fc_norm and the decoder norm with torch's default eps 1e-5; the release (and we) use 1e-6."""
    for module in hf.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = 1e-6


def _videos(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))


def _mask(batch: int = 2, hidden: int = 24) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.stack([torch.randperm(32, generator=gen) < hidden for _ in range(batch)])


def _tiny_pretrain(**kw) -> torch.nn.Module:
    return create_model("pretrain_videomae_tiny_patch16_224", **TINY_GRID, **kw)


# ----------------------------------------------------------------------------------------------- transformers parity


def test_transformers_pretraining_parity(tmp_path: Path) -> None:
    hf = randomise_every_weight(VideoMAEForPreTraining(_hf_config(use_mean_pooling=False)), seed=0)
    ours = _tiny_pretrain().eval()
    report = load_pretrained(ours, hf.state_dict(), strict=True)
    assert report.format == "transformers" and not report.missing and not report.unexpected
    assert len(report.loaded) == len(ours.state_dict())
    videos, mask = _videos(), _mask()
    with torch.no_grad():
        raw_error = (hf(videos.transpose(1, 2), bool_masked_pos=mask).logits - ours(videos, mask)).abs().max()
        _align_eps(hf)
        expected = hf(videos.transpose(1, 2), bool_masked_pos=mask).logits  # transformers takes [B, T, C, H, W]
        got = ours(videos, mask)
    error = (got - expected).abs().max().item()
    print(f"pretraining parity: max abs error {error:.3g} (eps-aligned), {raw_error:.3g} (transformers' own eps)")
    assert got.shape == expected.shape == (2, 24, 384)
    assert error < PARITY_TOL and raw_error < 1e-4
    # The same weights through save_pretrained: a folder with config.json and model.safetensors.
    hf.save_pretrained(tmp_path / "hf")
    again = _tiny_pretrain().eval()
    report = load_pretrained(again, tmp_path / "hf")
    assert report.format == "transformers" and not report.missing and not report.unexpected
    with torch.no_grad():
        assert torch.equal(again(videos, mask), got)


@pytest.mark.parametrize("use_mean_pooling", [True, False])
def test_transformers_classification_parity(use_mean_pooling: bool) -> None:
    hf = randomise_every_weight(VideoMAEForVideoClassification(_hf_config(use_mean_pooling)), seed=2)
    _align_eps(hf)
    ours = create_model("vit_tiny_patch16_224", **TINY_GRID, num_classes=5, use_mean_pooling=use_mean_pooling).eval()
    report = load_pretrained(ours, hf.state_dict(), strict=True)
    videos = _videos()
    with torch.no_grad():
        expected = hf(videos.transpose(1, 2)).logits
        got = ours(videos)
    error = (got - expected).abs().max().item()
    print(f"classification parity (use_mean_pooling={use_mean_pooling}): max abs error {error:.3g}")
    assert report.loaded and error < PARITY_TOL


def test_transformers_bare_model_and_legacy_qv_bias_layout() -> None:
    hf = randomise_every_weight(VideoMAEModel(_hf_config(use_mean_pooling=False)), seed=3)
    state = {}
    for key, value in hf.state_dict().items():  # older transformers: bias-free q/v Linears + q_bias / v_bias
        state[key.replace("attention.attention.query.bias", "attention.attention.q_bias").replace(
            "attention.attention.value.bias", "attention.attention.v_bias")] = value  # fmt: skip
    assert any(k.endswith("q_bias") for k in state)
    ours = create_model("vit_tiny_patch16_224", **TINY_GRID, num_classes=5, use_mean_pooling=False).eval()
    report = load_pretrained(ours, state)
    assert sorted(report.missing) == ["head.bias", "head.weight"] and not report.unexpected
    videos = _videos()
    with torch.no_grad():
        expected = hf(videos.transpose(1, 2)).last_hidden_state[:, 0]
        got = ours.forward_features(videos)
    assert (got - expected).abs().max() < PARITY_TOL


# ----------------------------------------------------------------------------------------------- original release


def _release_keys(depth: int, prefix: str) -> list[str]:
    """Key names of the release's ``Block``s, written out by hand."""
    keys = []
    for i in range(depth):
        block = f"{prefix}blocks.{i}."
        keys += [block + k for k in ("norm1.weight", "norm1.bias", "attn.q_bias", "attn.v_bias", "attn.qkv.weight")]
        keys += [block + k for k in ("attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias")]
        keys += [block + k for k in ("mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")]
    return keys


RELEASE_PRETRAIN_KEYS = sorted(
    ["mask_token", "encoder.patch_embed.proj.weight", "encoder.patch_embed.proj.bias"]
    + _release_keys(2, "encoder.")
    + ["encoder.norm.weight", "encoder.norm.bias", "encoder_to_decoder.weight"]
    + _release_keys(1, "decoder.")
    + ["decoder.norm.weight", "decoder.norm.bias", "decoder.head.weight", "decoder.head.bias"]
)


def test_original_release_checkpoint_loads_exactly(tmp_path: Path) -> None:
    source = _tiny_pretrain()
    assert sorted(source.state_dict()) == RELEASE_PRETRAIN_KEYS
    wrapped = {
        "model": {f"module._orig_mod.{k}": v for k, v in source.state_dict().items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
        "epoch": 799,
        "args": argparse.Namespace(model="pretrain_videomae_tiny_patch16_224", window_size=(2, 4, 4), lr=1.5e-4),
    }
    path = tmp_path / "checkpoint-799.pth"
    torch.save(wrapped, path)
    target = _tiny_pretrain()
    report = load_pretrained(target, path, strict=True)
    assert sorted(report.loaded) == RELEASE_PRETRAIN_KEYS
    assert (report.missing, report.unexpected, report.resized) == ([], [], [])
    videos, mask = _videos(), _mask()
    with torch.no_grad():
        assert torch.equal(target.eval()(videos, mask), source.eval()(videos, mask))
    assert f"loaded {len(RELEASE_PRETRAIN_KEYS)} tensors from {path}" in str(report)


def test_deepspeed_module_wrapper_and_numpy1_scalars(tmp_path: Path) -> None:
    source = _tiny_pretrain()
    path = tmp_path / "mp_rank_00_model_states.pt"
    # Legacy (non-zip) format keeps the pickle's GLOBAL opcodes as plain text, so we can write what NumPy 1.x wrote.
    torch.save({"module": source.state_dict(), "loss": np.float64(0.25)}, path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert b"numpy.core.multiarray\nscalar" in path.read_bytes()
    report = load_pretrained(_tiny_pretrain(), path, strict=True)
    assert len(report.loaded) == len(RELEASE_PRETRAIN_KEYS)


@pytest.mark.parametrize("use_mean_pooling", [True, False])
def test_pretraining_encoder_into_classifier(use_mean_pooling: bool) -> None:
    source = _tiny_pretrain(init_values=0.1)
    classifier = create_model(
        "vit_tiny_patch16_224", **TINY_GRID, init_values=0.1, num_classes=5, use_mean_pooling=use_mean_pooling
    )
    report = load_pretrained(classifier, {"model": source.state_dict()})
    decoder_side = ["mask_token", "encoder_to_decoder.weight"] + [
        k for k in source.state_dict() if k.startswith("decoder.")
    ]
    norm = ["norm.weight", "norm.bias"]
    if use_mean_pooling:  # as the release's fine-tuning: the encoder norm is unused, fc_norm starts fresh
        assert sorted(report.unexpected) == sorted(decoder_side + norm)
        assert sorted(report.missing) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
        assert any("fc_norm starts fresh" in note for note in report.notes)
        assert "unexpected (23): mask_token, decoder.blocks.{0}.gamma_1, decoder.blocks.{0}.gamma_2," in str(report)
    else:
        assert sorted(report.unexpected) == sorted(decoder_side)
        assert sorted(report.missing) == ["head.bias", "head.weight"]
        videos = _videos()
        with torch.no_grad():
            tokens = source.eval().encoder(videos, torch.zeros(2, 32, dtype=torch.bool))
            # the classifier embeds with the convolution, the masked encoder with the same weights as a matmul
            assert torch.allclose(classifier.eval().forward_features(videos), tokens[:, 0], atol=1e-6)
    for key, value in source.state_dict().items():
        if key.startswith("encoder.blocks."):
            assert torch.equal(classifier.state_dict()[key.removeprefix("encoder.")], value)


# ----------------------------------------------------------------------------------------------- position tables


def test_learned_pos_table_is_interpolated_16_to_8_frames_224_to_112() -> None:
    # Checkpoint: 16 frames at 224 px, patch 16 -> grid (8, 14, 14); the release's table has one extra leading token.
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(1, 1 + 8 * 14 * 14, 64, generator=gen)
    model = create_model("vit_tiny_patch16_224", img_size=112, all_frames=8, use_learnable_pos_emb=True, num_classes=5)
    report = load_pretrained(model, {"pos_embed": table})
    assert report.resized == ["pos_embed"] and report.loaded == ["pos_embed"]
    # Independent reference: separable linear resampling of each axis (half-pixel centres) in NumPy.
    ref = table[0, 1:].double().numpy().reshape(8, 14, 14, 64)
    for axis, size in enumerate((4, 7, 7)):
        n_in = ref.shape[axis]
        src = np.maximum((np.arange(size) + 0.5) * n_in / size - 0.5, 0)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        w = (src - lo).reshape([-1 if a == axis else 1 for a in range(4)])
        ref = (1 - w) * np.take(ref, lo, axis=axis) + w * np.take(ref, hi, axis=axis)
    assert np.allclose(model.pos_embed[0].detach().numpy(), ref.reshape(-1, 64), atol=1e-5)
    assert torch.allclose(model.pos_embed, interpolate_pos_table(table, (8, 14, 14), (4, 7, 7), 1)[:, 1:])


def test_fixed_pos_tables_in_checkpoint() -> None:
    model = create_model("vit_tiny_patch16_224", **TINY_GRID, num_classes=5)
    report = load_pretrained(model, {"pos_embed": sinusoid_table(1568, 64)})  # a 16-frame 224 px fixed table
    assert not report.loaded and any("builds its own" in note for note in report.notes)
    with pytest.raises(CheckpointError, match="use_learnable_pos_emb=True"):
        load_pretrained(model, {"pos_embed": torch.randn(1, 32, 64)})


# ----------------------------------------------------------------------------------------------- errors


def test_shape_mismatch_is_an_error_but_a_new_head_is_dropped() -> None:
    source = create_model("vit_tiny_patch16_224", **TINY_GRID, num_classes=7)
    target = create_model("vit_tiny_patch16_224", **TINY_GRID, num_classes=5)
    report = load_pretrained(target, source.state_dict())
    assert sorted(report.missing) == ["head.bias", "head.weight"]
    assert any("head.weight" in note and "dropped" in note for note in report.notes)
    wide = create_model("vit_tiny_patch16_224", **TINY_GRID, embed_dim=96, num_heads=3, num_classes=5)
    with pytest.raises(CheckpointError, match=r"shape mismatch for patch_embed.proj.weight: checkpoint \(96, 3"):
        load_pretrained(target, wide.state_dict())
    with pytest.raises(CheckpointError, match="strict load failed"):
        load_pretrained(target, source.state_dict(), strict=True)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pretrained(target, "/nonexistent/checkpoint.pth")


class _Evil:
    def __reduce__(self):
        return os.system, (f"touch {_Evil.marker}",)


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    _Evil.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": create_model("vit_tiny_patch16_224", **TINY_GRID).state_dict(), "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_pretrained(create_model("vit_tiny_patch16_224", **TINY_GRID), path)
    assert not _Evil.marker.exists()


# ----------------------------------------------------------------------------------------------- export


def test_export_round_trip(tmp_path: Path) -> None:
    model = create_model("vit_tiny_patch16_224", **TINY_GRID, num_classes=3, init_values=0.1).eval()
    labels = ["archery", "bowling", "juggling"]
    path = export_weights(model, tmp_path / "export" / "tiny.safetensors", {"label_names": labels})
    rebuilt, meta = load_exported(path)
    assert meta["label_names"] == labels and meta["model_config"]["name"] == "vit_tiny_patch16_224"
    assert (meta["patch_size"], meta["tubelet_size"], meta["num_frames"], meta["img_size"]) == (8, 2, 4, 32)
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406]) and meta["std"] == pytest.approx([0.229, 0.224, 0.225])
    videos = _videos()
    with torch.no_grad():
        assert torch.equal(rebuilt(videos), model(videos))
    # The export is also a plain safetensors state dict for load_pretrained.
    report = load_pretrained(create_model("vit_tiny_patch16_224", **TINY_GRID, num_classes=3, init_values=0.1), path)
    assert not report.missing and not report.unexpected
    assert math.isclose(rebuilt.blocks[0].gamma_1.detach()[0].item(), 0.1, rel_tol=1e-6)


# ----------------------------------------------------------------------------------------------- release classifier


def _release_classifier_state(layer_scale: bool, depth: int = 2, dim: int = 64, classes: int = 5) -> dict:
    """Known weights in the release's fine-tuning layout (its ``VisionTransformer``), keys written by hand."""
    gen = torch.Generator().manual_seed(7)

    def w(*shape: int, scale: float = 0.1, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale + mean

    state = {"patch_embed.proj.weight": w(dim, 3, 2, 8, 8, scale=0.05), "patch_embed.proj.bias": w(dim)}
    for i in range(depth):
        b = f"blocks.{i}."
        state |= {
            b + "norm1.weight": w(dim, mean=1.0), b + "norm1.bias": w(dim),
            b + "attn.qkv.weight": w(3 * dim, dim), b + "attn.q_bias": w(dim), b + "attn.v_bias": w(dim),
            b + "attn.proj.weight": w(dim, dim), b + "attn.proj.bias": w(dim),
            b + "norm2.weight": w(dim, mean=1.0), b + "norm2.bias": w(dim),
            b + "mlp.fc1.weight": w(4 * dim, dim), b + "mlp.fc1.bias": w(4 * dim),
            b + "mlp.fc2.weight": w(dim, 4 * dim), b + "mlp.fc2.bias": w(dim),
        }  # fmt: skip
        if layer_scale:
            state |= {b + "gamma_1": w(dim, mean=0.5), b + "gamma_2": w(dim, mean=0.5)}
    state |= {"fc_norm.weight": w(dim, mean=1.0), "fc_norm.bias": w(dim)}
    return state | {"head.weight": w(classes, dim), "head.bias": w(classes)}


def _reference_logits(state: dict, videos: torch.Tensor, heads: int = 2, depth: int = 2) -> torch.Tensor:
    """The release classifier's forward in plain torch ops: patch conv, sinusoid table, q/v-bias attention, mean
    pooling + fc_norm + head (LayerNorm eps 1e-6 throughout)."""
    x = F.conv3d(videos, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=(2, 8, 8))
    b, d = x.shape[:2]
    x = x.flatten(2).transpose(1, 2)  # (B, N, D), tokens in (t, h, w) order
    n = x.shape[1]
    position = np.arange(n)[:, None]
    angle = position / np.power(10000, 2 * (np.arange(d) // 2) / d)  # (N, D), computed in float64 as the release
    table = np.where(np.arange(d) % 2 == 0, np.sin(angle), np.cos(angle))
    x = x + torch.from_numpy(table).float()
    for i in range(depth):
        p = {k.removeprefix(f"blocks.{i}."): v for k, v in state.items() if k.startswith(f"blocks.{i}.")}
        h = F.layer_norm(x, (d,), p["norm1.weight"], p["norm1.bias"], eps=1e-6)
        qkv = h @ p["attn.qkv.weight"].T + torch.cat([p["attn.q_bias"], torch.zeros(d), p["attn.v_bias"]])
        q, k, v = qkv.reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, N, d)
        attn = ((q @ k.transpose(-2, -1)) * (d // heads) ** -0.5).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, d) @ p["attn.proj.weight"].T + p["attn.proj.bias"]
        x = x + p.get("gamma_1", 1.0) * out
        h = F.layer_norm(x, (d,), p["norm2.weight"], p["norm2.bias"], eps=1e-6)
        h = F.gelu(h @ p["mlp.fc1.weight"].T + p["mlp.fc1.bias"]) @ p["mlp.fc2.weight"].T + p["mlp.fc2.bias"]
        x = x + p.get("gamma_2", 1.0) * h
    pooled = F.layer_norm(x.mean(dim=1), (d,), state["fc_norm.weight"], state["fc_norm.bias"], eps=1e-6)
    return pooled @ state["head.weight"].T + state["head.bias"]


@pytest.mark.parametrize(("wrapper", "layer_scale"), [("module", False), ("model", True)])
def test_original_release_classifier_gives_the_reference_logits(tmp_path: Path, wrapper: str, layer_scale: bool):
    state = _release_classifier_state(layer_scale)
    path = tmp_path / "vit_tiny_k400_ft.pth"
    torch.save({wrapper: state, "epoch": 34, "args": argparse.Namespace(nb_classes=5)}, path)
    model = create_model("vit_tiny_patch16_224", **TINY_GRID, num_classes=5, init_values=0.1 if layer_scale else 0.0)
    report = load_pretrained(model.eval(), path, strict=True)
    assert sorted(report.loaded) == sorted(state) and report.format == "videomae"
    videos = _videos()
    with torch.no_grad():
        expected = _reference_logits(state, videos)
        got = model(videos)
    assert got.shape == (2, 5) and expected.abs().max() > 0.1  # logits of a real size, not all near zero
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
