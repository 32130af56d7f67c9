"""Nothing DeepSpeed reads for us runs code: engine resume, universal conversion, zero_to_fp32 export, per-rank
state. Each loader gets a crafted pickle whose unpickling would create a marker file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from fake_engines import FakeEngine, save_fake_checkpoint

from videomae.checkpoint import CheckpointError
from videomae.cli import main as cli_main
from videomae.engine import checkpointing as ckpt
from videomae.engine.checkpointing import COMMIT_FILE
from videomae.engine.deepspeed_setup import convert_to_universal, weights_only_loads
from videomae.engine.rng_state import get_rng_state, set_rng_state


class _Evil:
    marker: Path

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def evil(tmp_path) -> _Evil:
    _Evil.marker = tmp_path / "pwned"
    return _Evil()


def _tampered_zero_checkpoint(root: Path, evil: _Evil) -> Path:
    """A ZeRO-2 checkpoint folder layout whose DeepSpeed files each carry the payload next to real tensors."""
    folder = root / "checkpoints" / "step_00000003"
    folder.mkdir(parents=True)
    payload = {"module": {"w": torch.zeros(2)}, "ds_version": "0.19.8", "payload": evil}
    torch.save(payload, folder / "mp_rank_00_model_states.pt")
    for rank in range(2):
        torch.save(
            {"optimizer_state_dict": {"payload": evil}}, folder / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"
        )
    (folder / COMMIT_FILE).write_text(json.dumps({"step": 3, "world_size": 2, "zero_stage": 2}))
    (root / "checkpoints" / "latest").write_text("step_00000003")
    return folder


def test_every_torch_load_inside_is_weights_only_whatever_the_caller_asks(tmp_path, evil):
    path = tmp_path / "state.pt"
    torch.save({"tensor": torch.ones(3), "payload": evil}, path)
    with weights_only_loads(), pytest.raises(CheckpointError, match=f"{path}: refused to unpickle"):
        torch.load(path, map_location="cpu", weights_only=False)  # what DeepSpeed's loaders pass
    assert not evil.marker.exists()
    assert torch.load is not None and torch.load.__module__.startswith("torch")  # restored on exit


def test_deepspeed_objects_of_its_own_files_are_allowed(tmp_path):
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    path = tmp_path / "optim_states.pt"
    torch.save({"loss_scaler": LossScaler(1.0), "zero_stage": ZeroStageEnum.gradients, "w": torch.ones(2)}, path)
    with weights_only_loads():
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    assert loaded["zero_stage"] == ZeroStageEnum.gradients and loaded["loss_scaler"].cur_scale == 1.0


def test_export_of_a_tampered_zero_checkpoint_is_refused(tmp_path, evil, capsys):
    _tampered_zero_checkpoint(tmp_path / "run", evil)
    code = cli_main(["export", str(tmp_path / "run" / "checkpoints"), str(tmp_path / "out.safetensors")])
    err = capsys.readouterr().err
    assert code != 0 and "refused to unpickle" in err and "_states.pt" in err, err
    assert not evil.marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_universal_conversion_of_a_tampered_checkpoint_is_refused(tmp_path, evil):
    folder = _tampered_zero_checkpoint(tmp_path / "run", evil)
    with pytest.raises(RuntimeError, match="refused to unpickle"):
        convert_to_universal(folder, tmp_path / "universal")
    assert not evil.marker.exists()


def test_a_tampered_rank_state_is_refused_on_resume(tmp_path, evil):
    info = ckpt.find_latest(save_fake_checkpoint(tmp_path, 4).parent)
    torch.save({"rng": evil}, info.path / "rank_state_00000.pt")
    with pytest.raises(CheckpointError, match="rank_state_00000.pt: refused to unpickle"):
        ckpt.load_checkpoint(FakeEngine(), info)
    assert not evil.marker.exists()


def test_rank_state_is_tensors_and_numbers_and_restores_every_stream(tmp_path):
    import random

    import numpy as np

    generator = torch.Generator().manual_seed(3)
    random.seed(1), np.random.seed(2), torch.manual_seed(4)
    torch.save(get_rng_state(generator), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9), generator.manual_seed(9)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), generator)  # no allow-list needed
    got = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item())
    assert got == expected
