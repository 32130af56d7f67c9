"""The MoCo v3 objective: InfoNCE of queries against the keys of the whole (global) batch, symmetrised over the
two views and scaled by ``2 tau`` as in the release."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["info_nce", "symmetric_info_nce"]


def info_nce(q: torch.Tensor, keys: torch.Tensor, first: int, temperature: float) -> torch.Tensor:
    """InfoNCE of local queries against the global batch of keys.

    Args:
        q: ``[B, D]`` this rank's queries (any scale; L2-normalised here).
        keys: ``[W * B, D]`` the keys of every rank in rank order (no gradient needed).
        first: the row of ``keys`` that is the positive of ``q[0]`` (``rank * B``): query ``i`` matches key
            ``first + i``, every other key is a negative.
        temperature: ``tau``.

    Returns:
        Scalar: the cross-entropy averaged over the ``B`` queries, times ``2 tau`` (the release's scaling, which
        keeps the gradient's size independent of ``tau``).
    """
    q = F.normalize(q.float(), dim=1)
    keys = F.normalize(keys.float(), dim=1)
    logits = q @ keys.T / temperature  # (B, W*B)
    labels = torch.arange(q.shape[0], device=q.device) + first
    return F.cross_entropy(logits, labels) * (2 * temperature)


def symmetric_info_nce(
    q1: torch.Tensor, q2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, first: int, temperature: float
) -> torch.Tensor:
    """``info_nce(q1, k2) + info_nce(q2, k1)``: each view's queries against the other view's global keys."""
    return info_nce(q1, k2, first, temperature) + info_nce(q2, k1, first, temperature)
