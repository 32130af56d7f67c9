"""``train.compile=true`` through the real engine (one CPU process): the steps run compiled graphs, not eager code,
and lose nothing against an eager run of the same config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers import free_port
from run_helpers import PRETRAIN_DEMO_YAML, pretrain_overrides

from videomae.config import ConfigError, FinetuneConfig, PretrainConfig, load_config
from videomae.data.demo import DemoConfig, write_demo_dataset

STEPS = 3


def _worker(rank: int, port: int, demo: str, out: str) -> None:
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from videomae.engine.compiling import compile_counts
    from videomae.methods.pretrain import build_pretrain_trainer

    record = {}
    for compiled in (False, True):
        args = pretrain_overrides(
            Path(demo), Path(out) / str(compiled), f"train.max_steps={STEPS}", "model.with_cp=true"
        )
        run = build_pretrain_trainer(load_config(PRETRAIN_DEMO_YAML, [*args, f"train.compile={str(compiled).lower()}"]))
        summary = run.fit()
        record[compiled] = {"losses": summary.losses, "counts": run.compile_counts, "total": compile_counts()}
    torch.save(record, Path(out) / "record.pt")


@pytest.mark.slow
def test_compile_runs_compiled_graphs_and_matches_eager(tmp_path):
    demo = tmp_path / "demo"
    write_demo_dataset(demo, DemoConfig(num_train=12, num_val=6, frames=16), workers=1)
    # a child process: Dynamo's caches and counters stay out of the test process
    mp.spawn(_worker, args=(free_port(), str(demo), str(tmp_path)), nprocs=1, join=True)
    record = torch.load(tmp_path / "record.pt")
    eager, compiled = record[False], record[True]
    assert eager["counts"] is None and eager["total"]["graphs"] == 0  # the eager run compiled nothing
    # The compiled run captured the model's forward (and with_cp's recomputation inside it) as graphs.
    assert compiled["counts"]["graphs"] >= 1 and compiled["counts"]["frames"] >= 1
    assert compiled["total"]["graphs"] == compiled["counts"]["graphs"]  # no recompilation after the first step
    assert sorted(compiled["losses"]) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert compiled["losses"][step] == pytest.approx(eager["losses"][step], rel=1e-5)
    assert compiled["losses"][STEPS] != compiled["losses"][1]


@pytest.mark.parametrize(("kind", "steps"), [(PretrainConfig, "train.max_steps=1"), (FinetuneConfig, "train.epochs=1")])
def test_compile_with_zero3_is_refused_naming_the_key_and_stage(kind, steps):
    with pytest.raises(ConfigError, match=r"^train.compile: .*allowed: false with deepspeed.zero_stage=3"):
        load_config(None, [steps, "train.compile=true", "deepspeed.zero_stage=3"], kind=kind)
    for stage in (0, 1, 2):  # compiled and trained on CPU (bench/RESULTS.md)
        assert load_config(
            None, [steps, "train.compile=true", f"deepspeed.zero_stage={stage}"], kind=kind
        ).train.compile
