"""``videomae doctor``: the pure parts (row sampling, throughput verdict, merging ranks, the table, config
detection), the sampled decode that names bad rows without replacing them, the SLURM ``DOCTOR=1`` path, and real
2-process runs under the ``deepspeed`` launcher: the demo passes, a manifest of missing files fails naming them, and
a rank that never joins ends the doctor at its time limit."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import free_port

from videomae.cli import build_parser
from videomae.config import ConfigError
from videomae.data import VideoClipDataset
from videomae.data.decoding import DecodeError
from videomae.data.demo import DemoConfig, write_demo_dataset
from videomae.engine import dist
from videomae.engine.dist import DistEnv
from videomae.launching.collectives_check import check_collectives
from videomae.launching.doctor import STEPS, _build_trainer, doctor_config, load_run_config
from videomae.launching.doctor_checks import (
    FAIL,
    PASS,
    WARN,
    CheckResult,
    ManifestSample,
    check_shared_folder,
    collective_rows,
    data_rows,
    decode_sample,
    format_table,
    hostname,
    merge_ranks,
    sample_positions,
    throughput_verdict,
    worker_rate,
)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PRETRAIN_DEMO = ROOT / "videomae/recipes/pretrain/demo.yaml"
FINETUNE_DEMO = ROOT / "videomae/recipes/finetune/demo.yaml"
TINY = [
    "data.input_size=32", "data.num_frames=4", "train.batch_size=2", "data.num_workers=0",
    "model.overrides={img_size: 32, patch_size: 8, all_frames: 4, encoder_embed_dim: 32, encoder_depth: 1, "
    "encoder_num_heads: 2, decoder_embed_dim: 32, decoder_num_heads: 2}", "model.decoder_depth=1",
]  # fmt: skip


# ---------------------------------------------------------------------------------------------------- pure parts


def test_sample_positions_spread_over_the_manifest_and_split_between_ranks():
    ranks = [sample_positions(1000, 4, rank, 2) for rank in range(2)]
    assert ranks == [[0, 250, 500, 750], [125, 375, 625, 875]]
    # A manifest shorter than the sample: every row once, ranks disjoint.
    short = [sample_positions(5, 4, rank, 2) for rank in range(2)]
    assert sorted(short[0] + short[1]) == [0, 1, 2, 3, 4]
    assert sample_positions(1, 16, 1, 2) == []


def test_worker_rate_weights_each_manifest_by_its_share_of_the_draws():
    fast = ManifestSample("a.csv", share=0.5, rows=10, clips=10, seconds=0.1)  # 0.01 s per clip
    slow = ManifestSample("b.csv", share=0.5, rows=10, clips=20, seconds=0.6)  # 0.03 s per clip
    assert worker_rate([fast, slow]) == pytest.approx(1 / 0.02)
    unreadable = ManifestSample("c.csv", share=0.5, rows=4)
    assert worker_rate([unreadable]) is None
    assert worker_rate([fast, unreadable]) == pytest.approx(100.0)  # the readable part of the mix


def test_throughput_verdict_names_the_bottleneck():
    # 64 clips per 0.5 s step = 128 clips/s per rank; 8 workers -> 16 clips/s each.
    model_bound = throughput_verdict(40.0, 0.5, 64, 8, cores_per_rank=12)
    assert model_bound.status == PASS and "model-bound" in model_bound.detail
    assert model_bound.figures["needed_clips_per_s_per_worker"] == pytest.approx(16.0)
    assert model_bound.figures["ratio"] == pytest.approx(2.5)
    data_bound = throughput_verdict(10.0, 0.5, 64, 8, cores_per_rank=24)
    assert data_bound.status == WARN and "data-bound" in data_bound.detail
    assert "raise data.num_workers to 16" in data_bound.detail  # ceil(128 x 1.25 / 10)
    no_cores = throughput_verdict(10.0, 0.5, 64, 8, cores_per_rank=12)
    assert "transcode" in no_cores.detail and "num_workers" not in no_cores.detail.split(";")[-1]
    close = throughput_verdict(17.0, 0.5, 64, 8, cores_per_rank=12)
    assert close.status == WARN and close.detail.startswith("barely model-bound")


def test_merge_ranks_keeps_the_worst_status_and_names_the_ranks():
    per_rank = [
        [CheckResult("a", PASS, "fine"), CheckResult("b", PASS, "fine")],
        [CheckResult("a", FAIL, "broken"), CheckResult("b", PASS, "also fine")],
        [CheckResult("a", FAIL, "broken too"), CheckResult("c", WARN, "only here")],
        [CheckResult("a", FAIL, "broken again")],
    ]
    rows = {r.check: r for r in merge_ranks(per_rank)}
    assert list(rows) == ["a", "b", "c"]
    assert rows["a"].status == FAIL and rows["a"].detail == "rank 1: broken (ranks 1-3)"
    assert rows["b"].status == PASS and rows["b"].detail == "fine"
    assert rows["c"].status == WARN and rows["c"].detail == "rank 2: only here"


def test_format_table_has_one_line_per_check_and_the_counts():
    table = format_table([CheckResult("collective barrier", PASS, "1 ms"), CheckResult("data x.csv", FAIL, "gone")])
    lines = table.splitlines()
    assert lines[0].split(" | ") == ["check             ", "status", "detail"]
    assert lines[2] == "collective barrier | PASS   | 1 ms"
    assert lines[3] == "data x.csv         | FAIL   | gone"
    assert lines[-1] == "1 PASS, 0 WARN, 1 FAIL"


def test_stage_is_detected_from_the_config():
    assert load_run_config(str(PRETRAIN_DEMO), [])[0] == "pretrain"
    assert load_run_config(str(FINETUNE_DEMO), [])[0] == "finetune"
    with pytest.raises(ConfigError, match="neither a pretraining config"):
        load_run_config(str(PRETRAIN_DEMO), ["train.no_such_key=1"])
    with pytest.raises(ConfigError, match="train.no_such_key"):
        load_run_config(str(PRETRAIN_DEMO), ["train.no_such_key=1"], stage="pretrain")


@pytest.mark.parametrize(
    "recipe, builder",
    [
        ("demo", "videomae.methods.pretrain:build_pretrain_trainer"),
        ("mae_image_demo", "videomae.methods.mae_image:build_image_mae_trainer"),
        ("mocov3_demo", "videomae.methods.mocov3:build_mocov3_trainer"),
        ("maeclip_demo", "videomae.methods.maeclip:build_maeclip_trainer"),
    ],
)
def test_the_doctor_builds_the_trainer_of_the_configs_method(monkeypatch, recipe, builder):
    module, _, name = builder.partition(":")
    built = []
    monkeypatch.setattr(importlib.import_module(module), name, lambda cfg: built.append(cfg) or f"{name} trainer")
    stage, cfg = load_run_config(str(ROOT / f"videomae/recipes/pretrain/{recipe}.yaml"), [])
    assert stage == "pretrain"
    assert _build_trainer(stage, cfg) == f"{name} trainer" and built == [cfg]


def test_doctor_config_trains_two_steps_into_its_own_folder(tmp_path):
    _, cfg = load_run_config(str(FINETUNE_DEMO), ["train.epochs=3", "train.max_steps=null", "train.eval_every=5"])
    doc = doctor_config(cfg, tmp_path / "doctor")
    t = doc.train
    assert (t.max_steps, t.epochs, t.save_every, t.eval_every, doc.resume) == (STEPS, None, STEPS, 0, "never")
    assert doc.output_dir == str(tmp_path / "doctor") and doc.model == cfg.model and doc.data == cfg.data


def test_deepspeed_module_launch_arguments_parse():
    # `deepspeed --module videomae` runs `python -m videomae --local_rank=N doctor ...`.
    args = build_parser().parse_args(["--local_rank=1", "doctor", "--config", "x.yaml", "a=1", "--rows", "4"])
    parsed = (args.command, args.config, args.overrides, args.rows, args.stage)
    assert parsed == ("doctor", "x.yaml", ["a=1"], 4, "auto")


def test_collectives_pass_alone_and_a_wrong_or_raising_helper_is_a_named_fail(monkeypatch):
    rows = collective_rows(DistEnv(), torch.device("cpu"), torch.bfloat16, 4096)  # one process: no group needed
    names = [c.name for c in check_collectives(torch.device("cpu"))]
    assert [r.check for r in rows] == [f"collective {n}" for n in names] + ["collective all_reduce bfloat16 on cpu"]
    assert all(r.status == PASS for r in rows), rows
    assert rows[-1].figures["bytes"] == 4096 * 2

    def refuse(flag):
        raise RuntimeError("No backend type associated with device type cpu")

    monkeypatch.setattr(dist, "any_rank", refuse)
    monkeypatch.setattr(dist, "sum_across_ranks", lambda values: values * 2)
    rows = {r.check: r for r in collective_rows(DistEnv(), torch.device("cpu"), torch.float32, 16)}
    refused = [r for name, r in rows.items() if name.startswith("collective any_rank")]
    assert len(refused) == 2 and all(r.status == FAIL for r in refused)
    assert refused[0].detail == "RuntimeError: No backend type associated with device type cpu"
    bucket = rows["collective all_reduce float32 on cpu"]
    assert bucket.status == FAIL and bucket.detail == "a sum of ones gave values in [2.0, 2.0], expected 1.0"
    assert all(r.status == PASS for name, r in rows.items() if "any_rank" not in name and "all_reduce" not in name)


def test_shared_folder_check_reads_rank_0s_file_back_and_names_a_folder_it_cannot_write(tmp_path):
    row = check_shared_folder(tmp_path / "doctor", DistEnv())
    assert row.status == PASS and row.detail == "1 ranks on 1 node(s) read rank 0's file"
    assert list((tmp_path / "doctor").iterdir()) == []  # the probe file is removed
    (tmp_path / "taken").write_text("a file where the folder should be")
    row = check_shared_folder(tmp_path / "taken", DistEnv())
    assert row.status == FAIL and row.detail.startswith(f"rank 0 on {hostname()}: rank 0 cannot write {tmp_path}")


# ---------------------------------------------------------------------------------------------------- the data check


def test_decode_sample_names_bad_rows_and_never_replaces_them(media, tmp_path):
    manifest = tmp_path / "mixed.csv"
    rows = [media["h264"], media["junk"], tmp_path / "missing.mp4", media["frames"]]
    manifest.write_text("path\n" + "\n".join(str(p) for p in rows) + "\n")
    dataset = VideoClipDataset(manifest, num_frames=4, sampling_rate=2, input_size=32, num_sample=2,
                               run_dir=tmp_path / "run")  # fmt: skip
    with pytest.raises(DecodeError):
        dataset.load_clip(2)
    (sample,) = decode_sample(dataset, count=16, rank=0, world=1)
    assert (sample.rows, sample.clips, sample.share) == (4, 2 * 2, 1.0)  # 2 readable rows x num_sample 2
    assert [(line, Path(path).name) for line, path, _ in sample.failures] == [(3, "junk.mp4"), (4, "missing.mp4")]
    assert dataset.bad.count == 0 and not (tmp_path / "run" / "bad_samples.csv").exists()  # nothing substituted
    (row,) = data_rows("data", [sample], world=1)
    assert row.status == FAIL and row.detail.startswith("2/4 sampled rows unreadable")
    assert f"{manifest}:4 {tmp_path / 'missing.mp4'}" in row.detail


# ---------------------------------------------------------------------------------------------------- SLURM


def _slurm_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "MASTER_"))}
    fake = tmp_path / "bin"
    fake.mkdir()
    # A stand-in srun: records its arguments, exits 3 (a doctor FAIL must fail the job).
    (fake / "srun").write_text(f'#!/bin/bash\necho "$@" > {tmp_path}/srun_args\nexit 3\n')
    (fake / "srun").chmod(0o755)
    env.update(PYTHON=sys.executable, PATH=f"{fake}:{env['PATH']}", DOCTOR="1", **extra)
    return env


def test_slurm_doctor_runs_the_doctor_through_srun_instead_of_the_run(tmp_path):
    env = _slurm_env(tmp_path)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\na.mp4\n")
    dry = subprocess.run(["bash", "launch/slurm/pretrain.sbatch", "--dry-run", "train.batch_size=4",
                          f"data.manifests=[{manifest}]"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    want = (f"doctor: srun --kill-on-bad-exit=1 --cpu-bind=none {sys.executable} -m videomae doctor --stage pretrain "
            f"--config vit_b_hybrid train.batch_size=4 data.manifests=[{manifest}]")  # fmt: skip
    assert want in dry.stdout.splitlines()
    assert not (tmp_path / "srun_args").exists()
    env["CONFIG"] = "vit_b_k400"
    run = subprocess.run(["bash", "launch/slurm/finetune.sbatch", "init=null"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 3
    args = (tmp_path / "srun_args").read_text().split()
    assert args[3:] == ["-m", "videomae", "doctor", "--stage", "finetune", "--config", env["CONFIG"], "init=null"]


# ---------------------------------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    write_demo_dataset(out, DemoConfig(num_train=16, num_val=4, frames=16), workers=1)
    return out


def _doctor(args: list[str], nproc: int = 2, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    launcher = [str(BIN / "deepspeed"), f"--num_gpus={nproc}", f"--master_port={free_port()}", "--module"]
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    return subprocess.run(
        [*launcher, "videomae", "doctor", "--config", str(PRETRAIN_DEMO), *TINY, *args], cwd=ROOT,
        env={**base, "OMP_NUM_THREADS": "1", **(env or {})}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _table(stdout: str) -> dict[str, tuple[str, str]]:
    rows = [line.split(" | ") for line in stdout.splitlines() if line.count(" | ") == 2]
    return {check.strip(): (status.strip(), detail) for check, status, detail in rows[1:]}


@pytest.mark.slow
def test_doctor_passes_on_the_demo_with_two_processes(demo, tmp_path):
    out = tmp_path / "run"
    proc = _doctor([f"data.manifests=[{demo}/train_unlabeled.csv]", f"data.data_root={demo}", f"output_dir={out}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = _table(proc.stdout)
    collectives = [check for check in table if check.startswith("collective ")]
    assert len(collectives) == len(check_collectives(torch.device("cpu"))) + 1  # + the float32 bucket all_reduce
    for check in [*collectives, "shared output_dir", "build", "data train_unlabeled.csv", "train steps", "checkpoint"]:
        assert table[check][0] == PASS, (check, table[check])
    assert "2 ranks on 1 node(s) read rank 0's file" in table["shared output_dir"][1]
    assert table["throughput"][0] in (PASS, WARN) and "bound" in table["throughput"][1]
    report = json.loads((out / "doctor.json").read_text())
    assert report["ok"] and report["world_size"] == 2 and report["stage"] == "pretrain"
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["data train_unlabeled.csv"]["figures"]["rows"] == 16  # every row of the 16-row manifest once
    assert len(checks["train steps"]["figures"]["losses"]) == STEPS
    # The doctor's run stays in its own folder, which keeps its log but not its checkpoint.
    assert (out / "doctor" / "metrics.jsonl").is_file() and not (out / "doctor" / "checkpoints").exists()
    assert not (out / "checkpoints").exists()


@pytest.mark.slow
def test_doctor_fails_naming_the_manifest_whose_files_are_missing(demo, tmp_path):
    gone = tmp_path / "gone.csv"
    lines = (demo / "train_unlabeled.csv").read_text().splitlines()
    gone.write_text("\n".join([lines[0]] + [line.replace("videos/", "moved/", 1) for line in lines[1:]]) + "\n")
    out = tmp_path / "run"
    proc = _doctor([f"data.manifests=[{gone}]", f"data.data_root={demo}", f"output_dir={out}"])
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    status, detail = _table(proc.stdout)["data gone.csv"]
    assert status == FAIL and detail.startswith("16/16 sampled rows unreadable")
    assert _table(proc.stdout)["train steps"] == (
        WARN,
        "skipped: no sampled row of gone.csv was readable (the run would stop)",
    )
    first = lines[1].split(",")[0].replace("videos/", "moved/", 1)
    assert f"{gone}:2 {demo / first}: file not found" in detail
    assert not json.loads((out / "doctor.json").read_text())["ok"]


@pytest.mark.slow
def test_a_rank_that_never_joins_ends_the_doctor_at_its_time_limit(tmp_path):
    # One process of a 2-rank job: the rendezvous waits for rank 1, which never comes.
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    env["MASTER_PORT"] = str(free_port())
    base = {k: v for k, v in os.environ.items() if k not in env}
    proc = subprocess.run(
        [sys.executable, "-m", "videomae", "doctor", "--config", str(PRETRAIN_DEMO), "--timeout", "5",
         f"output_dir={tmp_path}"], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "FAIL: process group: not finished within 5 s on rank 0" in proc.stderr
    assert _table(proc.stdout)["process group"][0] == FAIL


@pytest.mark.slow
def test_doctor_checks_a_finetuning_config_with_its_validation_set(demo, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "videomae", "doctor", "--config", str(FINETUNE_DEMO), "--rows", "4",
         f"data.manifests=[{demo}/train.csv]", f"data.val_manifests=[{demo}/val.csv]", f"data.data_root={demo}",
         f"data.labels={demo}/labels.txt", "data.input_size=32", "data.num_frames=4", "data.num_workers=0",
         "train.batch_size=2", "model.overrides={img_size: 32, patch_size: 8, all_frames: 4, embed_dim: 32, depth: 1, "
         "num_heads: 2}", f"output_dir={out}"],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = _table(proc.stdout)
    status, detail = table["data train.csv"]
    assert status == PASS and detail.startswith("4 rows on 1 rank(s) decoded")
    assert table["val data val.csv"][0] == PASS and table["train steps"][0] == PASS
    assert json.loads((out / "doctor.json").read_text())["stage"] == "finetune"
    assert not (out / "doctor" / "eval").exists()  # the doctor never scores the evaluation sets in full
