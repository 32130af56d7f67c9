"""Data: manifests, decoding, clip sampling, transforms, datasets and the sampler.

Public names are re-exported lazily (PEP 562), so ``import videomae.data.manifest`` stays light (no torch, no
decoders) for tools that only read manifests.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "videomae.data.manifest": (
        "Manifest",
        "ManifestError",
        "ManifestRow",
        "ManifestTable",
        "read_label_map",
        "read_manifest",
        "read_manifest_table",
        "write_manifest",
    ),
    "videomae.data.decoding": (
        "DecodeError",
        "VideoInfo",
        "open_reader",
        "probe_video",
        "read_frames",
        "run_with_timeout",
    ),
    "videomae.data.sampling": ("clip_span", "fit_sampling_rate", "sample_test_indices", "sample_train_indices"),
    "videomae.data.transforms": ("ClipRandAugment", "EvalTransform", "IMAGENET_MEAN", "IMAGENET_STD", "TrainTransform"),
    "videomae.data.collate": ("collate_clips",),
    "videomae.data.datasets": ("HybridVideoDataset", "SourceSpec", "VideoClipDataset", "decode_clips"),
    "videomae.data.sampler": ("WeightedDistributedSampler",),
    "videomae.data.bad_samples": ("BadSampleLog", "TooManyBadSamples", "read_bad_samples"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'videomae.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
