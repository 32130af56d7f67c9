"""MFU inputs: token counts under dual masking, and the peak table."""

from __future__ import annotations

import torch

from videomae.config import MaskConfig
from videomae.engine.throughput import peak_flops, train_flops_per_clip
from videomae.models import create_model
from videomae.models.flops import pretrain_flops


def test_flops_per_clip_counts_visible_and_decoded_tokens():
    model = create_model("pretrain_videomae_tiny_patch16_224", img_size=32, patch_size=8, all_frames=4)
    # grid (2, 4, 4) = 32 tokens; tube 0.9 hides int(0.9 * 16) = 14 of 16 per time slice -> 4 visible;
    # the running cell keeps half of all tokens for the decoder -> 16 decoded.
    dual = train_flops_per_clip(model, MaskConfig(ratio=0.9, decoder_ratio=0.5))
    assert dual == 3 * pretrain_flops(model.model_config, 4, 16).forward
    # Without a decoder mask the decoder predicts every hidden token: 28.
    plain = train_flops_per_clip(model, MaskConfig(ratio=0.9, decoder_type="none"))
    assert plain == 3 * pretrain_flops(model.model_config, 4, 28).forward
    assert plain > dual


def test_no_mfu_on_cpu_or_in_fp32():
    assert peak_flops(torch.device("cpu"), "bf16") is None
    assert peak_flops(torch.device("cuda", 0), "fp32") is None
