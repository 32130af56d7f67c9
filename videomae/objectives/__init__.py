"""Training objectives, one module per method."""

from videomae.objectives.masked_pixels import (
    MaskedPixelLoss,
    decoded_positions,
    masked_input_pixels,
    predictions_to_pixels,
)
from videomae.objectives.pixels import denormalize, patch_pixel_targets, patchify, unpatchify

__all__ = [
    "MaskedPixelLoss",
    "decoded_positions",
    "denormalize",
    "masked_input_pixels",
    "patch_pixel_targets",
    "patchify",
    "predictions_to_pixels",
    "unpatchify",
]

from videomae.objectives.distillation import FEATURE_LOSSES, DistillationLoss  # noqa: E402

__all__ += ["DistillationLoss", "FEATURE_LOSSES"]
