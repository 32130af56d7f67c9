"""Stand-ins for the DeepSpeed engine as far as ``videomae.engine.checkpointing`` uses it, and saves through them.

Not a test module: test modules (and subprocesses they start, with tests/ on ``sys.path``) import from here.
"""

from __future__ import annotations

from pathlib import Path

import torch

from videomae.engine import checkpointing as ckpt


class FakeEngine:
    """The slice of the DeepSpeed engine API the checkpoint module uses; writes one file per save."""

    global_rank = 0

    def __init__(self, world_size: int = 1, zero_stage: int = 0, fail: bool = False) -> None:
        self.world_size, self.stage, self.fail = world_size, zero_stage, fail
        self.loaded: list[str] = []

    def zero_optimization_stage(self) -> int:
        return self.stage

    def save_checkpoint(self, save_dir, tag, client_state, save_latest):
        folder = Path(save_dir) / tag
        folder.mkdir(parents=True)
        (folder / "model_states.pt").write_bytes(b"partial" if self.fail else b"full")
        if self.fail:
            raise KeyboardInterrupt("killed mid-write")
        torch.save(client_state, folder / "client.pt")

    def load_checkpoint(self, load_dir, tag, **kwargs):
        self.loaded.append(tag)
        return str(Path(load_dir) / tag), torch.load(Path(load_dir) / tag / "client.pt")


def save_fake_checkpoint(root, step, engine=None, keep_last=5):
    """``save_checkpoint`` of step ``step`` under ``root`` through ``engine`` (a fresh :class:`FakeEngine`)."""
    engine = engine or FakeEngine()
    return ckpt.save_checkpoint(engine, root, step, {"step": step}, {"rank": 0}, keep_last, meta={"init": None})


class TorchWriter:
    """DeepSpeed's checkpoint engine as far as saving goes: ``torch.save`` of each file."""

    def save(self, state_dict, path):
        torch.save(state_dict, path)


class TorchSavingEngine:
    """The engine API ``save_checkpoint`` uses, writing its files as DeepSpeed does (``checkpoint_engine.save``)."""

    global_rank, world_size = 0, 1

    def __init__(self, weights: int) -> None:
        self.checkpoint_engine = TorchWriter()
        self.weights = torch.zeros(weights)

    def zero_optimization_stage(self) -> int:
        return 0

    def save_checkpoint(self, save_dir, tag, client_state, save_latest):
        folder = Path(save_dir) / tag
        folder.mkdir(parents=True, exist_ok=True)
        self.checkpoint_engine.save(
            {"module": self.weights, **client_state}, str(folder / "mp_rank_00_model_states.pt")
        )


def save_torch_checkpoint(root: Path, step: int, engine: TorchSavingEngine) -> Path:
    """``save_checkpoint`` of step ``step`` under ``root`` through a :class:`TorchSavingEngine`, keeping 3."""
    return ckpt.save_checkpoint(engine, root, step, {"step": step}, {"rank": 0}, keep_last=3, meta={"init": None})
