"""What a checkpoint holds (``videomae info``): format, model, sizes, position table, classes, metadata.

Works on anything :func:`~videomae.checkpoint.load_pretrained` reads. Our exports name their model in the
metadata; for other files the architecture is read off the tensor shapes (width, depth, patch, tubelet) and the
registered variant of that width is named (its depth or patch may differ: the report shows the real ones).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from videomae.checkpoint import CheckpointError, read_state_dict
from videomae.checkpoint_maeclip import MAECLIP_METADATA_KEY
from videomae.hf_folder import is_hf_folder, read_hf_folder
from videomae.models.hf_config import HF_CLASSES, hf_label_names
from videomae.models.hf_image_config import HF_IMAGE_CLASSES
from videomae.models.registry import variant_for_width

__all__ = ["CheckpointSummary", "summarize_checkpoint"]


@dataclass
class CheckpointSummary:
    """Facts about one checkpoint (``None``: not determinable from the file)."""

    path: str
    format: str
    kind: str
    model_name: str | None
    name_from_metadata: bool
    num_params: int
    num_tensors: int
    dtypes: list[str]
    width: int | None
    depth: int
    patch_size: int | None
    tubelet_size: int | None
    decoder_depth: int | None
    num_classes: int | None
    token_grid: tuple[int, ...] | None
    pos_table: tuple[int, ...] | None
    label_names: list[str] | None
    metadata: dict[str, Any] = field(default_factory=dict)
    method: str | None = None
    """The pretraining method that wrote the export (its metadata's ``method``, else its ``pretrain_config``'s)."""

    def format_text(self, max_value_chars: int = 160) -> str:
        """Human-readable report; long metadata values are cut to ``max_value_chars`` (0: never)."""
        origin = "guessed from shapes"
        if self.name_from_metadata:
            origin = "config.json" if self.format == "transformers" else "metadata"
        lines = [
            f"file:          {self.path}",
            f"format:        {self.format} ({self.kind})",
            *([f"method:        {self.method}"] if self.method else []),
            f"model:         {self.model_name or 'unknown'} ({origin})",
            f"parameters:    {self.num_params:,} ({self.num_params / 1e6:.2f} M) in {self.num_tensors} tensors "
            f"({', '.join(self.dtypes)})",
            f"width x depth: {self.width} x {self.depth}"
            + (f", decoder depth {self.decoder_depth}" if self.decoder_depth is not None else ""),
            f"patch:         {self.tubelet_size} x {self.patch_size} x {self.patch_size} (frames x pixels)",
            f"token grid:    {self.token_grid or 'not stored'}"
            + (f"; learned position table {self.pos_table}" if self.pos_table else "; fixed sinusoid position table"),
        ]
        if self.num_classes is not None:
            lines.append(f"classes:       {self.num_classes}")
        if self.label_names:
            shown = ", ".join(self.label_names[:10]) + (" ..." if len(self.label_names) > 10 else "")
            lines.append(f"label names:   {shown}")
        if self.metadata:
            lines.append("metadata:")
            for key, value in self.metadata.items():
                text = value if isinstance(value, str) else json.dumps(value)
                if max_value_chars and len(text) > max_value_chars:
                    text = text[:max_value_chars] + f"... ({len(text)} chars)"
                lines.append(f"  {key}: {text}")
        return "\n".join(lines)


def _metadata(raw: dict[str, str]) -> dict[str, Any]:
    """Our export's JSON entry (a MAE-CLIP whole model's too), a transformers config, or the raw safetensors
    metadata."""
    for key in ("videomae", MAECLIP_METADATA_KEY):
        if key in raw:
            return json.loads(raw[key])
    return dict(raw)


def summarize_checkpoint(source: str | Path) -> CheckpointSummary:
    """Read ``source`` (file or transformers folder) and describe it.

    Raises:
        CheckpointError: unreadable or unsafe file.
    """
    folder, problem = None, None
    if is_hf_folder(source):  # the model its config.json builds
        try:
            folder = read_hf_folder(source)
        except CheckpointError as err:  # still described, from the tensors, with the reason shown
            problem = str(err)
    if folder is not None:
        state, raw_meta, fmt = folder.state, folder.config, "transformers"
    else:
        state, raw_meta, fmt = read_state_dict(source)
    metadata = _metadata(raw_meta)
    if problem is not None:
        metadata["config.json problem"] = problem
    pretraining = any(k.startswith(("decoder.", "encoder_to_decoder.")) for k in state)
    image = any(k.endswith("cls_token") for k in state)  # MAE's image models have a class token
    prefix = "encoder." if any(k.startswith("encoder.") for k in state) else ""
    proj = state.get(prefix + "patch_embed.proj.weight")  # (D, C, tubelet, p, p)
    width, tubelet, patch = (proj.shape[0], proj.shape[2], proj.shape[3]) if proj is not None else (None, None, None)
    head = state.get("head.weight")
    method = metadata.get("method") or (metadata.get("pretrain_config") or {}).get("method")
    kind = "pretraining (encoder + decoder)" if pretraining else "classifier" if head is not None else "encoder"
    if method == "maeclip" and pretraining:
        kind = "MAE-CLIP whole model (vision and text towers, decoders)"
    config = metadata.get("model_config", {})
    if folder is not None:
        kind += f", {(HF_IMAGE_CLASSES if image else HF_CLASSES)[folder.kind]}"
        config = {"name": folder.model_name, **folder.model_kwargs}
    name = config.get("name")
    if name is None:  # the registered variant of this width (depth, patch may be overridden)
        name = variant_for_width(width, pretraining, image=image)
    grid = None
    if config.get("img_size") and config.get("all_frames"):
        grid = (config["all_frames"] // tubelet, config["img_size"] // patch, config["img_size"] // patch)
    pos = state.get(prefix + "pos_embed")
    labels = metadata.get("label_names")
    if labels is None and head is not None:  # a pretraining config.json holds transformers' default id2label too
        try:
            labels = hf_label_names(metadata)
        except ValueError as err:
            metadata["id2label problem"] = str(err)
    return CheckpointSummary(
        path=str(source),
        format="videomae export" if "model_config" in metadata else fmt,
        kind=kind,
        model_name=name,
        name_from_metadata="name" in config,
        num_params=sum(v.numel() for v in state.values() if isinstance(v, torch.Tensor)),
        num_tensors=len(state),
        dtypes=sorted({str(v.dtype).removeprefix("torch.") for v in state.values()}),
        width=width,
        depth=_count_blocks(state, prefix),
        patch_size=patch,
        tubelet_size=tubelet,
        decoder_depth=_count_blocks(state, "decoder.") if pretraining else None,
        num_classes=head.shape[0] if head is not None else None,
        token_grid=grid,
        pos_table=tuple(pos.shape) if pos is not None else None,
        label_names=labels,
        metadata={
            k: v for k, v in metadata.items() if k not in ("model_config", "label_names", "id2label", "label2id")
        },
        method=method,
    )


def _count_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}blocks\.(\d+)\.")
    return len({m.group(1) for k in state if (m := pattern.match(k))})
