"""Layer-wise lr decay parameter groups: layer ids, scales per depth, weight-decay split."""

from __future__ import annotations

import pytest
import torch

from videomae.engine.layer_decay import layer_scales, param_groups_layer_decay
from videomae.models import create_model

TINY = dict(img_size=32, patch_size=8, all_frames=4)


def _by_name(groups: list[dict]) -> dict[str, dict]:
    return {name: group for group in groups for name in group["names"]}


@pytest.mark.parametrize("depth", [2, 3])
def test_scales_per_depth(depth: int) -> None:
    model = create_model("vit_tiny_patch16_224", depth=depth, use_learnable_pos_emb=True, **TINY)
    groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.5)
    params = _by_name(groups)
    # 0.5 ** (depth + 1 - layer): embeddings, each block, then the head at full rate.
    assert params["patch_embed.proj.weight"]["lr_scale"] == 0.5 ** (depth + 1)
    assert params["pos_embed"]["lr_scale"] == 0.5 ** (depth + 1)
    for i in range(depth):
        assert params[f"blocks.{i}.attn.qkv.weight"]["lr_scale"] == 0.5 ** (depth - i)
        assert params[f"blocks.{i}.norm1.bias"]["layer_id"] == i + 1
    for name in ("fc_norm.weight", "head.weight", "head.bias"):
        assert params[name]["lr_scale"] == 1.0 and params[name]["layer_id"] == depth + 1
    assert layer_scales(depth, 0.5) == [0.5 ** (depth + 1 - i) for i in range(depth + 2)]


def test_weight_decay_split_and_completeness() -> None:
    model = create_model("vit_tiny_patch16_224", use_learnable_pos_emb=True, init_values=0.1, **TINY)
    groups = param_groups_layer_decay(model, 0.05, 0.75, no_weight_decay_names=["head.weight"])
    params = _by_name(groups)
    decayed = {n for n, g in params.items() if g["weight_decay"] == 0.05}
    assert decayed == {
        "patch_embed.proj.weight",
        *(f"blocks.{i}.{m}.weight" for i in range(2) for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")),
    }
    for name in ("pos_embed", "blocks.0.gamma_1", "blocks.1.attn.q_bias", "blocks.0.norm2.weight", "head.weight"):
        assert params[name]["weight_decay"] == 0.0 and not params[name]["apply_wd"]
    # every trainable parameter exactly once, and group order by layer
    assert sorted(params) == sorted(n for n, _ in model.named_parameters())
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert [g["layer_id"] for g in groups] == sorted(g["layer_id"] for g in groups)


def test_groups_drive_the_optimizer_with_scaled_lr() -> None:
    """The scaled lr really reaches the parameters: one SGD step moves each weight by -lr * lr_scale * grad."""
    model = create_model("vit_tiny_patch16_224", **TINY)
    for p in model.patch_embed.parameters():
        p.requires_grad_(False)
    groups = param_groups_layer_decay(model, 0.0, 0.5)
    assert "patch_embed.proj.weight" not in _by_name(groups)
    for group in groups:
        group["lr"] = 0.01 * group["lr_scale"]
    optimizer = torch.optim.SGD(groups, lr=0.01)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(torch.randn(2, 3, 4, 32, 32)).square().sum().backward()
    optimizer.step()
    params = dict(model.named_parameters())
    for name, scale in (("blocks.0.mlp.fc1.weight", 0.25), ("blocks.1.mlp.fc1.weight", 0.5), ("head.weight", 1.0)):
        assert params[name].grad.abs().max() > 0
        torch.testing.assert_close(params[name] - before[name], -0.01 * scale * params[name].grad)


def test_bad_layer_decay() -> None:
    with pytest.raises(ValueError, match="layer_decay must be in"):
        param_groups_layer_decay(create_model("vit_tiny_patch16_224", **TINY), 0.05, 1.5)


def test_pretraining_model_uses_the_fallback_rule() -> None:
    """Without ``layer_id`` (pretraining model): encoder blocks by depth, the decoder and mask token at full rate."""
    model = create_model("pretrain_videomae_tiny_patch16_224", **TINY)
    params = _by_name(param_groups_layer_decay(model, 0.05, 0.5))
    assert params["encoder.patch_embed.proj.weight"]["layer_id"] == 0
    assert params["encoder.blocks.1.mlp.fc1.weight"]["lr_scale"] == 0.5
    for name in ("decoder.blocks.0.mlp.fc1.weight", "mask_token", "encoder_to_decoder.weight"):
        assert params[name]["lr_scale"] == 1.0
    assert params["mask_token"]["weight_decay"] == 0.0
