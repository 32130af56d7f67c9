"""Batches of clip samples: views flattened into the batch, built in shared memory inside DataLoader workers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import get_worker_info

__all__ = ["collate_clips"]


def collate_clips(batch: Sequence[dict]) -> dict:
    """Stack samples, flattening repeated samples / test views into the batch.

    Returns:
        ``{"video": float [B*S, C, T, H, W], "label": long [B*S], "index": long [B*S]}`` (labels and indices
        repeated per view), plus ``"text": list[str]`` when the samples carry text and ``"valid": bool [B*S]``
        when they carry a validity flag (test mode; rows of unreadable videos are False and must be skipped);
        always ``"bad_rows": long [K]``, the dataset indices of the K clips that failed to load and were replaced
        in this batch (built in the DataLoader worker, so the count reaches the training process exactly), and
        ``"short_rows": long [J]``, those of the J clips that needed their source's short-video policy.
    """
    videos, labels, indices, texts, valid = [], [], [], [], []
    flagged = any("valid" in b for b in batch)
    for b in batch:
        v = b["video"]
        v = v.unsqueeze(0) if v.dim() == 4 else v  # (S, C, T, H, W)
        videos.append(v)
        labels += [b["label"]] * v.shape[0]
        indices += [b["index"]] * v.shape[0]
        valid += [bool(b.get("valid", True))] * v.shape[0]
        if "text" in b:
            texts += [b["text"]] * v.shape[0]
    shapes = {tuple(v.shape[1:]) for v in videos}
    if len(shapes) > 1:
        raise ValueError(
            f"clips in one batch differ in shape {sorted(shapes)}: sources with different num_frames "
            "cannot share a batch"
        )
    video = None
    if get_worker_info() is not None:
        # In a DataLoader worker, build the batch in shared memory (as torch's default collate does): otherwise
        # sending it to the main process copies the whole batch a second time.
        first = videos[0]
        storage = first._typed_storage()._new_shared(sum(v.numel() for v in videos), device=first.device)
        video = first.new(storage).resize_(len(labels), *first.shape[1:])
    out = {
        "video": torch.cat(videos, out=video),
        "label": torch.tensor(labels, dtype=torch.long),
        "index": torch.tensor(indices, dtype=torch.long),
    }
    if texts:
        out["text"] = texts
    if flagged:
        out["valid"] = torch.tensor(valid, dtype=torch.bool)
    for key in ("bad_rows", "short_rows"):
        out[key] = torch.tensor([i for b in batch for i in b.get(key, ())], dtype=torch.long)
    return out
