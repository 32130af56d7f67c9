"""Small helpers shared by test modules: ports, fake demo folders, manifests, tiny-model settings, random weights,
hand-made checkpoints (tests/ is on sys.path under pytest's default import mode)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_fake_demo_data(folder: Path, rows: int = 100) -> Path:
    """``folder/demo_data`` as the demo configs name it (manifests train_unlabeled.csv, train.csv, val.csv and
    labels.txt) over ``rows`` empty video files: enough for checks that look files up without decoding them."""
    data = folder / "demo_data"
    (data / "videos").mkdir(parents=True)
    paths = [f"videos/v{i:03d}.mp4" for i in range(rows)]
    for path in paths:
        (data / path).touch()
    (data / "train_unlabeled.csv").write_text("path,num_frames\n" + "".join(f"{p},32\n" for p in paths))
    labelled = "path,label\n" + "".join(f"{p},{'ab'[i % 2]}\n" for i, p in enumerate(paths))
    (data / "train.csv").write_text(labelled)
    (data / "val.csv").write_text(labelled)
    (data / "labels.txt").write_text("a\nb\n")
    return data


def load_deepspeed_file(path) -> object:
    """A DeepSpeed checkpoint file read as the engine reads it: weights-only, with DeepSpeed's allow-list."""
    import torch

    from videomae.engine.deepspeed_setup import weights_only_loads

    with weights_only_loads():
        return torch.load(path, map_location="cpu")


SMALL_CLIP = dict(num_frames=4, sampling_rate=2, input_size=32)
"""Clip settings of a dataset small enough for unit tests: 4 frames every 2nd, 32 px."""

TINY_GRID = dict(img_size=32, patch_size=8, all_frames=4)
"""Model overrides for a tiny token grid (2, 4, 4): 32 tokens."""

EXPORT_LABELS = ["archery", "bowling", "cooking", "dancing", "eating"]
"""Class names stored in the classifier export of the ``exports`` fixture."""


def csv_manifest(path: Path, rows: list[tuple]) -> str:
    """Write a ``path,label,num_frames`` manifest of ``rows`` (path, label[, num_frames]) to ``path``."""
    lines = ["path,label,num_frames"] + [",".join(str(v) for v in (r + ("",) * (3 - len(r)))) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def randomise_every_weight(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights everywhere (biases, norms, mask token too), so every converted tensor matters."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1 + (1.0 if p.ndim == 1 and p.shape[0] % 2 else 0.0))
    return model.eval()


def randomise_spread_out(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Spread-out random weights (norm scales near 1), so predictions differ between videos and views."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2 + (1.0 if "norm" in name and "weight" in name else 0.0))
    return model.eval()


def write_zero0_run(root: Path, model: torch.nn.Module, config_model: dict, step: int, **client) -> Path:
    """A run folder with one ZeRO-0 fp32 checkpoint in DeepSpeed's layout (module weights + client state)."""
    import torch

    folder = root / "checkpoints" / f"step_{step:08d}"
    folder.mkdir(parents=True)
    state = {"module": model.state_dict(), "config": {"model": config_model}, **client}
    torch.save(state, folder / "mp_rank_00_model_states.pt")
    (folder / "COMMITTED").write_text(json.dumps({"step": step, "world_size": 1, "zero_stage": 0}))
    return root


def imagenet_normalise(pixels: torch.Tensor) -> torch.Tensor:
    """0..1 pixels ``[B, 3, T, H, W]`` normalised as the models take them (ImageNet mean and std, from timm)."""
    import torch
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1, 1)
    return (pixels - mean) / std
