"""Frozen-encoder quality checks: linear probe and attentive probe on features extracted once.

Features come from a frozen encoder: the classification ViT's ``forward_tokens``, or a pretraining model's
encoder with nothing masked (:func:`encode_tokens`; :func:`encode_clips` also takes images on a video model and
clips on an image model). The linear probe is multinomial logistic regression on standardised, pooled features
(:func:`pool_tokens`: the class token where the encoder has one, else the mean of the patch tokens), solved
full-batch with L-BFGS: the problem is convex, so it converges in a few dozen iterations to the same answer every
time, with no learning rate, epoch count or BatchNorm to tune (the MAE recipe's SGD probe needs all three), and on
CPU each iteration is one ``[N, D] x [D, C]`` product.

How it relates to the MoCo v3 paper's probe (and MAE's, which follows it): there the frozen feature goes through a
BatchNorm without affine parameters, then a linear layer trained by SGD (LARS for MAE) for 90 epochs on augmented
crops. A BatchNorm without affine, at evaluation, is exactly a standardisation with fixed statistics, which is
:class:`Standardize` (here the exact mean and std of the training features rather than running estimates; during
training BN standardises with each batch's statistics, which only adds noise). The classifier on top is the same
linear softmax model; SGD approximates the minimiser of its cross-entropy, L-BFGS reaches it (with a small L2
instead of weight decay). What differs is the data: one centre clip per video and no augmentation, so the figures
compare our methods with each other, not with the papers' tables.

The attentive probe (a learned query cross-attending to the frozen tokens, then a linear layer, as V-JEPA
evaluates) is not convex and is trained with AdamW mini-batches.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LINEAR_MAX_ITER",
    "POOLS",
    "AttentiveProbe",
    "ProbeResult",
    "Standardize",
    "encode_clips",
    "encode_tokens",
    "extract_features",
    "fit_attentive_probe",
    "fit_linear_probe",
    "model_frames",
    "pool_tokens",
    "topk_accuracy",
]

LINEAR_MAX_ITER = 1000
"""Cap on the linear probe's L-BFGS iterations; it stops earlier once converged (gradient below 1e-7 or no change).
Demo features converge in ~300: at 100 the answer still moved and differed between 1 and 2 threads by a sample."""
POOLS = ("auto", "cls", "mean")
"""Linear-probe features: ``cls`` the class token, ``mean`` the mean of the patch tokens, ``auto`` the class token
where the encoder has one (as the MAE and MoCo v3 papers probe), else the mean."""


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


def _patch_embed(model: nn.Module) -> nn.Module:
    """The patch embedding of a pretraining model's encoder or of a classifier / bare trunk."""
    trunk = model.encoder if hasattr(model, "forward_encoder") else model
    return trunk.patch_embed


def model_frames(model: nn.Module) -> int:
    """Frames per input clip of ``model`` (1 for an image model)."""
    return int(_patch_embed(model).num_frames)


@torch.no_grad()
def encode_tokens(model: nn.Module, videos: torch.Tensor) -> torch.Tensor:
    """Frozen-encoder tokens ``[B, N, D]`` of ``videos [B, C, T, H, W]`` (classification or pretraining model)."""
    if hasattr(model, "forward_encoder"):  # pretraining model: its encoder, nothing hidden
        mask = torch.zeros(videos.shape[0], _patch_embed(model).num_patches, dtype=torch.bool, device=videos.device)
        return model.forward_encoder(videos, mask)
    if hasattr(model, "forward_tokens"):
        return model.forward_tokens(videos)
    raise TypeError(f"{type(model).__name__} has neither forward_encoder nor forward_tokens")


@torch.no_grad()
def encode_clips(model: nn.Module, videos: torch.Tensor) -> torch.Tensor:
    """Frozen tokens ``[B, N, D]`` of clips whose frame count may differ from the model's.

    An image (one-frame clip ``[B, C, 1, H, W]``) given to a video model is held still over the model's frames; a
    clip given to an image model is encoded frame by frame and the tokens are averaged over the frames, position by
    position (so the mean of the patch tokens is the mean over every frame's patches).

    Raises:
        ValueError: a video model given a clip of another frame count (its position table fixes the count).
    """
    frames, clip = model_frames(model), videos.shape[2]
    if clip == frames:
        return encode_tokens(model, videos)
    if clip == 1:
        return encode_tokens(model, videos.expand(-1, -1, frames, -1, -1))
    if frames == 1:
        total = None
        for t in range(clip):  # one frame of every clip per forward: the memory of a batch of images
            tokens = encode_tokens(model, videos[:, :, t : t + 1]).float()  # (B, N, D)
            total = tokens if total is None else total + tokens
        return total / clip
    raise ValueError(f"clips of {clip} frames for a model of {frames} frames: a video model takes its own frame "
                     "count (or single images)")  # fmt: skip


def pool_tokens(tokens: torch.Tensor, num_patches: int, pool: str = "auto") -> torch.Tensor:
    """One vector per clip ``[B, D]`` from encoder tokens ``[B, P + N, D]`` (``P`` class/prefix tokens first).

    Args:
        num_patches: ``N``, the patch tokens; any tokens before them are prefix tokens, the first the class token.
        pool: see :data:`POOLS`.
    """
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r}: expected one of {POOLS}")
    prefix = tokens.shape[1] - num_patches
    if prefix < 0:
        raise ValueError(f"{tokens.shape[1]} tokens for {num_patches} patches")
    if pool == "cls" and prefix == 0:
        raise ValueError("pool='cls': this encoder has no class token (use mean)")
    if pool == "cls" or (pool == "auto" and prefix > 0):
        return tokens[:, 0]
    return tokens[:, prefix:].mean(dim=1)


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
            x = encode_clips(model, videos.to(device))  # (B, N, D)
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
def topk_accuracy(classifier: nn.Module, features: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Share of rows whose label is among the ``k`` highest logits of ``classifier(features)`` (top-C for C < k)."""
    logits = classifier(features.float())  # (N, C)
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices  # (N, k)
    return float((top == labels[:, None]).any(dim=1).double().mean())


def _accuracy(classifier: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    return topk_accuracy(classifier, features, labels, 1)


def fit_linear_probe(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    val_feats: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    num_classes: int | None = None,
    l2: float = 1e-3,
    max_iter: int = LINEAR_MAX_ITER,
) -> ProbeResult:
    """Multinomial logistic regression on standardised features ``[N, D]``, full-batch L-BFGS.

    Args:
        l2: penalty ``l2 * ||W||^2`` added to the mean cross-entropy (bias unpenalised).
        max_iter: L-BFGS iterations at most (it stops when converged).
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
