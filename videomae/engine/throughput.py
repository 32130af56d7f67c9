"""Model FLOPs utilisation: analytic FLOPs per clip and the accelerator's peak."""

from __future__ import annotations

import torch
from torch import nn

from videomae.config import MaskConfig
from videomae.masking import MaskGenerator
from videomae.models.flops import pretrain_flops
from videomae.objectives import decoded_positions

__all__ = ["PEAK_TFLOPS", "peak_flops", "train_flops_per_clip"]

# Dense bf16/fp16 tensor-core peaks (TFLOP/s) from the vendors' data sheets; matched against the device name.
PEAK_TFLOPS: dict[str, float] = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}


def train_flops_per_clip(model: nn.Module, mask: MaskConfig) -> int:
    """Forward + backward matmul FLOPs of one clip under this masking (token counts from a real mask)."""
    hidden, decode = MaskGenerator.seeded(mask, model.grid_size, seed=0)(1)
    visible = int((~hidden).sum())
    decoded = int(decoded_positions(hidden, decode).sum())
    return pretrain_flops(model.model_config, visible, decoded).train_step


def peak_flops(device: torch.device, precision: str) -> float | None:
    """Peak FLOP/s of ``device`` for bf16/fp16 matmuls; None on CPU, in fp32, or for an unlisted GPU."""
    if device.type != "cuda" or precision == "fp32":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None
