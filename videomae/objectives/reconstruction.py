"""Reconstructions in the space the model predicts, and their error against a trivial baseline.

With per-patch normalised targets (the VideoMAE default) a prediction says a hidden patch's pattern, never its mean
colour or contrast, which the model does not see. Drawing it back in pixels with the hidden patch's own statistics
would put the true shapes even into an untrained model's picture; with the statistics of the visible patches around
it, the colour the model cannot know dominates the error: on demo clips a decoder that predicts the exact target
comes only 7% below the baseline in pixel MSE. So a reconstruction is shown and scored in the target space: per-patch
normalised pixels (each token's pixels standardised per channel) or, for ``normalize_target: false``, 0..1 pixels.

Scores are :class:`~videomae.objectives.MaskedPixelLoss` (the training loss) over the tokens hidden from the encoder
and predicted by the decoder, for the model's predictions (``recon_mse``) and for the baseline
(``recon_baseline_mse``), which predicts each hidden patch flat in the mean colour of the visible patches around it:
in normalised space a flat patch is 0 whatever its colour, so the baseline scores ~1 (the target's variance); in pixel
space the colour is the per-channel mean over the ``NEIGHBOURS`` visible tokens nearest in the ``(t, h, w)`` token
grid (Euclidean distance in tokens, ties to the lower token index; under a tube mask, visible tokens of the same
tubelet step around it). Neither needs training; a model scores below it only with structure it learned.
"""

from __future__ import annotations

import torch
from einops import rearrange

from videomae.masking import decoded_positions
from videomae.objectives.masked_pixels import MaskedPixelLoss, _select
from videomae.objectives.pixels import denormalize, patch_pixel_targets, patchify, unpatchify

__all__ = [
    "NEIGHBOURS",
    "baseline_predictions",
    "masked_input_pixels",
    "neighbour_mean",
    "reconstruction_errors",
    "target_space_reconstruction",
]

NEIGHBOURS = 4


def neighbour_mean(
    patches: torch.Tensor, mask: torch.Tensor, grid: tuple[int, int, int], neighbours: int = NEIGHBOURS
) -> torch.Tensor:
    """Per-channel mean colour of the visible patches nearest to every token (see the module docstring).

    Args:
        patches: pixels ``[B, N, P, C]`` (``P`` pixels of a token, channel last).
        mask: bool ``[B, N]``, True = hidden from the encoder (the same count per sample).
        grid: the token grid ``(T', H', W')``.
        neighbours: visible tokens averaged (fewer when fewer are visible).

    Returns:
        ``[B, N, 1, C]``.
    """
    batch_size, num_tokens = mask.shape
    visible = int((~mask[0]).sum())
    if visible == 0:
        raise ValueError("every token is hidden: no visible patch to take a colour from")
    axes = [torch.arange(n, device=mask.device) for n in grid]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(num_tokens, 3)  # (N, 3)
    dist2 = (coords[:, None] - coords[None]).pow(2).sum(-1)  # (N, N) squared distances, integers
    # One integer key per (token, candidate): distance first, then the candidate's index, so ties are reproducible.
    key = dist2 * num_tokens + torch.arange(num_tokens, device=mask.device)
    key = key.expand(batch_size, num_tokens, num_tokens).masked_fill(mask[:, None, :], torch.iinfo(key.dtype).max)
    nearest = key.topk(min(neighbours, visible), dim=-1, largest=False).indices  # (B, N, k)
    rows = torch.arange(batch_size, device=mask.device)[:, None, None]
    return patches.mean(dim=-2)[rows, nearest].mean(dim=-2)[:, :, None]  # (B, N, 1, C)


def baseline_predictions(
    videos: torch.Tensor,
    mask: torch.Tensor,
    decode_mask: torch.Tensor | None,
    patch_size: int,
    tubelet_size: int,
    normalize_target: bool = True,
) -> torch.Tensor:
    """The baseline's "predictions" ``[B, N_dec, P * C]``: each token flat in its visible neighbours' mean colour
    (0 in normalised space)."""
    flat = _flat_tokens(videos, mask, patch_size, tubelet_size, normalize_target)
    return _select(flat, decoded_positions(mask, decode_mask))


