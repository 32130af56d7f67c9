"""Zero-shot classification and retrieval of a MAE-CLIP model on a captioned, labelled manifest.

Each class is the mean text embedding of its prompts (``templates`` filled with the class name, as CLIP's prompt
ensembling); a clip is classified by the cosine similarity of its embedding to each class. Retrieval pairs every
clip with its own caption (:mod:`videomae.evaluation.retrieval`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from videomae.data import collate_clips
from videomae.evaluation.metrics import classification_metrics
from videomae.evaluation.retrieval import retrieval_recall
from videomae.text import CaptionTokenizer

__all__ = ["class_embeddings", "class_prompts", "embed_pairs", "zero_shot_report"]


def class_prompts(
    names: Sequence[str], templates: Sequence[str], underscores_as_spaces: bool = True
) -> list[list[str]]:
    """The prompts of each class: ``templates`` with ``{}`` replaced by the class name."""
    shown = [n.replace("_", " ") if underscores_as_spaces else n for n in names]
    return [[t.format(name) for t in templates] for name in shown]


@torch.no_grad()
def class_embeddings(model: nn.Module, tokenizer: CaptionTokenizer, prompts: list[list[str]]) -> torch.Tensor:
    """Unit-norm class embeddings ``[C, E]``: the renormalised mean of each class's prompt embeddings."""
    device = next(model.parameters()).device
    flat = [p for group in prompts for p in group]
    emb = model.encode_text(tokenizer(flat).to(device)).float()  # (C*T, E)
    emb = emb.reshape(len(prompts), -1, emb.shape[-1]).mean(dim=1)  # (C, E)
    return F.normalize(emb, dim=-1)


@torch.no_grad()
def embed_pairs(
    model: nn.Module, tokenizer: CaptionTokenizer, dataset: Dataset, batch_size: int, num_workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """``(video [N, E], caption [N, E], labels [N], captions)`` of every clip of ``dataset`` (one view per clip;
    samples carry ``"text"``). The clips go in the model's parameter dtype."""
    param = next(model.parameters())
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_clips)
    videos, texts, labels, captions = [], [], [], []
    for batch in loader:
        videos.append(model.encode_video(batch["video"].to(param.device, param.dtype)).float().cpu())
        texts.append(model.encode_text(tokenizer(batch["text"]).to(param.device)).float().cpu())
        labels.append(batch["label"])
        captions += batch["text"]
    return torch.cat(videos), torch.cat(texts), torch.cat(labels), captions


def zero_shot_report(
    model: nn.Module,
    tokenizer: CaptionTokenizer,
    dataset: Dataset,
    label_names: Sequence[str],
    templates: Sequence[str],
    *,
    underscores_as_spaces: bool = True,
    batch_size: int = 16,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Zero-shot top-1/top-5 against chance, and retrieval recall@1/5/10 both ways, of ``model`` on ``dataset``.

    Returns:
        ``{"top1", "top5", "mean_class_accuracy", "chance", "num_classes", "num_clips", "retrieval": {...}}``.
    """
    was_training = model.training
    model.eval()
    try:
        classes = class_embeddings(model, tokenizer, class_prompts(label_names, templates, underscores_as_spaces))
        video, text, labels, captions = embed_pairs(model, tokenizer, dataset, batch_size, num_workers)
    finally:
        model.train(was_training)
    metrics = classification_metrics(video @ classes.cpu().T, labels)
    return {
        **metrics.as_dict(),
        "chance": 1.0 / len(label_names),
        "num_classes": len(label_names),
        "num_clips": len(captions),
        "retrieval": retrieval_recall(video, text, captions),
    }
