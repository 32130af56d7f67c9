"""MAE-CLIP's image/video-text objectives: the symmetric InfoNCE over the global batch, and BERT's masked-language
modelling (15% of caption tokens chosen; of those 80% -> ``<mask>``, 10% -> a random token, 10% kept).

The contrastive loss of one rank covers its own rows against every rank's columns (``video_all`` / ``text_all``
from :func:`videomae.engine.dist.gather_rows_with_grad`, whose backward sums the columns' gradients over
ranks): the mean of the ranks' losses is the loss of the global batch, and after DeepSpeed's gradient mean the
gradients are the global batch's too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["IGNORE_INDEX", "info_nce", "mask_caption_tokens", "mlm_loss"]

IGNORE_INDEX = -100
"""Target of tokens the masked-language loss skips."""


def info_nce(
    video: torch.Tensor,
    text: torch.Tensor,
    scale: torch.Tensor,
    video_all: torch.Tensor | None = None,
    text_all: torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """Symmetric InfoNCE of this rank's pairs: ``(CE(video -> all texts) + CE(text -> all videos)) / 2``.

    Args:
        video, text: unit-norm embeddings ``[B, E]`` of this rank's pairs (row ``i`` of each is a pair).
        scale: the logits' multiplier (CLIP's ``exp(logit_scale)``, clamped).
        video_all, text_all: every rank's embeddings ``[W*B, E]`` (default: this rank's alone).
        offset: index of this rank's first row in ``*_all`` (``rank * B``).

    Returns:
        float32 scalar, the mean over this rank's rows of both directions.
    """
    video, text = video.float(), text.float()
    video_all = video if video_all is None else video_all.float()
    text_all = text if text_all is None else text_all.float()
    targets = torch.arange(video.shape[0], device=video.device) + offset  # (B,)
    logits_v = scale * video @ text_all.T  # (B, W*B)
    logits_t = scale * text @ video_all.T  # (B, W*B)
    return (F.cross_entropy(logits_v, targets) + F.cross_entropy(logits_t, targets)) / 2


def mask_caption_tokens(
    tokens: torch.Tensor,
    special_ids: list[int] | tuple[int, ...],
    mask_id: int,
    vocab_size: int,
    generator: torch.Generator,
    prob: float = 0.15,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking of caption token ids ``[B, L]`` -> ``(inputs, targets)``.

    Every non-special token is chosen with probability ``prob``; a chosen token becomes ``mask_id`` (80%), a
    uniformly random id (10%) or stays (10%). ``targets`` holds the original id where chosen, else
    :data:`IGNORE_INDEX`. Draws from ``generator`` on its device (the method's checkpointed stream).
    """
    device = generator.device
    tokens = tokens.to(device)
    special = torch.isin(tokens, torch.tensor(list(special_ids), device=device))
    draw = torch.rand(tokens.shape, generator=generator, device=device)  # chosen, then how it is replaced
    action = torch.rand(tokens.shape, generator=generator, device=device)
    random_ids = torch.randint(vocab_size, tokens.shape, generator=generator, device=device)
    chosen = (draw < prob) & ~special
    inputs = torch.where(chosen & (action < 0.8), torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, inputs)
    targets = torch.where(chosen, tokens, torch.full_like(tokens, IGNORE_INDEX))
    return inputs, targets


def mlm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of vocabulary ``logits`` [B, L, V] on the chosen tokens (``targets`` != IGNORE_INDEX); 0 when
    the batch has none (float32 scalar, no host sync)."""
    per_token = F.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return per_token / (targets != IGNORE_INDEX).sum().clamp_min(1)
