"""Video <-> text retrieval recall@k from paired embeddings (row ``i`` of each is a pair).

A caption that several clips share (a demo phrasing, a repeated stock caption) is relevant to each of them:
pairs are grouped by caption text, and a query counts as found when any item of its group is in its top k (as
COCO counts an image found by any of its five captions).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["retrieval_recall"]


def _recall(scores: torch.Tensor, relevant: torch.Tensor, ks: Sequence[int]) -> dict[str, float]:
    # rank of the best relevant item = how many items score strictly above it
    best = scores.masked_fill(~relevant, float("-inf")).amax(dim=1, keepdim=True)  # (Q, 1)
    rank = (scores > best).sum(dim=1)  # (Q,)
    return {f"R@{k}": float((rank < k).double().mean()) for k in ks}


def retrieval_recall(
    video: torch.Tensor, text: torch.Tensor, captions: Sequence[str] | None = None, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, dict[str, float]]:
    """Recall@k both ways for unit-norm ``video`` and ``text`` embeddings ``[N, E]``.

    Args:
        captions: the ``N`` caption texts; equal texts form one group of relevant items (``None``: only the pair).
        ks: the cut-offs.

    Returns:
        ``{"video_to_text": {"R@1": ..}, "text_to_video": {...}}``, fractions in ``[0, 1]``.
    """
    if video.shape != text.shape or video.ndim != 2:
        raise ValueError(f"need paired embeddings [N, E], got {tuple(video.shape)} and {tuple(text.shape)}")
    n = video.shape[0]
    if captions is None:
        relevant = torch.eye(n, dtype=torch.bool)
    else:
        if len(captions) != n:
            raise ValueError(f"{len(captions)} captions for {n} pairs")
        ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
        group = torch.tensor([ids[c] for c in captions])
        relevant = group[:, None] == group[None, :]  # (N, N)
    scores = video.float() @ text.float().T  # (N videos, N texts)
    return {"video_to_text": _recall(scores, relevant, ks), "text_to_video": _recall(scores.T, relevant.T, ks)}
