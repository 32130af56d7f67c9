"""Parameter groups and per-step schedules, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from videomae.config import load_config
from videomae.engine.layer_decay import param_groups_layer_decay
from videomae.engine.optim import build_schedule, cosine_value, param_groups, set_step_values
from videomae.models import create_model


def test_cosine_value_by_hand():
    # Warm-up: linear from 0; then half a cosine from peak to end over the remaining steps.
    assert cosine_value(0, 110, 1.0, 0.0, warmup_steps=10) == 0.0
    assert cosine_value(5, 110, 1.0, 0.0, warmup_steps=10) == pytest.approx(0.5)
    assert cosine_value(10, 110, 1.0, 0.1, warmup_steps=10) == pytest.approx(1.0)
    assert cosine_value(60, 110, 1.0, 0.1, warmup_steps=10) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway: cos = 0
    assert cosine_value(35, 110, 1.0, 0.0, warmup_steps=10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine_value(110, 110, 1.0, 0.1, warmup_steps=10) == pytest.approx(0.1)
    assert cosine_value(500, 110, 1.0, 0.1, warmup_steps=10) == pytest.approx(0.1)  # clamps past the end


def test_schedule_from_config_uses_warmup_epochs_and_constant_wd():
    cfg = load_config(None, ["train.max_steps=100", "train.warmup_epochs=2.5", "train.min_lr=1e-5"])
    schedule = build_schedule(cfg.train, total_steps=100, steps_per_epoch=4, peak_lr=2e-3)
    assert schedule.warmup_steps == 10
    assert schedule.lr(5) == pytest.approx(1e-3)
    assert schedule.lr(100) == pytest.approx(1e-5)
    assert schedule.wd(0) == schedule.wd(77) == 0.05
    cfg = load_config(None, ["train.max_steps=100", "train.weight_decay_end=0.2"])
    schedule = build_schedule(cfg.train, total_steps=100, steps_per_epoch=4, peak_lr=2e-3)
    assert schedule.warmup_steps == 0 and schedule.wd(50) == pytest.approx(0.125) and schedule.wd(100) == 0.2


def test_param_groups_keep_decay_off_norms_biases_tables_and_tokens():
    model = create_model("pretrain_videomae_tiny_patch16_224", img_size=32, all_frames=4)
    groups = param_groups(model, 0.05, model.no_weight_decay())
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)] for p in groups[0]["params"]}
    no_decay = {names[id(p)] for p in groups[1]["params"]}
    assert decay.isdisjoint(no_decay)
    assert decay | no_decay == {n for n, p in model.named_parameters() if p.requires_grad}
    assert "encoder.patch_embed.proj.weight" in decay and "encoder.blocks.0.attn.qkv.weight" in decay
    assert "decoder.head.weight" in decay
    assert "mask_token" in no_decay
    assert "encoder.blocks.0.norm1.weight" in no_decay and "encoder.blocks.0.mlp.fc1.bias" in no_decay
    assert all(n in no_decay for n in model.no_weight_decay() if n in names.values())
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0


def test_set_step_values_changes_wd_only_where_it_applies():
    a, b = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.AdamW(
        [
            {"params": [a], "weight_decay": 0.05, "apply_wd": True},
            {"params": [b], "weight_decay": 0.0, "apply_wd": False},
        ]
    )
    set_step_values(opt, lr=0.3, wd=0.07)
    assert [g["lr"] for g in opt.param_groups] == [0.3, 0.3]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.07, 0.0]


def test_set_step_values_scales_lr_per_group_for_layer_decay():
    model = create_model("vit_tiny_patch16_224", img_size=32, patch_size=16, all_frames=2, num_classes=3)
    groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.5)
    opt = torch.optim.AdamW(groups)
    set_step_values(opt, lr=1e-3, wd=0.05)
    depth = model.get_num_layers()
    for group in opt.param_groups:
        assert group["lr"] == pytest.approx(1e-3 * 0.5 ** (depth + 1 - group["layer_id"]))
