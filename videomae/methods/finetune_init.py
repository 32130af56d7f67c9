"""Initialising a classifier from any checkpoint ``load_pretrained`` reads, deciding what happens to its head.

``init_label_map`` (see :class:`videomae.config.FinetuneConfig`): ``auto`` remaps the checkpoint's head rows by
class name when the checkpoint names its classes (our exports' ``label_names``, a transformers ``id2label``) and
shares at least one with the data, and otherwise starts a fresh head; ``fresh`` always starts one; ``keep`` loads
the head as it is; any other value is a labels.txt naming the checkpoint's head rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from videomae.checkpoint import LoadReport, load_pretrained, match_class_names, read_checkpoint
from videomae.config import ConfigError
from videomae.data.manifest import ManifestError, read_label_map

__all__ = ["checkpoint_class_names", "init_classifier"]

_MODES = ("auto", "fresh", "keep")


def checkpoint_class_names(metadata: dict) -> list[str] | None:
    """Class names of a checkpoint's head from its metadata (our export, or a transformers config), if any."""
    if isinstance(metadata.get("id2label"), dict):
        table = metadata["id2label"]
        return [table[str(i)] for i in range(len(table))]
    if "videomae" in metadata:
        names = json.loads(metadata["videomae"]).get("label_names")
        return list(names) if names else None
    return None


def init_classifier(
    model: nn.Module, source: str | Path, label_map: str, class_names: Sequence[str] | None
) -> LoadReport:
    """Load ``source`` into the classifier ``model`` whose classes are ``class_names``.

    Args:
        model: a classification model with a fresh ``head``.
        source: checkpoint file or transformers folder.
        label_map: ``auto``, ``fresh``, ``keep`` or a labels.txt of the checkpoint's head rows.
        class_names: the model's classes by id (None: the data's labels are bare integers).

    Returns:
        ``load_pretrained``'s report; ``remapped_classes`` / ``unmatched_classes`` tell how the head was built.

    Raises:
        ConfigError: a label file that cannot be read, or a remap asked for without class names.
        CheckpointError: an unreadable checkpoint, or a label map that fits nothing.
    """
    raw, metadata = read_checkpoint(source)
    fresh_head = {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith("head.")}
    names = None
    if label_map not in _MODES:
        try:
            names = read_label_map(label_map)
        except (OSError, ManifestError) as err:
            raise ConfigError(f"init_label_map: {err}") from err
    elif label_map == "auto":
        names = checkpoint_class_names(metadata)
        if names is not None and (class_names is None or all(m is None for m in match_class_names(names, class_names))):
            names = None  # nothing in common: a fresh head
    if names is not None and class_names is None:
        raise ConfigError(
            f"init_label_map: {label_map!r} remaps the head by class name, but the data's labels are bare integers; "
            "give the classes names (data.labels or class-name labels in the manifests) or use init_label_map=fresh"
        )
    report = load_pretrained(model, raw, label_map=None if names is None else (names, list(class_names)))
    report.source = str(source)
    if names is None and label_map != "keep" and fresh_head:
        model.load_state_dict(fresh_head, strict=False)
        report.loaded = [k for k in report.loaded if k not in fresh_head]
        report.notes.append(f"head: fresh (init_label_map={label_map}; the checkpoint's head, if any, is not used)")
    return report
