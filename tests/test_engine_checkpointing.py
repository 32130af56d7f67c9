"""Checkpoint folders: commit marker last, incomplete ones ignored, pruning, RNG round trip (no DeepSpeed here;
the real engine is exercised in test_engine_train.py)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from fake_engines import FakeEngine, save_fake_checkpoint

from videomae.engine import checkpointing as ckpt
from videomae.engine.rng_state import get_rng_state, set_rng_state


def test_committed_checkpoint_layout(tmp_path):
    path = save_fake_checkpoint(tmp_path, 7)
    assert path == tmp_path / "step_00000007"
    meta = json.loads((path / ckpt.COMMIT_FILE).read_text())
    assert meta["step"] == 7 and meta["world_size"] == 1 and meta["zero_stage"] == 0 and meta["init"] is None
    assert (path / "rank_state_00000.pt").is_file()
    assert (tmp_path / "latest").read_text() == "step_00000007"
    assert not list(tmp_path.glob("*.tmp"))
    assert [info.step for info in ckpt.list_complete(tmp_path)] == [7]


def test_kill_mid_write_leaves_the_previous_checkpoint_in_charge(tmp_path):
    save_fake_checkpoint(tmp_path, 10)
    with pytest.raises(KeyboardInterrupt):
        save_fake_checkpoint(tmp_path, 20, FakeEngine(fail=True))
    assert (tmp_path / "step_00000020.tmp" / "model_states.pt").read_bytes() == b"partial"
    assert ckpt.find_latest(tmp_path).step == 10
    # A folder with a final name but no marker (e.g. copied by hand, or a marker lost) is not complete either.
    (tmp_path / "step_00000030").mkdir()
    bad_marker = tmp_path / "step_00000040"
    bad_marker.mkdir()
    (bad_marker / ckpt.COMMIT_FILE).write_text("{not json")
    assert ckpt.find_latest(tmp_path).step == 10
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        ckpt.checkpoint_at(tmp_path / "step_00000030")
    # The next successful save clears the stale temporary folder.
    save_fake_checkpoint(tmp_path, 20)
    assert not (tmp_path / "step_00000020.tmp").exists()
    info = ckpt.find_latest(tmp_path)
    assert info.step == 20
    client, rank_state = ckpt.load_checkpoint(FakeEngine(), info)
    assert client == {"step": 20} and rank_state == {"rank": 0}


def test_keep_last_prunes_older_complete_checkpoints(tmp_path):
    for step in (1, 2, 3, 4):
        save_fake_checkpoint(tmp_path, step, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["step_00000003", "step_00000004"]


def test_resume_on_a_different_world_size_is_refused_for_partitioned_states(tmp_path):
    save_fake_checkpoint(tmp_path, 5, FakeEngine(world_size=4, zero_stage=2))
    info = ckpt.find_latest(tmp_path)
    with pytest.raises(RuntimeError, match="written by 4 processes with ZeRO stage 2; this run has 2"):
        ckpt.load_checkpoint(FakeEngine(world_size=2, zero_stage=2), info)
    # Stage 0 keeps whole states: a different process count loads (ranks without a state file get None).
    save_fake_checkpoint(tmp_path, 6, FakeEngine(world_size=4, zero_stage=0))
    engine = FakeEngine(world_size=2)
    engine.global_rank = 1
    client, rank_state = ckpt.load_checkpoint(engine, ckpt.find_latest(tmp_path))
    assert client == {"step": 6} and rank_state is None


def test_rng_state_round_trip():
    gen = torch.Generator().manual_seed(3)
    state = get_rng_state(gen)

    def draw():
        return (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item())

    first = draw()
    draw()
    set_rng_state(state, gen)
    assert draw() == first
