"""Reconstruction pictures and their errors: only what the model had is drawn, an untrained model does not beat the
flat baseline, a decoder that predicts the target does; the labelled picture; the engine's picture step into
``metrics.jsonl`` and TensorBoard."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from helpers import TINY_GRID, imagenet_normalise
from PIL import Image
from run_helpers import PRETRAIN_DEMO_YAML
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from videomae.config import MaskConfig, load_config
from videomae.data.datasets import decode_clips
from videomae.data.manifest import ManifestRow
from videomae.data.sampling import sample_test_indices
from videomae.data.transforms import EvalTransform
from videomae.engine.logging_utils import MetricsWriter, Picture
from videomae.evaluation.pictures import LABEL_WIDTH, reconstruction_grid, row_labels
from videomae.masking import tube_mask
from videomae.methods import pictures as method_pictures
from videomae.models import create_model
from videomae.objectives import (
    neighbour_mean,
    patch_pixel_targets,
    patchify,
    reconstruction_errors,
    target_space_reconstruction,
    unpatchify,
)


@pytest.fixture(scope="module")
def demo_clips(demo) -> torch.Tensor:
    """8 centred demo clips as the demo config feeds them: 8 frames of 64 px, normalised ``[8, 3, 8, 64, 64]``."""
    rows = list(csv.DictReader(open(demo / "train_unlabeled.csv")))[:8]
    clips = []
    for row in rows:
        frames, positions = decode_clips(ManifestRow(path=str(demo / row["path"])),
                                         lambda n: sample_test_indices(n, 8, 4))  # fmt: skip
        clips.append(EvalTransform(64)(frames[positions[0]])[0])
    return torch.stack(clips)


def _truth(videos: torch.Tensor, mask: torch.Tensor, normalize: bool, patch: int = 8) -> torch.Tensor:
    """A decoder that predicts exactly its targets (every hidden token)."""
    target = patch_pixel_targets(videos, patch, 2, normalize)
    return target[mask].reshape(videos.shape[0], -1, target.shape[-1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_untrained_model_is_not_closer_than_the_baseline(demo_clips, seed):
    cfg = load_config(PRETRAIN_DEMO_YAML)
    torch.manual_seed(seed)
    model = create_model(cfg.model.name, **cfg.model.create_kwargs()).eval()  # the demo run's model at step 0
    mask = tube_mask(len(demo_clips), model.grid_size, 0.9, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        pred = model(demo_clips, mask, None)
    errors = reconstruction_errors(pred, demo_clips, mask, None, 8, 2)
    # Measured: 1.295 / 1.276 / 1.272 against 0.992 (seeds 0, 1, 2): random structure only adds error.
    assert errors["recon_mse"] > errors["recon_baseline_mse"], errors
    truth = reconstruction_errors(_truth(demo_clips, mask, True), demo_clips, mask, None, 8, 2)
    assert truth["recon_mse"] == pytest.approx(0.0, abs=1e-10)  # the metric can tell a model that knows
    assert truth["recon_baseline_mse"] == errors["recon_baseline_mse"]


@pytest.mark.parametrize("normalize", [True, False])
def test_a_decoder_predicting_the_target_beats_the_baseline_by_hand(normalize):
    pixels = torch.rand(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))  # grid (2, 2, 2) of 4 px patches
    pixels[1, :, :2, :4, :4] = 0.25  # a flat hidden patch: its normalised target is 0
    videos = imagenet_normalise(pixels)
    mask = torch.tensor([[1, 0, 1, 1] * 2, [1, 1, 0, 1] * 2], dtype=torch.bool)  # tube masks, 3 of 4 hidden
    errors = reconstruction_errors(_truth(videos, mask, normalize, 4), videos, mask, None, 4, 2, normalize)
    assert errors["recon_mse"] == pytest.approx(0.0, abs=1e-10)
    patches = patchify(pixels, 4, 2).reshape(2, 8, 32, 3)  # (B, N, P, C)
    squared = []
    for b in range(2):
        visible = [n for n in range(8) if not mask[b, n]]
        for n in (n for n in range(8) if mask[b, n]):
            for c in range(3):
                values = patches[b, n, :, c]
                if normalize:  # the baseline predicts 0: the squared target, ((x - mean) / (std + 1e-6))^2
                    std = values.var(unbiased=True).sqrt() + 1e-6
                    squared += [float((v - values.mean()) / std) ** 2 for v in values]
                else:  # each grid has one visible token per tubelet step: the 4 nearest are those of both steps
                    colour = float(patches[b, visible, :, c].mean())
                    squared += [float(v - colour) ** 2 for v in values]
    assert errors["recon_baseline_mse"] == pytest.approx(sum(squared) / len(squared), rel=1e-4)
    assert errors["recon_baseline_mse"] > 0.01


def test_neighbour_mean_takes_the_four_nearest_visible_patches():
    grid = (2, 3, 3)  # tokens n = t * 9 + h * 3 + w
    patches = torch.arange(18, dtype=torch.float32).view(1, 18, 1, 1).expand(1, 18, 2, 1) * 10  # patch n: 10 n
    mask = torch.ones(1, 18, dtype=torch.bool)
    mask[0, [0, 2, 4, 8, 13]] = False  # visible: (0,0,0) (0,0,2) (0,1,1) (0,2,2) (1,1,1)
    mean = neighbour_mean(patches, mask, grid)[0, :, 0, 0]
    # token 1 (0,0,1): distances^2 to 0, 2, 4: 1, 1, 1; to 13: 2; to 8: 5 -> 0, 2, 4, 13
    assert mean[1].item() == pytest.approx(10 * (0 + 2 + 4 + 13) / 4)
    # token 17 (1,2,2): to 8: 1, to 13: 2, to 4: 3, to 2 and 0: 5 and 9 -> 8, 13, 4, 2
    assert mean[17].item() == pytest.approx(10 * (8 + 13 + 4 + 2) / 4)
    # token 5 (0,1,2): to 2, 4, 8: 1 each; to 13: 2 -> 2, 4, 8, 13 (0 at 5 is farther)
    assert mean[5].item() == pytest.approx(10 * (2 + 4 + 8 + 13) / 4)


def test_the_reconstruction_never_uses_what_was_hidden(demo_clips):
    mask = tube_mask(2, (4, 8, 8), 0.9, generator=torch.Generator().manual_seed(0))
    pred = torch.randn(2, int(mask[0].sum()), 8 * 8 * 2 * 3, generator=torch.Generator().manual_seed(1))
    videos = demo_clips[:2]
    changed = patchify(videos, 8, 2).clone()
    changed[mask] = changed[mask] * 3 + 1  # other colours and contrast in every hidden patch
    changed = unpatchify(changed, (4, 8, 8), 8, 2)
    for normalize in (True, False):
        _, shown, scored = target_space_reconstruction(pred, videos, mask, None, 8, 2, normalize)
        _, shown_changed, _ = target_space_reconstruction(pred, changed, mask, None, 8, 2, normalize)
        assert torch.equal(patchify(shown, 8, 2)[mask], patchify(shown_changed, 8, 2)[mask])
        assert torch.equal(scored, mask)


@pytest.mark.parametrize("normalize", [True, False])
def test_the_picture_has_labelled_rows(demo_clips, normalize):
    videos, mask = demo_clips[:2], tube_mask(2, (4, 8, 8), 0.9, generator=torch.Generator().manual_seed(0))
    picture = reconstruction_grid(videos, mask, None, _truth(videos, mask, normalize), 8, 2, 4, normalize)
    labels = row_labels(normalize)
    assert labels[:2] == ["original", "visible input"] and labels[-1] == "error"
    image = picture.image.numpy()
    assert image.shape == (2 * len(labels) * 64, LABEL_WIDTH + 4 * 64, 3)
    frames = torch.linspace(0, 7, 4).round().long()
    original = (videos[0] * torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1, 1)
                + torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1, 1))[:, frames]  # fmt: skip
    expected = (original.clamp(0, 1) * 255).round().permute(2, 1, 3, 0).reshape(64, 4 * 64, 3).numpy()
    assert np.abs(image[:64, LABEL_WIDTH:].astype(int) - expected).max() <= 1
    error_row = image[(len(labels) - 1) * 64 : len(labels) * 64, LABEL_WIDTH:]
    assert error_row.max() <= 1  # the exact target: no error anywhere
    for row in range(2 * len(labels)):  # every row has its label: dark text on the white column
        column = image[row * 64 : (row + 1) * 64, :LABEL_WIDTH]
        assert (column < 100).any() and (column == 255).mean() > 0.8
    assert picture.recon_mse == pytest.approx(0.0, abs=1e-10) and picture.recon_baseline_mse > 0


class _StubEngine:
    """The engine as far as the pictures use it, predicting exactly the normalised target."""

    device = torch.device("cpu")

    def __init__(self, patch_size: int, tubelet_size: int) -> None:
        self.patch_size, self.tubelet_size = patch_size, tubelet_size

    def __call__(self, videos, mask, decode_mask):
        target = patch_pixel_targets(videos, self.patch_size, self.tubelet_size)
        return target[mask].reshape(videos.shape[0], -1, target.shape[-1])

    def eval(self):
        return self

    def train(self):
        return self

    def bfloat16_enabled(self):
        return False

    def fp16_enabled(self):
        return False


def test_a_picture_step_goes_to_metrics_jsonl_and_tensorboard(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = create_model("pretrain_videomae_tiny_patch16_224", **TINY_GRID)  # grid (2, 4, 4)
    clips = [torch.randn(3, 4, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    pictures = method_pictures.ReconstructionPictures(clips, model, MaskConfig(ratio=0.75), tmp_path / "pictures")
    figures = pictures.save(_StubEngine(8, 2), 8)
    assert set(figures) == {"recon_mse", "recon_baseline_mse", "recon_picture"}
    assert figures["recon_mse"] == 0.0 and 0.9 < figures["recon_baseline_mse"] < 1.0  # (n - 1) / n, n = 128
    assert (
        isinstance(figures["recon_picture"], Picture) and figures["recon_picture"].path == "pictures/step_00000008.png"
    )
    on_disk = np.asarray(Image.open(tmp_path / "pictures/step_00000008.png"))
    assert np.array_equal(on_disk, figures["recon_picture"].image)
    writer = MetricsWriter(tmp_path, enabled=True)
    writer.write(8, {"loss": 0.5, **figures})
    writer.close()
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row == {"step": 8, "loss": 0.5, "recon_mse": 0.0, "recon_baseline_mse": figures["recon_baseline_mse"],
                   "recon_picture": "pictures/step_00000008.png"}  # fmt: skip
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/recon_mse")] == [(8, 0.0)]
    (image,) = events.Images("pictures/recon_picture")
    assert (image.step, image.width, image.height) == (8, on_disk.shape[1], on_disk.shape[0])
    # Another rank: the same figures (the same control flow on every rank), no picture drawn.
    monkeypatch.setattr(method_pictures.dist, "is_main", lambda: False)
    other = pictures.save(_StubEngine(8, 2), 16)
    assert other == {"recon_mse": 0.0, "recon_baseline_mse": figures["recon_baseline_mse"]}
    assert not (tmp_path / "pictures/step_00000016.png").exists()
    assert math.isclose(figures["recon_baseline_mse"], 127 / 128, rel_tol=1e-3)
