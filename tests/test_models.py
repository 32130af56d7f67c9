"""Models: registry, published sizes, position tables, attention paths, checkpointing, forward semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from videomae.models import (
    PretrainVisionTransformer,
    VisionTransformer,
    create_model,
    interpolate_pos_table,
    list_models,
    set_fused_attention,
    sinusoid_table,
)
from videomae.models.pos_embed import guess_grid

TINY = dict(img_size=32, patch_size=8, all_frames=4)  # grid (2, 4, 4): 32 tokens
PUBLISHED = {
    # name: (width, depth, heads, mlp_ratio, patch, decoder width, decoder heads)
    "small": (384, 12, 6, 4.0, 16, 192, 3),
    "base": (768, 12, 12, 4.0, 16, 384, 6),
    "large": (1024, 24, 16, 4.0, 16, 512, 8),
    "huge": (1280, 32, 16, 4.0, 16, 512, 8),
    "giant": (1408, 40, 16, 48 / 11, 14, 512, 8),
}
# Encoder parameters (no head) in millions, from the independent count below. ViT-g: 1,011.6 M, the VideoMAE V2 paper's
# figure. With a 400-class head S/B/L/H give 22.03 / 86.53 / 304.27 / 632.12 M; the VideoMAE paper lists the
# Kinetics-400 models as 22 / 87 / 305 / 633 M (rounded up), so those are checked to 1 %.
ENCODER_MILLIONS = {"small": 21.880, "base": 86.227, "large": 303.861, "huge": 631.607, "giant": 1011.611}
PUBLISHED_WITH_K400_HEAD = {"small": 22.0, "base": 87.0, "large": 305.0, "huge": 633.0}


def _videos(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed))


def _tube_mask(batch: int, hidden: int, seed: int = 0, tokens: int = 32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, tokens, dtype=torch.bool)
    for b in range(batch):
        mask[b, torch.randperm(tokens, generator=gen)[:hidden]] = True
    return mask


def _encoder_params(width: int, depth: int, mlp_ratio: float, patch: int, tubelet: int = 2) -> int:
    """Independent count: conv patch embedding, ``depth`` blocks with q/v bias, final norm."""
    hidden = int(width * mlp_ratio)
    block = 4 * width * width + 2 * width * hidden  # qkv + proj + fc1 + fc2 weights
    block += 2 * width + width + hidden + width + 4 * width  # q/v bias, proj bias, fc1/fc2 bias, two norms
    return 3 * tubelet * patch * patch * width + width + depth * block + 2 * width


# ----------------------------------------------------------------------------------------------- registry


def test_registry_has_every_design_name() -> None:
    names = set(list_models())
    for size in ("small", "base", "large", "huge"):
        assert f"pretrain_videomae_{size}_patch16_224" in names
        assert f"vit_{size}_patch16_224" in names
    assert {"pretrain_videomae_giant_patch14_224", "vit_giant_patch14_224"} <= names
    assert {"pretrain_videomae_tiny_patch16_224", "vit_tiny_patch16_224"} <= names


def test_create_model_rejects_unknown_name_and_override() -> None:
    with pytest.raises(ValueError, match="registered models: .*vit_base_patch16_224"):
        create_model("vit_base_patch15_224")
    with pytest.raises(TypeError, match="encoder_width.*allowed overrides: .*encoder_embed_dim"):
        create_model("pretrain_videomae_tiny_patch16_224", encoder_width=3)


@pytest.mark.parametrize("size", list(PUBLISHED))
def test_published_sizes_parameter_counts(size: str) -> None:
    width, depth, heads, mlp_ratio, patch, dec_width, dec_heads = PUBLISHED[size]
    suffix = f"{size}_patch{patch}_224"
    with torch.device("meta"):
        pretrain = create_model(f"pretrain_videomae_{suffix}")
        vit = create_model(f"vit_{suffix}", num_classes=400)
    assert all(p.is_meta for p in pretrain.parameters())
    cfg = pretrain.model_config
    assert (cfg["encoder_embed_dim"], cfg["encoder_depth"], cfg["encoder_num_heads"]) == (width, depth, heads)
    assert (cfg["decoder_embed_dim"], cfg["decoder_depth"], cfg["decoder_num_heads"]) == (dec_width, 4, dec_heads)
    encoder = sum(p.numel() for n, p in pretrain.named_parameters() if n.startswith("encoder."))
    assert encoder == _encoder_params(width, depth, mlp_ratio, patch)
    assert encoder / 1e6 == pytest.approx(ENCODER_MILLIONS[size], abs=0.05e-0 if size == "giant" else 0.001)
    decoder = sum(p.numel() for n, p in pretrain.named_parameters() if not n.startswith("encoder."))
    dec_expected = _encoder_params(dec_width, 4, mlp_ratio, patch) - (3 * 2 * patch * patch * dec_width + dec_width)
    dec_expected += width * dec_width + dec_width + (dec_width + 1) * 3 * 2 * patch * patch  # e2d, mask token, head
    assert decoder == dec_expected
    total_vit = sum(p.numel() for p in vit.parameters())
    assert total_vit == encoder + (width + 1) * 400  # fc_norm replaces the final norm; K400 head
    if size in PUBLISHED_WITH_K400_HEAD:
        assert total_vit / 1e6 == pytest.approx(PUBLISHED_WITH_K400_HEAD[size], rel=0.01)  # the paper rounds


def test_giant_encoder_is_1011_6_million() -> None:
    with torch.device("meta"):
        model = create_model("vit_giant_patch14_224", num_classes=0)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(1011.6, abs=0.05)


def test_meta_model_materialises_with_init_weights() -> None:
    with torch.device("meta"):
        model = create_model("pretrain_videomae_tiny_patch16_224", **TINY)
    model.to_empty(device="cpu")
    model.init_weights()
    assert torch.equal(model.encoder.pos_embed, sinusoid_table(32, 64))
    assert torch.equal(model.pos_embed, sinusoid_table(32, 32))
    assert "pos_embed" not in model.state_dict() and "encoder.pos_embed" not in model.state_dict()
    out = model(_videos(), _tube_mask(2, 24))
    assert out.shape == (2, 24, 3 * 2 * 8 * 8) and torch.isfinite(out).all()


# ----------------------------------------------------------------------------------------------- position tables


def test_sinusoid_table_matches_release_formula() -> None:
    n, d = 10, 6
    angles = np.array([[pos / np.power(10000, 2 * (j // 2) / d) for j in range(d)] for pos in range(n)])
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    assert torch.allclose(sinusoid_table(n, d), torch.tensor(angles, dtype=torch.float32)[None], atol=1e-7)


def _linear_resize(x: np.ndarray, axis: int, size: int) -> np.ndarray:
    """1-D linear resampling with half-pixel centres (align_corners=False), written from the definition."""
    n_in = x.shape[axis]
    out = []
    for i in range(size):
        src = max((i + 0.5) * n_in / size - 0.5, 0.0)
        lo = min(int(math.floor(src)), n_in - 1)
        hi = min(lo + 1, n_in - 1)
        w = src - lo
        out.append((1 - w) * np.take(x, lo, axis=axis) + w * np.take(x, hi, axis=axis))
    return np.stack(out, axis=axis)


def test_interpolate_16_to_8_frames_224_to_112_matches_separable_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    old, new, d = (8, 14, 14), (4, 7, 7), 5
    table = torch.randn(1, math.prod(old), d, generator=gen, dtype=torch.float64)
    got = interpolate_pos_table(table, old, new)
    ref = table[0].numpy().reshape(*old, d)
    for axis, size in enumerate(new):
        ref = _linear_resize(ref, axis, size)
    assert got.shape == (1, 196, d)
    assert np.allclose(got[0].numpy(), ref.reshape(-1, d), atol=1e-6)
    # Upsampling and a leading extra token, which stays as it is.
    with_extra = torch.cat([torch.full((1, 1, d), 7.0, dtype=torch.float64), table], dim=1)
    up = interpolate_pos_table(with_extra, old, (8, 16, 16), num_extra_tokens=1)
    ref_up = table[0].numpy().reshape(*old, d)
    for axis, size in enumerate((8, 16, 16)):
        ref_up = _linear_resize(ref_up, axis, size)
    assert torch.all(up[0, 0] == 7.0) and np.allclose(up[0, 1:].numpy(), ref_up.reshape(-1, d), atol=1e-6)


def test_classifier_fine_tuned_at_8_frames_112_px_resamples_the_16_frame_224_px_table() -> None:
    model = create_model("vit_tiny_patch16_224", img_size=112, all_frames=8, pos_table_grid=(8, 14, 14))
    ref = sinusoid_table(8 * 14 * 14, 64)[0].double().numpy().reshape(8, 14, 14, 64)
    for axis, size in enumerate((4, 7, 7)):
        ref = _linear_resize(ref, axis, size)
    assert model.pos_embed.shape == (1, 196, 64)
    assert np.allclose(model.pos_embed[0].numpy(), ref.reshape(196, 64), atol=1e-6)
    model.pos_embed.zero_()
    model.init_weights()  # recomputed (e.g. after to_empty), still the resampled table
    assert np.allclose(model.pos_embed[0].numpy(), ref.reshape(196, 64), atol=1e-6)
    plain = create_model("vit_tiny_patch16_224", img_size=112, all_frames=8)
    assert torch.equal(plain.pos_embed, sinusoid_table(196, 64))


def test_interpolate_rejects_wrong_grid() -> None:
    with pytest.raises(ValueError, match="expected 0 extra"):
        interpolate_pos_table(torch.zeros(1, 100, 4), (8, 14, 14), (4, 7, 7))


def test_guess_grid_prefers_same_frames_then_release_frames_then_same_side() -> None:
    assert guess_grid(8 * 14 * 14, (8, 7, 7)) == (8, 14, 14)
    assert guess_grid(16 * 14 * 14, (8, 14, 14)) == (16, 14, 14)
    assert guess_grid(4 * 14 * 14, (8, 14, 14)) == (4, 14, 14)
    assert guess_grid(8 * 14 * 14, (4, 7, 7)) == (8, 14, 14)
    assert guess_grid(7, (4, 7, 7)) is None


# ----------------------------------------------------------------------------------------------- attention paths


@pytest.mark.parametrize("cos_attn", [False, True])
def test_sdpa_equals_plain_math(cos_attn: bool) -> None:
    torch.manual_seed(0)
    model = create_model("pretrain_videomae_tiny_patch16_224", **TINY, cos_attn=cos_attn, init_values=0.1).eval()
    if cos_attn:
        with torch.no_grad():  # spread the per-head scales, one beyond the log(100) clamp
            model.encoder.blocks[0].attn.scale.copy_(torch.tensor([1.0, 6.0]).view(2, 1, 1))
    videos, mask = _videos(), _tube_mask(2, 20)
    with torch.no_grad():
        fused = model(videos, mask)
        set_fused_attention(model, False)
        plain = model(videos, mask)
    assert (fused - plain).abs().max() < 1e-5


def test_cos_attn_logit_scale_is_clamped_at_log_100() -> None:
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", **TINY, cos_attn=True, num_classes=3).eval()
    attn = model.blocks[0].attn
    assert attn.scale.shape == (2, 1, 1) and torch.allclose(attn.scale, torch.full((2, 1, 1), math.log(10.0)))
    x = torch.randn(1, 5, 64)
    with torch.no_grad():
        attn.scale.fill_(math.log(100.0))
        at_limit = attn(x)
        attn.scale.fill_(9.0)
        beyond = attn(x)
        attn.fused = False
        # Reference from the definition: softmax(100 * cos(q_i, k_j)) v.
        q, k, v = attn._qkv(x)
        weights = 100.0 * torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(k, dim=-1).mT
        ref = attn.proj((weights.softmax(-1) @ v).transpose(1, 2).reshape(1, 5, 64))
    assert torch.allclose(at_limit, beyond) and torch.allclose(beyond, ref, atol=1e-5)


# ----------------------------------------------------------------------------------------------- checkpointing


@pytest.mark.parametrize("name", ["pretrain_videomae_tiny_patch16_224", "vit_tiny_patch16_224"])
def test_with_cp_gradients_equal(name: str) -> None:
    torch.manual_seed(0)
    plain = create_model(name, **TINY, init_values=0.1)
    checkpointed = create_model(name, **TINY, init_values=0.1, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    videos, mask = _videos(), _tube_mask(2, 24)
    grads = []
    for model in (plain, checkpointed):
        out = model(videos, mask) if name.startswith("pretrain") else model(videos)
        out.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for key in grads[0]:
        assert torch.allclose(grads[0][key], grads[1][key], atol=1e-6), key
    plain.set_grad_checkpointing(True)
    assert plain.model_config["with_cp"] is True


# ----------------------------------------------------------------------------------------------- forward semantics


def test_pretrain_forward_mask_and_decode_mask() -> None:
    torch.manual_seed(0)
    model = create_model("pretrain_videomae_tiny_patch16_224", **TINY).eval()
    videos, mask = _videos(), _tube_mask(2, 24)
    with torch.no_grad():
        default = model(videos, mask)
        explicit = model(videos, mask, decode_mask=~mask)  # keep exactly the hidden tokens
        decode_mask = _tube_mask(2, 16, seed=1)  # keeps 16 tokens, visible ones included
        dual = model(videos, mask, decode_mask)
    assert default.shape == (2, 24, 384) and torch.equal(default, explicit)
    assert dual.shape == (2, 16, 384)
    with pytest.raises(ValueError, match="same number of tokens"):
        bad = mask.clone()
        bad[0, (~bad[0]).nonzero()[0]] = True
        model(videos, bad)
    with pytest.raises(ValueError, match=r"\(C, T, H, W\) = \(3, 4, 32, 32\)"):
        model(torch.zeros(2, 3, 8, 32, 32), mask)


def test_decoder_input_is_visible_tokens_then_mask_tokens_of_kept_positions() -> None:
    torch.manual_seed(0)
    model = create_model("pretrain_videomae_tiny_patch16_224", **TINY).eval()
    videos, mask, decode_mask = _videos(), _tube_mask(2, 24), _tube_mask(2, 20, seed=3)
    seen = {}
    model.decoder.register_forward_pre_hook(lambda module, args: seen.update(x=args[0], n=args[1]))
    with torch.no_grad():
        model(videos, mask, decode_mask)
        encoded = model.encoder_to_decoder(model.encoder(videos, mask))  # (B, 8, 32)
    table = sinusoid_table(32, 32)[0]
    for b in range(2):
        visible = (~mask[b]).nonzero().flatten()  # token order
        kept = (~decode_mask[b]).nonzero().flatten()
        assert torch.allclose(seen["x"][b, :8], encoded[b] + table[visible])
        assert torch.allclose(seen["x"][b, 8:], model.mask_token[0] + table[kept])
    assert seen["n"] == 12


def test_pretrain_keys_and_api() -> None:
    model = create_model("pretrain_videomae_tiny_patch16_224", **TINY, init_values=0.1, use_learnable_pos_emb=True)
    keys = set(model.state_dict())
    for key in (
        "encoder.patch_embed.proj.weight",
        "encoder.blocks.0.attn.q_bias",
        "encoder.blocks.0.attn.v_bias",
        "encoder.blocks.1.gamma_1",
        "encoder.norm.weight",
        "encoder_to_decoder.weight",
        "mask_token",
        "decoder.blocks.0.mlp.fc2.bias",
        "decoder.norm.bias",
        "decoder.head.weight",
        "encoder.pos_embed",
    ):
        assert key in keys
    assert "encoder_to_decoder.bias" not in keys
    assert model.no_weight_decay() == {"mask_token", "encoder.pos_embed"}
    assert model.no_weight_decay() <= dict(model.named_parameters()).keys()
    assert (model.patch_size, model.tubelet_size, model.grid_size, model.get_num_layers()) == (8, 2, (2, 4, 4), 2)
    assert isinstance(model, PretrainVisionTransformer)


@pytest.mark.parametrize("use_mean_pooling", [True, False])
def test_classifier_pooling_paths(use_mean_pooling: bool) -> None:
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", **TINY, num_classes=5, use_mean_pooling=use_mean_pooling).eval()
    assert isinstance(model, VisionTransformer)
    keys = set(model.state_dict())
    assert ("fc_norm.weight" in keys) == use_mean_pooling and ("norm.weight" in keys) != use_mean_pooling
    videos = _videos()
    with torch.no_grad():
        tokens = model.forward_tokens(videos)  # (B, N, D)
        features = model.forward_features(videos)
        logits = model(videos)
    expected = model.fc_norm(tokens.mean(1)) if use_mean_pooling else tokens[:, 0]
    assert torch.allclose(features, expected)
    assert torch.allclose(logits, features @ model.head.weight.T + model.head.bias)
    assert model.forward_head(features, pre_logits=True).shape == (2, 64)
    assert [model.layer_id(n) for n in ("patch_embed.proj.weight", "blocks.1.attn.qkv.weight", "head.bias")] == [
        0,
        2,
        3,
    ]
    assert model.model_config["name"] == "vit_tiny_patch16_224" and model.model_config["num_classes"] == 5
