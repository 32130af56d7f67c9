"""A reconstruction picture of one video by a pretraining model (``videomae visualize``)."""

from __future__ import annotations

import os

import torch

from videomae.checkpoint import CheckpointError
from videomae.data.datasets import decode_clips
from videomae.data.manifest import ManifestRow
from videomae.data.sampling import sample_test_indices
from videomae.data.transforms import EvalTransform
from videomae.evaluation.pictures import ReconstructionPicture, reconstruction_grid
from videomae.inference.loading import InferenceModel
from videomae.masking import tube_mask
from videomae.models import PretrainVisionTransformer

__all__ = ["reconstruction_picture"]


@torch.no_grad()
def reconstruction_picture(
    model: InferenceModel,
    video: str | os.PathLike,
    *,
    mask_ratio: float = 0.9,
    sampling_rate: int = 4,
    num_frames_shown: int = 4,
    seed: int = 0,
    normalize_target: bool = True,
    backend: str = "auto",
) -> ReconstructionPicture:
    """The labelled rows of :func:`~videomae.evaluation.pictures.reconstruction_grid` (original, visible input,
    reconstruction, error) of the centred clip of ``video`` under a tube mask, and its errors against the baseline.

    The decoder predicts every hidden token (no decoder mask), as the training pictures do.

    Args:
        model: a pretraining model (encoder + decoder).
        video: video file or frame folder.
        mask_ratio: share of tubes hidden from the encoder.
        sampling_rate: frame stride of the clip.
        num_frames_shown: evenly spaced frames in the picture.
        seed: seeds the mask.
        normalize_target: the model was trained on per-patch normalised pixels (shown and scored in that space).
        backend: ``"auto"``, ``"decord"`` or ``"pyav"``.

    Returns:
        The picture (uint8 ``[rows * S, LABEL_WIDTH + num_frames_shown * S, 3]``, ``S``: the model's input size) with
        ``recon_mse`` and ``recon_baseline_mse``.

    Raises:
        CheckpointError: the model is not a pretraining model.
        DecodeError: the video cannot be read.
    """
    net = model.model
    if not isinstance(net, PretrainVisionTransformer):
        raise CheckpointError(f"{model.source}: visualize needs a pretraining checkpoint (encoder + decoder), got "
                              f"{type(net).__name__}")  # fmt: skip
    frames, positions = decode_clips(
        ManifestRow(path=os.fspath(video)),
        lambda n: sample_test_indices(n, model.num_frames, sampling_rate),
        backend=backend,
    )
    videos = EvalTransform(model.input_size)(frames[positions[0]])  # (1, C, T, S, S)
    mask = tube_mask(1, net.grid_size, mask_ratio, generator=torch.Generator().manual_seed(seed))  # (1, N)
    with model.autocast():
        pred = net(videos.to(model.device), mask.to(model.device), None).float().cpu()
    return reconstruction_grid(
        videos, mask, None, pred, net.patch_size, net.tubelet_size, num_frames_shown, normalize_target
    )
