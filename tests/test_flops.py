"""The analytic FLOP count used for MFU agrees with PyTorch's own operator-level counter."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from videomae.masking import running_cell_mask, tube_mask
from videomae.models import create_model
from videomae.models.flops import pretrain_flops
from videomae.models.layers import set_fused_attention


@pytest.mark.parametrize("dual", [False, True])
def test_analytic_forward_flops_match_the_operator_count(dual: bool) -> None:
    model = create_model("pretrain_videomae_tiny_patch16_224", img_size=64, all_frames=4).eval()
    set_fused_attention(model, False)  # the operator counter sees the plain-math attention matmuls, not fused SDPA
    grid = model.grid_size
    num_tokens = grid[0] * grid[1] * grid[2]
    generator = torch.Generator().manual_seed(0)
    mask = tube_mask(2, grid, 0.75, generator=generator)
    decode_mask = running_cell_mask(2, grid, 0.5, generator=generator) if dual else None
    num_visible = num_tokens - int(mask[0].sum())
    num_decoded = num_tokens - int(decode_mask[0].sum()) if dual else num_tokens - num_visible

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(2, 3, 4, 64, 64), mask, decode_mask)
    expected = pretrain_flops(model.model_config, num_visible, num_decoded).forward * 2
    assert counter.get_total_flops() == expected
