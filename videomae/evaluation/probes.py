"""Frozen-encoder quality checks: linear probe and attentive probe on features extracted once.

Features come from a frozen encoder: the classification ViT's ``forward_tokens``, or a pretraining model's
encoder with nothing masked. The linear probe is multinomial logistic regression on standardised, mean-pooled
features, solved full-batch with L-BFGS: the problem is convex, so it converges in a few dozen iterations to the
same answer every time, with no learning rate, epoch count or BatchNorm to tune (the MAE recipe's SGD probe needs
all three), and on CPU each iteration is one ``[N, D] x [D, C]`` product. The attentive probe (a learned query
cross-attending to the frozen tokens, then a linear layer, as V-JEPA evaluates) is not convex and is trained
with AdamW mini-batches.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AttentiveProbe",
    "ProbeResult",
    "Standardize",
    "encode_tokens",
    "extract_features",
    "fit_attentive_probe",
    "fit_linear_probe",
]


@dataclass
class ProbeResult:
    """A fitted probe.

    Attributes:
        accuracy: top-1 accuracy on the validation features.
        train_accuracy: top-1 accuracy on the training features.
        classifier: maps raw features (``[N, D]`` or tokens ``[N, T, D]``) to logits ``[N, C]``, in eval mode.
        num_classes: classes.
    """

    accuracy: float
    train_accuracy: float
    classifier: nn.Module
    num_classes: int


@torch.no_grad()
def encode_tokens(model: nn.Module, videos: torch.Tensor) -> torch.Tensor:
    """Frozen-encoder tokens ``[B, N, D]`` of ``videos [B, C, T, H, W]`` (classification or pretraining model)."""
    if hasattr(model, "forward_encoder"):  # pretraining model: its encoder, nothing hidden
        mask = torch.zeros(videos.shape[0], model.encoder.patch_embed.num_patches, dtype=torch.bool,
                           device=videos.device)  # fmt: skip
        return model.forward_encoder(videos, mask)
    if hasattr(model, "forward_tokens"):
        return model.forward_tokens(videos)
    raise TypeError(f"{type(model).__name__} has neither forward_encoder nor forward_tokens")


def _batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, dict):
        return batch["video"], batch["label"]
    videos, labels = batch[0], batch[1]
    return videos, labels


@torch.no_grad()
def extract_features(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    tokens: bool = False,
    device: torch.device | str | None = None,
    max_batches: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a frozen encoder once over ``loader`` -> ``(features, labels)`` on CPU, float32.

    Args:
        model: classification or pretraining model (put in eval mode here, its mode restored after).
        loader: batches ``{"video", "label", ...}`` (``collate_clips``) or ``(videos, labels)`` tuples.
        tokens: return all tokens ``[N, T, D]`` (attentive probe) instead of their mean ``[N, D]``.
        device: where to run the encoder; default: the model's device.
        max_batches: stop after this many batches.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    feats, labels = [], []
    try:
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            videos, label = _batch(batch)
            x = encode_tokens(model, videos.to(device))  # (B, N, D)
            feats.append((x if tokens else x.mean(dim=1)).float().cpu())
            labels.append(torch.as_tensor(label).long().cpu())
    finally:
        model.train(was_training)
    if not feats:
        raise ValueError("the loader gave no batches")
    return torch.cat(feats), torch.cat(labels)


class Standardize(nn.Module):
    """``(x - mean) / std`` with statistics fixed from the training features (over all but the last dim)."""

    def __init__(self, features: torch.Tensor) -> None:
        super().__init__()
        flat = features.reshape(-1, features.shape[-1])  # (N or N*T, D)
        self.register_buffer("mean", flat.mean(dim=0))
        self.register_buffer("std", flat.std(dim=0).clamp(min=1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _check(features: torch.Tensor, labels: torch.Tensor, num_classes: int, what: str) -> None:
    if features.shape[0] != labels.shape[0]:
        raise ValueError(f"{what}: {features.shape[0]} feature rows but {labels.shape[0]} labels")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{what}: labels must be in 0..{num_classes - 1} (unlabelled -1 rows cannot train a probe)")


@torch.no_grad()
def _accuracy(classifier: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    return float((classifier(features).argmax(dim=1) == labels).double().mean())


def fit_linear_probe(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    val_feats: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    num_classes: int | None = None,
    l2: float = 1e-3,
    max_iter: int = 100,
) -> ProbeResult:
    """Multinomial logistic regression on standardised features ``[N, D]``, full-batch L-BFGS.

    Args:
        l2: penalty ``l2 * ||W||^2`` added to the mean cross-entropy (bias unpenalised).
        max_iter: L-BFGS iterations.
    """
    num_classes = num_classes or int(max(train_labels.max(), val_labels.max())) + 1
    _check(train_feats, train_labels, num_classes, "train")
    _check(val_feats, val_labels, num_classes, "val")
    norm = Standardize(train_feats.float())
    x = norm(train_feats.float())
    linear = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                                  line_search_fn="strong_wolfe")  # fmt: skip

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(x), train_labels) + l2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    classifier = nn.Sequential(norm, linear).eval()
    return ProbeResult(
        accuracy=_accuracy(classifier, val_feats.float(), val_labels),
        train_accuracy=_accuracy(classifier, train_feats.float(), train_labels),
        classifier=classifier,
        num_classes=num_classes,
    )


class AttentiveProbe(nn.Module):
    """Learned queries cross-attend to frozen tokens ``[B, T, D]``; their mean goes through LayerNorm + Linear.

    Args:
        dim: token width.
        num_classes: classes.
        num_heads: attention heads (must divide ``dim``).
        num_queries: learned queries, averaged after attention.
    """

    def __init__(self, dim: int, num_classes: int, num_heads: int = 4, num_queries: int = 1) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, num_queries, dim) * 0.02)
        self.norm_in = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_out = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.norm_in(tokens)  # (B, T, D)
        q = self.query.expand(x.shape[0], -1, -1)  # (B, Q, D)
        pooled, _ = self.attn(q, x, x, need_weights=False)  # (B, Q, D)
        return self.head(self.norm_out(pooled.mean(dim=1)))  # (B, C)


def fit_attentive_probe(
    train_tokens: torch.Tensor,
    train_labels: torch.Tensor,
    val_tokens: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    num_classes: int | None = None,
    num_heads: int = 4,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-2,
    weight_decay: float = 0.05,
    seed: int = 0,
) -> ProbeResult:
    """Train an :class:`AttentiveProbe` on standardised frozen tokens ``[N, T, D]`` with AdamW (cosine lr)."""
    num_classes = num_classes or int(max(train_labels.max(), val_labels.max())) + 1
    _check(train_tokens, train_labels, num_classes, "train")
    _check(val_tokens, val_labels, num_classes, "val")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        probe = AttentiveProbe(train_tokens.shape[-1], num_classes, num_heads=num_heads)
    norm = Standardize(train_tokens.float())
    x = norm(train_tokens.float())
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(x) // batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    probe.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(probe(x[idx]), train_labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    classifier = nn.Sequential(norm, probe).eval()
    return ProbeResult(
        accuracy=_accuracy(classifier, val_tokens.float(), val_labels),
        train_accuracy=_accuracy(classifier, train_tokens.float(), train_labels),
        classifier=classifier,
        num_classes=num_classes,
    )
