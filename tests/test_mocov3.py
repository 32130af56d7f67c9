"""MoCo v3 pieces against hand computations and independent references: the momentum schedule and update, the
InfoNCE loss, the view augmentation (torchvision's ops for fixed parameters), the frozen random patch projection,
the heads' layout, and the config's refusals."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from videomae.config import ConfigError, load_config
from videomae.config.batch_plan import batch_plan
from videomae.engine.optim import param_groups
from videomae.methods.moco_heads import (
    GlobalBatchNorm1d,
    MocoV3Model,
    build_mlp,
    freeze_patch_embedding,
    momentum_at,
    update_momentum_encoder,
)
from videomae.methods.moco_views import (
    ViewParams,
    ViewRecipe,
    apply_view,
    augment_views,
    blur_kernel_size,
    draw_view_params,
)
from videomae.models import create_model, list_models
from videomae.objectives.contrastive import info_nce, symmetric_info_nce
from videomae.recipes import resolve

TINY = {"img_size": 32, "patch_size": 8, "all_frames": 1, "tubelet_size": 1, "embed_dim": 32, "depth": 1,
        "num_heads": 2, "num_classes": 0}  # fmt: skip


def test_cosine_momentum_schedule_by_hand():
    assert momentum_at(0, 100, 0.99) == pytest.approx(0.99, abs=1e-15)
    assert momentum_at(25, 100, 0.99) == pytest.approx(1 - 0.01 * (math.sqrt(0.5) + 1) / 2, abs=1e-15)
    assert momentum_at(50, 100, 0.99) == pytest.approx(0.995, abs=1e-15)
    assert momentum_at(100, 100, 0.99) == 1.0
    assert momentum_at(50, 100, 0.99, cosine=False) == 0.99


def test_momentum_update_by_hand_skips_frozen_parameters():
    key, query = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        key.weight.copy_(torch.tensor([[1.0, 2.0]]))
        key.bias.fill_(5.0)
        query.weight.copy_(torch.tensor([[3.0, 4.0]]))
        query.bias.fill_(-7.0)
    query.bias.requires_grad_(False)  # a frozen parameter: the same on both sides in MoCo, never moved
    update_momentum_encoder(key, query.to(torch.bfloat16), 0.9)  # the query side in the training precision
    torch.testing.assert_close(key.weight, torch.tensor([[0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * 4]]))
    assert key.weight.dtype == torch.float32 and key.bias.item() == 5.0


def test_info_nce_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 2.0]])
    keys = torch.tensor([[0.0, 1.0], [1.0, 0.0], [3.0, 4.0], [0.0, -1.0], [1.0, 1.0], [-1.0, 0.0]])  # 2 ranks x 3
    tau, first = 0.5, 3  # rank 1 of 2: query i matches key 3 + i
    total = 0.0
    for i, qi in enumerate(q.tolist()):
        qn = [v / math.hypot(*qi) for v in qi]
        sims = [sum(a * b / math.hypot(*k) for a, b in zip(qn, k)) / tau for k in keys.tolist()]
        total += -(sims[first + i] - math.log(sum(math.exp(s) for s in sims)))
    expected = total / 3 * 2 * tau
    assert info_nce(q, keys, first, tau).item() == pytest.approx(expected, rel=1e-6)
    k1, k2 = torch.randn(6, 2), torch.randn(6, 2)
    both = symmetric_info_nce(q, q.flip(0), k1, k2, 0, tau)
    assert both.item() == pytest.approx((info_nce(q, k2, 0, tau) + info_nce(q.flip(0), k1, 0, tau)).item())


def _fixed_params() -> ViewParams:
    g = torch.Generator().manual_seed(0)
    return ViewParams(
        order=torch.stack([torch.randperm(4, generator=g) for _ in range(4)]),
        factors=torch.tensor(
            [[1.3, 0.7, 1.1, 0.07], [0.6, 1.4, 0.85, -0.1], [1.0, 1.2, 1.2, 0.03], [0.9, 0.8, 0.9, -0.05]]
        ),  # fmt: skip
        jitter=torch.tensor([True, True, False, True]),
        grayscale=torch.tensor([False, True, False, False]),
        sigma=torch.tensor([0.5, 1.5, 2.0, 0.1]),
        blur=torch.tensor([True, False, True, True]),
        solarize=torch.tensor([False, True, True, False]),
    )


def test_views_match_torchvision_for_fixed_parameters():
    """Each clip (2 frames) through torchvision's v2 ops in its own order with its own parameters, frame by frame."""
    x = torch.rand(4, 3, 2, 32, 32, generator=torch.Generator().manual_seed(1))
    p = _fixed_params()
    out = apply_view(x, p)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    size = blur_kernel_size(32)
    assert size == 5 and blur_kernel_size(224) == 23
    for i in range(4):
        frames = x[i].transpose(0, 1)  # (T, C, H, W)
        if p.jitter[i]:
            for op in p.order[i].tolist():
                frames = ops[op](frames, p.factors[i, op].item())
        if p.grayscale[i]:
            frames = TF.rgb_to_grayscale(frames, num_output_channels=3)
        if p.blur[i]:
            frames = TF.gaussian_blur(frames, [size, size], [p.sigma[i].item()] * 2)
        if p.solarize[i]:
            frames = TF.solarize(frames, 0.5)
        torch.testing.assert_close(out[i], frames.transpose(0, 1), atol=2e-6, rtol=0)


