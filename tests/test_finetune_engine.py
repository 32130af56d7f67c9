"""Fine-tuning through the real DeepSpeed engine on CPU (gloo) on demo clips, via ``launch/finetune.py``: exact
resume with mixup and EMA state, evaluation-only runs equal to the training run's own test, learning on 2 ranks."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import load_deepspeed_file
from run_helpers import FINETUNE_DEMO_YAML, ROOT, finetune_overrides, records, run_finetune
from safetensors.torch import load_file

from videomae.engine import checkpointing as ckpt


def predictions(folder: Path) -> list[dict]:
    with open(folder / "predictions.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def reference(demo, tmp_path_factory) -> tuple[Path, list[str]]:
    """8 uninterrupted steps with mixup/cutmix, label smoothing, layer decay and EMA; checkpoints at 3, 6, 8."""
    out = tmp_path_factory.mktemp("ft_ref") / "run"
    args = finetune_overrides(demo, out, "train.max_steps=8", "train.save_every=3", "train.keep_last=3",
                              "train.ema=true", "train.ema_decay=0.9", "train.mixup=0.8", "train.cutmix=1.0",
                              "train.layer_decay=0.75", "train.lr=0.05", "deepspeed.zero_stage=2")  # fmt: skip
    run_finetune(args)
    return out, args


@pytest.mark.slow
def test_resume_continues_at_the_right_step_with_ema_restored(reference, tmp_path):
    ref, args = reference
    assert [i.step for i in ckpt.list_complete(ref / "checkpoints")] == [3, 6, 8]
    client = load_deepspeed_file(ref / "checkpoints/step_00000003/mp_rank_00_model_states.pt")
    assert set(client["ema"]) == set(load_file(ref / "export/ema.safetensors"))
    assert client["config"]["train"]["ema_decay"] == 0.9
    out = tmp_path / "resumed"
    log = run_finetune([a.replace(str(ref), str(out)) for a in args] + [f"resume={ref}/checkpoints/step_00000003"])
    assert f"resumed from {ref}/checkpoints/step_00000003 at step 3" in log
    resumed, uninterrupted = records(out), records(ref)
    assert sorted(resumed) == [4, 5, 6, 7, 8]
    for step in resumed:  # same clips, mixup draws and weights: bit-identical losses in fp32
        assert resumed[step]["loss"] == uninterrupted[step]["loss"], step
    assert resumed[8]["val_top1"] == uninterrupted[8]["val_top1"] and "ema_val_top1" in resumed[8]
    ema, ema_ref = load_file(out / "export/ema.safetensors"), load_file(ref / "export/ema.safetensors")
    model = load_file(out / "export/model.safetensors")
    assert ema.keys() == ema_ref.keys() and all(torch.equal(ema[k], ema_ref[k]) for k in ema)
    assert any(not torch.equal(ema[k], model[k]) for k in ema)  # the average is not the last weights
    assert json.loads((out / "eval/ema/metrics.json").read_text())["weights"] == "ema"
    # save_best with validation only at the end: the best weights are the last ones, gathered from ZeRO-2 shards
    # without a checkpoint, equal to the export consolidated from the step-8 checkpoint.
    best = load_file(out / "export/best.safetensors")
    assert best.keys() == model.keys() and all(torch.equal(best[k], model[k]) for k in best)


@pytest.mark.slow
def test_eval_only_scores_the_latest_checkpoint_or_init_like_the_training_run(reference, tmp_path):
    ref, args = reference
    final = json.loads((ref / "eval/metrics.json").read_text())
    assert (final["split"], final["step"], final["num_videos"], final["num_views"]) == ("val", 8, 6, 2)
    rows = predictions(ref / "eval")
    scratch = tmp_path / "eval_init"
    # Evaluating only needs no training manifests: the class list comes from data.labels.
    init = [f"init={ref}/export/model.safetensors", "data.manifests=[]", "--eval-only"]
    run_finetune([a.replace(str(ref), str(scratch)) for a in args] + init)
    from_init = json.loads((scratch / "eval_only/metrics.json").read_text())
    assert from_init["weights"] == f"{ref}/export/model.safetensors"
    assert predictions(scratch / "eval_only") == rows
    assert not (scratch / "checkpoints").exists() and not (scratch / "metrics.jsonl").exists()
    # The README's command: init in the training run's own folder evaluates init, never continuing the run.
    run_finetune([*args, f"init={ref}/export/model.safetensors", "--eval-only"])
    beside = json.loads((ref / "eval_only/metrics.json").read_text())
    assert beside["weights"] == f"{ref}/export/model.safetensors" and beside["top1"] == final["top1"]
    # Without init: the run's newest checkpoint (step 8), whose fp32 weights are the export's.
    run_finetune([*args, "--eval-only"])
    again = json.loads((ref / "eval_only/metrics.json").read_text())
    assert again["weights"] == str(ref / "checkpoints/step_00000008") and again["top1"] == final["top1"]
    assert predictions(ref / "eval_only") == rows
    assert json.loads((ref / "eval/metrics.json").read_text()) == final  # the training run's results untouched
    assert [i.step for i in ckpt.list_complete(ref / "checkpoints")] == [3, 6, 8]


@pytest.mark.slow
def test_two_ranks_under_the_deepspeed_launcher_fit_the_training_clips(demo, tmp_path):
    """The engine learns on 2 processes: accuracy on the training clips (scored as a validation set, centre
    views) climbs far above chance (1/6) within 120 steps, and the loss falls."""
    out = tmp_path / "fit"
    args = finetune_overrides(demo, out, "train.max_steps=120", "train.eval_every=40", "train.batch_size=4",
                              "train.lr=3.2e-2", "train.smoothing=0", "train.warmup_steps=10", "train.save_every=1000",
                              "train.save_best=false", "data.test_num_segment=1",
                              "model.overrides={img_size: 32, patch_size: 8, all_frames: 4, embed_dim: 64, depth: 2, "
                              "num_heads: 2}")  # fmt: skip
    args = [a.replace(f"data.val_manifests=[{demo}/val.csv]", f"data.val_manifests=[{demo}/train.csv]") for a in args]
    log = run_finetune(args, launcher="deepspeed", nproc=2)
    assert "2 processes, 120 steps" in log
    seq = records(out)
    assert [s for s in seq if "val_top1" in seq[s]] == [40, 80, 120]
    first = sum(seq[s]["loss"] for s in range(1, 11)) / 10
    last = sum(seq[s]["loss"] for s in range(111, 121)) / 10
    assert last < first - 0.2, (first, last)
    assert max(seq[s]["val_top1"] for s in (40, 80, 120)) > 1 / 6 + 0.2, seq


INSPECT_GROUPS = """
import sys, torch
from videomae.config import load_finetune_config
from videomae.methods.finetune import build_finetune_trainer
from videomae.engine.optim import set_step_values

