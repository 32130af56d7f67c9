"""Training objectives, one module per method."""

from videomae.objectives.masked_pixels import MaskedPixelLoss, decoded_positions
from videomae.objectives.pixels import denormalize, patch_pixel_targets, patchify, unpatchify
from videomae.objectives.reconstruction import (
    baseline_predictions,
    masked_input_pixels,
    neighbour_mean,
    reconstruction_errors,
    target_space_reconstruction,
)

__all__ = [
    "MaskedPixelLoss",
    "baseline_predictions",
    "decoded_positions",
    "denormalize",
    "masked_input_pixels",
    "neighbour_mean",
    "patch_pixel_targets",
    "patchify",
    "reconstruction_errors",
    "target_space_reconstruction",
    "unpatchify",
]

from videomae.objectives.distillation import FEATURE_LOSSES, DistillationLoss  # noqa: E402

__all__ += ["DistillationLoss", "FEATURE_LOSSES"]