def _flat_tokens(
    videos: torch.Tensor, mask: torch.Tensor, patch_size: int, tubelet_size: int, normalize_target: bool
) -> torch.Tensor:
    """The baseline for every token, ``[B, N, P * C]``."""
    if normalize_target:
        num_values = patch_size * patch_size * tubelet_size * videos.shape[1]
        return videos.new_zeros(*mask.shape, num_values, dtype=torch.float32)
    pixels = patch_pixel_targets(videos, patch_size, tubelet_size, normalize=False)
    pixels = rearrange(pixels, "b n (p c) -> b n p c", c=videos.shape[1])  # (B, N, P, C)
    flat = neighbour_mean(pixels, mask, _grid(videos, patch_size, tubelet_size)).expand_as(pixels)
    return rearrange(flat, "b n p c -> b n (p c)")


def reconstruction_errors(
    pred: torch.Tensor,
    videos: torch.Tensor,
    mask: torch.Tensor,
    decode_mask: torch.Tensor | None,
    patch_size: int,
    tubelet_size: int,
    normalize_target: bool = True,
) -> dict[str, float]:
    """MSE in the target space of the predictions and of the baseline, over the hidden tokens the decoder predicted.

    Returns:
        ``{"recon_mse": ..., "recon_baseline_mse": ...}``.
    """
    loss = MaskedPixelLoss(patch_size, tubelet_size, normalize_target)
    baseline = baseline_predictions(videos, mask, decode_mask, patch_size, tubelet_size, normalize_target)
    return {
        "recon_mse": loss(pred.detach().float(), videos, mask, decode_mask).item(),
        "recon_baseline_mse": loss(baseline, videos, mask, decode_mask).item(),
    }


def target_space_reconstruction(
    pred: torch.Tensor,
    videos: torch.Tensor,
    mask: torch.Tensor,
    decode_mask: torch.Tensor | None,
    patch_size: int,
    tubelet_size: int,
    normalize_target: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Target, reconstruction and which tokens are scored, in the target space, for pictures.

    Visible tokens of the reconstruction show their own target (the encoder had those pixels, so their
    normalisation too); predicted hidden tokens show the prediction; hidden tokens the decoder dropped show 0
    (a flat grey patch in normalised space) or, in pixel space, the baseline's flat colour.

    Returns:
        ``target`` and ``reconstruction`` ``[B, C, T, H, W]`` (normalised values or 0..1 pixels), and the bool
        ``scored`` ``[B, N]``: hidden from the encoder and predicted by the decoder.
    """
    grid = _grid(videos, patch_size, tubelet_size)
    target = patch_pixel_targets(videos, patch_size, tubelet_size, normalize_target)  # (B, N, P*C)
    predicted = decoded_positions(mask, decode_mask)
    shown = torch.where(mask[..., None], _flat_tokens(videos, mask, patch_size, tubelet_size, normalize_target), target)
    shown[predicted] = pred.detach().float().reshape(-1, target.shape[-1])
    shown[~mask] = target[~mask]  # a decoder keeping a visible token still shows the input there
    channels = videos.shape[1]
    target_video = unpatchify(target, grid, patch_size, tubelet_size, channels)
    return target_video, unpatchify(shown, grid, patch_size, tubelet_size, channels), predicted & mask


def masked_input_pixels(
    videos: torch.Tensor, mask: torch.Tensor, patch_size: int, tubelet_size: int, fill: float = 0.5
) -> torch.Tensor:
    """What the encoder sees, as 0..1 pixels ``[B, C, T, H, W]``: hidden tokens filled with ``fill`` grey."""
    pixels = patchify(denormalize(videos.float()), patch_size, tubelet_size)  # (B, N, P*C)
    grid = _grid(videos, patch_size, tubelet_size)
    return unpatchify(pixels.masked_fill(mask[..., None], fill), grid, patch_size, tubelet_size, videos.shape[1])


def _grid(videos: torch.Tensor, patch_size: int, tubelet_size: int) -> tuple[int, int, int]:
    _, _, frames, height, width = videos.shape
    return frames // tubelet_size, height // patch_size, width // patch_size