def test_view_parameters_follow_the_recipe():
    g = torch.Generator().manual_seed(0)
    n = 20000
    p = draw_view_params(n, ViewRecipe(blur_prob=0.1, solarize_prob=0.2), g, torch.device("cpu"))
    for flags, rate in [(p.jitter, 0.8), (p.grayscale, 0.2), (p.blur, 0.1), (p.solarize, 0.2)]:
        assert abs(flags.float().mean().item() - rate) < 0.015
    low, high = p.factors.min(0).values, p.factors.max(0).values
    torch.testing.assert_close(low, torch.tensor([0.6, 0.6, 0.8, -0.1]), atol=1e-3, rtol=0)
    torch.testing.assert_close(high, torch.tensor([1.4, 1.4, 1.2, 0.1]), atol=1e-3, rtol=0)
    assert 0.1 <= p.sigma.min() and p.sigma.max() <= 2.0
    assert sorted(p.order[0].tolist()) == [0, 1, 2, 3]


def test_views_without_augmentation_round_trip_the_normalisation_and_draw_from_the_generator():
    off = ViewRecipe(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0)
    pixels = torch.rand(2, 3, 3, 1, 8, 8)  # (V, B, C, T, H, W) in 0..1
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1), torch.tensor([0.229, 0.224, 0.225])
    normalised = (pixels - mean) / std.view(3, 1, 1, 1)
    torch.testing.assert_close(augment_views(normalised, (off, off), torch.Generator()), normalised)
    on = (ViewRecipe(), ViewRecipe(blur_prob=0.1, solarize_prob=0.2))
    a = augment_views(normalised, on, torch.Generator().manual_seed(3))
    b = augment_views(normalised, on, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, normalised)


def test_heads_follow_the_release_layout():
    projector = build_mlp(3, 32, 64, 16, last_bn=True)
    predictor = build_mlp(2, 16, 64, 16, last_bn=False)
    kinds = [type(m).__name__ for m in projector]
    assert kinds == ["Linear", "GlobalBatchNorm1d", "ReLU", "Linear", "GlobalBatchNorm1d", "ReLU", "Linear",
                     "GlobalBatchNorm1d"]  # fmt: skip
    assert all(m.bias is None for m in projector if isinstance(m, nn.Linear))
    assert projector[-1].affine is False and projector[1].affine is True
    assert [type(m).__name__ for m in predictor] == ["Linear", "GlobalBatchNorm1d", "ReLU", "Linear"]
    # One process: exactly BatchNorm.
    x = torch.randn(8, 64)
    bn, ref = GlobalBatchNorm1d(64), nn.BatchNorm1d(64)
    torch.testing.assert_close(bn(x), ref(x))
    torch.testing.assert_close(bn.running_var, ref.running_var)
    torch.testing.assert_close(bn.eval()(x), ref.eval()(x))  # evaluation: the running statistics
    assert GlobalBatchNorm1d(64).to(torch.bfloat16)(x.bfloat16()).dtype == torch.bfloat16  # a bf16 engine module