run = build_finetune_trainer(load_finetune_config(sys.argv[2], sys.argv[3:]))
set_step_values(run.engine.optimizer, 1e-3, 0.05)
groups = [(g["layer_id"], g["lr"], g["weight_decay"]) for g in run.engine.optimizer.param_groups]
torch.save({"groups": groups, "layers": run.engine.module.get_num_layers()}, sys.argv[1])
"""


@pytest.mark.slow
def test_layer_decay_reaches_the_zero_optimizer_groups(demo, tmp_path):
    dump = tmp_path / "groups.pt"
    args = finetune_overrides(
        demo, tmp_path / "run", "train.layer_decay=0.5", "train.max_steps=2", "deepspeed.zero_stage=2"
    )
    proc = subprocess.run([sys.executable, "-c", INSPECT_GROUPS, str(dump), str(FINETUNE_DEMO_YAML), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = torch.load(dump)
    depth = got["layers"]  # 2 blocks: ids 0 (embedding) .. 3 (head)
    assert sorted({layer for layer, _, _ in got["groups"]}) == list(range(depth + 2))
    for layer, lr, weight_decay in got["groups"]:
        assert lr == pytest.approx(1e-3 * 0.5 ** (depth + 1 - layer))
        assert weight_decay in (0.0, 0.05)
