"""Linear and attentive probes: high accuracy on separable features, chance on random labels; feature extraction."""

from __future__ import annotations

import pytest
import torch

from videomae.evaluation.probes import encode_tokens, extract_features, fit_attentive_probe, fit_linear_probe
from videomae.models import create_model

TINY = dict(img_size=32, patch_size=8, all_frames=4)
NUM_CLASSES = 4


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny problems: thread hand-offs cost more than they save on a shared 2-core machine (10x measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _separable(n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means 3 apart along random directions, unit noise; offset and scaled to need standardising."""
    gen = torch.Generator().manual_seed(0)  # same class means for train and val
    means = torch.randn(NUM_CLASSES, dim, generator=gen) * 1.5
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    feats = means[labels] + torch.randn(n, dim, generator=gen)
    return feats * 50 + 7, labels


def test_linear_probe_separable_and_random_labels() -> None:
    train, train_y = _separable(400, 32, 1)
    val, val_y = _separable(400, 32, 2)
    result = fit_linear_probe(train, train_y, val, val_y)
    assert result.accuracy > 0.95 and result.train_accuracy > 0.95
    assert result.classifier(val[:3]).shape == (3, NUM_CLASSES)
    # random labels: nothing to learn -> the held-out accuracy stays near chance (0.25; 3 sigma ~ 0.065)
    gen = torch.Generator().manual_seed(3)
    noise = fit_linear_probe(train, torch.randint(0, 4, (400,), generator=gen), val,
                             torch.randint(0, 4, (400,), generator=gen))  # fmt: skip
    assert abs(noise.accuracy - 0.25) < 0.08
    assert noise.train_accuracy > noise.accuracy + 0.05, "it fits the training noise, which does not transfer"


def _tokens(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """16 noise tokens; the class shows only in one token at a random position, a signal mean pooling dilutes."""
    gen = torch.Generator().manual_seed(0)
    keys = torch.randn(NUM_CLASSES, 16, generator=gen) * 2.0
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    tokens = torch.randn(n, 16, 16, generator=gen)
    where = torch.randint(0, 16, (n,), generator=gen)
    tokens[torch.arange(n), where] = keys[labels] + 0.3 * torch.randn(n, 16, generator=gen)
    return tokens, labels


def test_attentive_probe_finds_the_informative_token() -> None:
    train, train_y = _tokens(300, 1)
    val, val_y = _tokens(300, 2)
    result = fit_attentive_probe(train, train_y, val, val_y, epochs=15, weight_decay=0.0)
    assert result.accuracy > 0.9
    pooled = fit_linear_probe(train.mean(dim=1), train_y, val.mean(dim=1), val_y)
    assert result.accuracy > pooled.accuracy + 0.1, "attention beats mean pooling on a single informative token"
    gen = torch.Generator().manual_seed(4)
    noise = fit_attentive_probe(train, torch.randint(0, 4, (300,), generator=gen), val,
                                torch.randint(0, 4, (300,), generator=gen), epochs=10)  # fmt: skip
    assert abs(noise.accuracy - 0.25) < 0.09  # 3.6 sigma of 300 draws at p = 0.25


def test_extract_features_from_classifier_and_pretraining_model() -> None:
    videos = torch.randn(5, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 0])
    loader = [{"video": videos[:3], "label": labels[:3], "index": torch.arange(3)}, (videos[3:], labels[3:])]
    classifier = create_model("vit_tiny_patch16_224", num_classes=4, **TINY).train()
    feats, out_labels = extract_features(classifier, loader)
    assert classifier.training, "the model's mode is restored"
    assert torch.equal(out_labels, labels)
    classifier.eval()
    with torch.no_grad():
        torch.testing.assert_close(feats, classifier.forward_tokens(videos).mean(dim=1), rtol=1e-5, atol=1e-5)
    pretrain = create_model("pretrain_videomae_tiny_patch16_224", **TINY).eval()
    tokens, _ = extract_features(pretrain, loader, tokens=True)
    assert tokens.shape == (5, 32, 64)
    with torch.no_grad():  # all-False mask == the encoder on every token
        torch.testing.assert_close(tokens, pretrain.encoder.forward_tokens(videos), rtol=1e-5, atol=1e-5)
    assert encode_tokens(pretrain, videos[:1]).shape == (1, 32, 64)
