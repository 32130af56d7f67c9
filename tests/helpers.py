"""Small helpers shared by test modules (tests/ is on sys.path under pytest's default import mode)."""

from __future__ import annotations

import socket
from pathlib import Path


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