def test_frozen_patch_projection_is_drawn_as_the_release_and_never_updated():
    torch.manual_seed(0)
    model = MocoV3Model(create_model("vit_tiny_patch16_224", **TINY), mlp_dim=32, proj_dim=8)
    freeze_patch_embedding(model.backbone)
    proj = model.backbone.patch_embed.proj
    bound = math.sqrt(6 / (3 * 8 * 8 + 32))
    assert proj.weight.abs().max() <= bound and proj.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)
    assert torch.all(proj.bias == 0)
    groups = param_groups(model, 0.1)
    held = {id(p) for g in groups for p in g["params"]}
    assert id(proj.weight) not in held and id(proj.bias) not in held
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(groups, lr=1e-2)
    for _ in range(3):
        q = model(torch.randn(8, 3, 1, 32, 32))
        optimizer.zero_grad()
        (q**2).mean().backward()
        optimizer.step()
    after = model.state_dict()
    patch, fc1 = "encoder.backbone.patch_embed.proj.weight", "encoder.backbone.blocks.0.mlp.fc1.weight"
    assert torch.equal(after[patch], before[patch]) and not torch.equal(after[fc1], before[fc1])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.num_sample=4", "data.num_sample"),
        ("deepspeed.zero_stage=3", "deepspeed.zero_stage"),
        ("moco.blur_prob=[1.0]", "moco.blur_prob"),
        ("moco.solarize_prob=[0.0, 1.5]", "moco.solarize_prob[1]"),
        ("moco.temperature=0", "moco.temperature"),
        ("model.overrides={num_classes: 10}", "model.overrides.num_classes"),
        ("moco.nope=1", "moco.nope"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["method=mocov3", "train.max_steps=1", override])
    assert str(err.value).startswith(key), str(err.value)


MOCO_RECIPES = ["mocov3_demo", "mocov3_video_demo", "mocov3_vit_b_in1k"]


@pytest.mark.parametrize("name", MOCO_RECIPES)
def test_recipes_load_as_mocov3_with_a_classifier_and_a_header(name):
    path = resolve(name, ("pretrain",))
    cfg = load_config(path)
    assert type(cfg).__name__ == "MocoV3Config" and cfg.data.num_sample == 2
    assert cfg.model.name in list_models("vit_") and path.read_text().startswith("#")
    assert cfg.data.num_frames == cfg.model.overrides["all_frames"]


def test_the_published_vit_b_recipe():
    cfg = load_config(resolve("mocov3_vit_b_in1k", ("pretrain",)))
    m, t = cfg.moco, cfg.train
    assert (m.temperature, m.momentum, m.momentum_cosine, m.mlp_dim, m.proj_dim, m.freeze_patch_embed) == (
        0.2, 0.99, True, 4096, 256, True)  # fmt: skip
    assert (t.epochs, t.warmup_epochs, t.weight_decay, t.betas, t.lr) == (300, 40, 0.1, [0.9, 0.999], 1.5e-4)
    assert (m.jitter_prob, m.jitter_strength, m.grayscale_prob, m.blur_prob, m.solarize_prob) == (
        0.8, [0.4, 0.4, 0.2, 0.1], 0.2, [1.0, 0.1], [0.0, 0.2])  # fmt: skip
    plan = batch_plan(cfg, world_size=32)  # 128 images x 32 processes = 4096, lr per 256 images (not views)
    assert plan.videos_per_step == 4096 and plan.peak_lr == pytest.approx(1.5e-4 * 4096 / 256)
