"""The masked-pixel objective against hand computations on tiny tensors."""

from __future__ import annotations

import statistics

import pytest
import torch
from helpers import imagenet_normalise

from videomae.objectives import (
    MaskedPixelLoss,
    masked_input_pixels,
    patch_pixel_targets,
    patchify,
    target_space_reconstruction,
    unpatchify,
)


def _hand_targets(pixels: torch.Tensor, patch: int, tubelet: int, normalize: bool) -> list[list[list[float]]]:
    """Per sample, per token (t, h, w order), the (p0, p1, p2, c)-ordered target, computed with plain loops."""
    batch, channels, frames, height, width = pixels.shape
    out = []
    for b in range(batch):
        tokens = []
        for t in range(frames // tubelet):
            for h in range(height // patch):
                for w in range(width // patch):
                    per_channel = []
                    for c in range(channels):
                        values = [
                            float(pixels[b, c, t * tubelet + p0, h * patch + p1, w * patch + p2])
                            for p0 in range(tubelet)
                            for p1 in range(patch)
                            for p2 in range(patch)
                        ]
                        if normalize:
                            mean, std = statistics.fmean(values), statistics.stdev(values)
                            values = [(v - mean) / (std + 1e-6) for v in values]
                        per_channel.append(values)
                    tokens.append([per_channel[c][k] for k in range(len(per_channel[0])) for c in range(channels)])
        out.append(tokens)
    return out


@pytest.fixture
def tiny_pixels() -> torch.Tensor:
    return torch.rand(2, 3, 4, 4, 4, generator=torch.Generator().manual_seed(0))  # 2 tubelets x 2 x 2 tokens


def test_patchify_layout_and_round_trip(tiny_pixels: torch.Tensor) -> None:
    patches = patchify(tiny_pixels, patch_size=2, tubelet_size=2)
    assert patches.shape == (2, 8, 2 * 2 * 2 * 3)
    # token (t=1, h=0, w=1) is index 1*4 + 0*2 + 1 = 5; its element (p0=1, p1=0, p2=1, c=2)
    assert patches[1, 5, ((1 * 2 + 0) * 2 + 1) * 3 + 2] == tiny_pixels[1, 2, 1 * 2 + 1, 0 * 2 + 0, 1 * 2 + 1]
    assert torch.equal(unpatchify(patches, (2, 2, 2), 2, 2), tiny_pixels)


@pytest.mark.parametrize("normalize", [True, False])
def test_targets_equal_hand_computation(tiny_pixels: torch.Tensor, normalize: bool) -> None:
    targets = patch_pixel_targets(imagenet_normalise(tiny_pixels), patch_size=2, tubelet_size=2, normalize=normalize)
    expected = torch.tensor(_hand_targets(tiny_pixels, 2, 2, normalize))
    assert torch.allclose(targets, expected, atol=1e-4)


def test_loss_without_decoder_mask_is_mse_on_hidden_tokens(tiny_pixels: torch.Tensor) -> None:
    mask = torch.tensor([[1, 0, 1, 0, 1, 0, 1, 0], [0, 1, 1, 0, 0, 1, 1, 0]], dtype=torch.bool)
    pred = torch.randn(2, 4, 24, generator=torch.Generator().manual_seed(1))
    loss = MaskedPixelLoss(patch_size=2, tubelet_size=2)(pred, imagenet_normalise(tiny_pixels), mask)
    targets = _hand_targets(tiny_pixels, 2, 2, True)
    squared = []
    for b in range(2):
        hidden = [n for n in range(8) if mask[b, n]]
        for k, n in enumerate(hidden):
            squared += [(float(pred[b, k, i]) - targets[b][n][i]) ** 2 for i in range(24)]
    assert loss.item() == pytest.approx(statistics.fmean(squared), rel=1e-5)


def test_dual_masking_loss_counts_only_hidden_and_kept_tokens(tiny_pixels: torch.Tensor) -> None:
    mask = torch.tensor([[1, 1, 1, 0, 1, 1, 1, 0], [1, 1, 0, 1, 1, 1, 1, 0]], dtype=torch.bool)
    decode_mask = torch.tensor([[0, 1, 1, 0, 1, 0, 0, 1], [1, 0, 0, 1, 0, 1, 1, 0]], dtype=torch.bool)
    pred = torch.randn(2, 4, 24, generator=torch.Generator().manual_seed(2))
    loss = MaskedPixelLoss(patch_size=2, tubelet_size=2)(pred, imagenet_normalise(tiny_pixels), mask, decode_mask)
    targets = _hand_targets(tiny_pixels, 2, 2, True)
    squared = []
    for b in range(2):
        kept = [n for n in range(8) if not decode_mask[b, n]]
        for k, n in enumerate(kept):
            if mask[b, n]:
                squared += [(float(pred[b, k, i]) - targets[b][n][i]) ** 2 for i in range(24)]
    assert loss.item() == pytest.approx(statistics.fmean(squared), rel=1e-5)


def test_loss_refuses_predictions_of_the_wrong_token_count(tiny_pixels: torch.Tensor) -> None:
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[:, :4] = True
    with pytest.raises(ValueError, match="do not match"):
        MaskedPixelLoss(2, 2)(torch.zeros(2, 3, 24), imagenet_normalise(tiny_pixels), mask)


def test_perfect_prediction_reconstructs_the_input(tiny_pixels: torch.Tensor) -> None:
    videos = imagenet_normalise(tiny_pixels)
    mask = torch.tensor([[1, 1, 1, 0, 1, 1, 1, 0]] * 2, dtype=torch.bool)
    decode_mask = torch.tensor([[0, 1, 0, 1, 0, 1, 0, 1]] * 2, dtype=torch.bool)
    kept = ~decode_mask
    perfect = patch_pixel_targets(videos, 2, 2)[kept].reshape(2, 4, 24)
    assert MaskedPixelLoss(2, 2)(perfect, videos, mask, decode_mask).item() == pytest.approx(0.0, abs=1e-10)
    target, shown, scored = target_space_reconstruction(perfect, videos, mask, decode_mask, 2, 2)
    shown, target = patchify(shown, 2, 2), patchify(target, 2, 2)
    known = kept | ~mask  # predicted or visible tokens show the target; the rest flat (0: grey)
    assert torch.allclose(shown[known], target[known], atol=1e-6)
    assert torch.all(shown[~known] == 0)
    assert torch.equal(scored, kept & mask)
    original = patchify(tiny_pixels, 2, 2)
    masked = patchify(masked_input_pixels(videos, mask, 2, 2), 2, 2)
    assert torch.all(masked[mask] == 0.5) and torch.allclose(masked[~mask], original[~mask], atol=1e-6)
