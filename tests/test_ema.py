"""Model EMA: timm's ``ModelEmaV3`` on our classifier does what fine-tuning needs, so no wrapper of our own.

Checked: the update is ``ema = decay * ema + (1 - decay) * model`` on every parameter, the warm-up decay
formula, the first update copying the weights, a bfloat16 model averaged in float32, the averaged model
producing the logits of the averaged weights, and its state dict round trip (for checkpoints).
"""

from __future__ import annotations

import copy

import pytest
import torch
from timm.utils import ModelEmaV3

from videomae.models import create_model

TINY = dict(img_size=32, patch_size=8, all_frames=4)


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("vit_tiny_patch16_224", num_classes=5, init_scale=1.0, **TINY)


def _perturb(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)


def test_update_is_exponential_average() -> None:
    model = _model(0)
    ema = ModelEmaV3(model, decay=0.9)
    start = copy.deepcopy(model.state_dict())
    _perturb(model, 1)
    ema.update(model)
    for name, value in ema.module.state_dict().items():
        torch.testing.assert_close(value, 0.9 * start[name] + 0.1 * model.state_dict()[name], rtol=0, atol=1e-6)
    assert not ema.module.training, "the averaged copy evaluates in eval mode"
    assert all(p.grad is None for p in ema.module.parameters())


def test_warmup_decay_and_first_update_copies() -> None:
    model = _model(0)
    ema = ModelEmaV3(model, decay=0.999, use_warmup=True, warmup_gamma=1.0, warmup_power=0.75)
    # step s counts optimizer steps; the first update (s <= 1) copies, then 1 - (1 + (s - 1)) ** -power
    assert ema.get_decay(1) == 0.0
    for step in (2, 5, 50):
        assert ema.get_decay(step) == pytest.approx(1 - step**-0.75)
    assert ema.get_decay(10**6) == 0.999, "capped at decay"
    _perturb(model, 2)
    ema.update(model, step=1)
    for name, value in ema.module.state_dict().items():
        assert torch.equal(value, model.state_dict()[name])


def test_averaged_model_gives_logits_of_averaged_weights() -> None:
    model, other = _model(0), _model(1)
    ema = ModelEmaV3(model, decay=0.5)
    ema.update(other)
    reference = _model(2).eval()
    with torch.no_grad():
        for (_, r), (_, a), (_, b) in zip(reference.named_parameters(), model.named_parameters(),
                                          other.named_parameters()):  # fmt: skip
            r.copy_(0.5 * a + 0.5 * b)
    videos = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(ema(videos), reference(videos), rtol=1e-5, atol=1e-5)


def test_bfloat16_model_averaged_in_float32() -> None:
    """DeepSpeed bf16 keeps the module in bf16; ``dtype=float32`` accumulates steps far below bf16 resolution."""
    model = _model(0).to(torch.bfloat16)
    ema = ModelEmaV3(model, decay=0.9999, dtype=torch.float32)
    first = ema.module.head.weight.detach().clone()
    with torch.no_grad():
        model.head.weight.add_(1.0)
    for _ in range(10):
        ema.update(model)
    assert ema.module.head.weight.dtype == torch.float32
    expected = first + (1 - 0.9999**10) * (model.head.weight.float() - first)
    torch.testing.assert_close(ema.module.head.weight, expected, rtol=0, atol=1e-6)
    assert (ema.module.head.weight - first).abs().min() > 5e-4


def test_state_dict_round_trip() -> None:
    model = _model(0)
    ema = ModelEmaV3(model, decay=0.9)
    _perturb(model, 4)
    ema.update(model)
    restored = ModelEmaV3(_model(5), decay=0.9)
    restored.module.load_state_dict(ema.module.state_dict())
    for name, value in restored.module.state_dict().items():
        assert torch.equal(value, ema.module.state_dict()[name])
