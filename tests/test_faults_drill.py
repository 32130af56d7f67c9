"""The faults drill on real runs (``launch/pretrain.py``, the DeepSpeed engine, 2 gloo processes on CPU): bad rows
counted per step, rank 1's warnings in ``train.log``, a checkpoint the storage refuses (file-size limit; a full
tmpfs where a user namespace can mount one) named on every rank with the last committed checkpoint kept, the resume
after it logging each step once, the export command at the limit, and the bad-row ceiling stopping every rank."""

from __future__ import annotations

import json
import resource
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from run_helpers import PRETRAIN_DEMO_YAML, ROOT, launch_pretrain, losses, pretrain_overrides

from videomae.data.bad_samples import read_bad_samples
from videomae.data.demo import DemoConfig, write_demo_dataset
from videomae.engine import checkpointing as ckpt

LIMIT = 100_000
"""File-size limit (bytes) of the faulty runs: above logs and metrics, below DeepSpeed's model and optimizer files."""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The demo set plus ``quarter_bad.csv`` (every fourth row an unreadable file) and ``mostly_bad.csv`` (one
    readable row of 24)."""
    out = tmp_path_factory.mktemp("faults_demo")
    write_demo_dataset(out, DemoConfig(num_train=24, num_val=6, frames=16), workers=1)
    header, *rows = (out / "train_unlabeled.csv").read_text().splitlines()
    (out / "videos/bad").mkdir()

    def unreadable(i: int) -> str:
        (out / f"videos/bad/bad_{i:02d}.mp4").write_bytes(b"not a video " * 10)
        return f"videos/bad/bad_{i:02d}.mp4,16,16,64,64,1,demo,"  # an empty caption

    quarter = [unreadable(i) if i % 4 == 1 else row for i, row in enumerate(rows)]
    (out / "quarter_bad.csv").write_text("\n".join([header, *quarter]) + "\n")
    mostly = [row if i == 0 else unreadable(i) for i, row in enumerate(rows)]
    (out / "mostly_bad.csv").write_text("\n".join([header, *mostly]) + "\n")
    return out


def _args(data: Path, out: Path, manifest: str, *extra: str) -> list[str]:
    return pretrain_overrides(data, out, f"data.manifests=[{data / manifest}]", "data.num_workers=1", *extra)


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, resource.RLIM_INFINITY))


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    output, _ = proc.communicate(timeout=600)
    return proc.returncode, output


@pytest.mark.slow
def test_bad_rows_counted_full_disk_named_and_resume_logs_each_step_once(data, tmp_path):
    out = tmp_path / "run"
    first = _args(data, out, "quarter_bad.csv", "train.max_steps=4", "train.save_every=2")
    code, log = _finish(launch_pretrain("torchrun", first, nproc=2))
    assert code == 0, log[-4000:]
    records = _records(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    counts = [r["bad_samples"] for r in records]
    assert [r["bad_samples_total"] for r in records] == [sum(counts[: i + 1]) for i in range(4)]
    recorded = read_bad_samples(out)  # each bad row once; a row can fail more often than once
    # Loader workers read ahead, so the file may also name rows of batches the 4 steps never consumed.
    assert sum(counts) > 0 and len(recorded) > 0
    assert all(int(r["line"]) % 4 == 3 for r in recorded)  # data rows 1, 5, 9, ...: lines 3, 7, 11, ...
    train_log = (out / "train.log").read_text()
    assert "[rank 1] WARNING videomae.data.bad_samples: bad sample" in train_log  # from rank 1's loader worker
    assert "[rank 0] INFO" in train_log and "[rank 1] INFO" not in train_log
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard")).Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/bad_samples")] == list(enumerate(counts, 1))

    # The resumed run's checkpoint at step 6 hits the file-size limit on every rank that writes a big file
    # (loading in the training process: a worker's batch in shared memory is a file under the limit too).
    faulty = [*first[:-2], "train.max_steps=8", "train.save_every=3", "data.num_workers=0"]
    code, log = _finish(launch_pretrain("torchrun", faulty, nproc=2, preexec_fn=_limit_file_size))
    assert code == 1, log[-4000:]
    root = out / "checkpoints"
    assert f"saving checkpoint {root / 'step_00000006'} failed: rank 0: file size limit reached writing " in log
    assert f"{root / 'step_00000006.tmp'}/" in log and "`ulimit -f`" in log
    assert f"The last committed checkpoint {root / 'step_00000004'} is kept; rerun to resume from it" in log
    assert "CheckpointWriteError" in (out / "train.log").read_text()
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["step_00000002", "step_00000004"]
    assert (root / "latest").read_text() == "step_00000004"
    before = losses(out)
    assert sorted(before) == [1, 2, 3, 4, 5, 6]  # steps 5 and 6 ran, their checkpoint did not make it

    code, log = _finish(launch_pretrain("torchrun", faulty, nproc=2))
    assert code == 0, log[-4000:]
    assert f"resumed from {root / 'step_00000004'}" in log
    steps = [r["step"] for r in _records(out)]
    assert steps == list(range(1, 9))  # 5 and 6 once each: the rows of the failed run were dropped
    after = losses(out)
    assert after[5] == before[5] and after[6] == before[6]  # the resume re-ran them exactly

    # The export command at the same limit: named, exit 1, no file left.
    target = tmp_path / "export" / "model.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "videomae", "export", str(out), str(target)],
        cwd=ROOT, capture_output=True, text=True, preexec_fn=_limit_file_size, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"videomae export: error: file size limit reached writing {target}.partial" in proc.stderr
    assert not target.exists() and not list(target.parent.glob("*"))


@pytest.mark.slow
def test_mostly_bad_rows_stop_every_rank_with_the_rows_named(data, tmp_path):
    out = tmp_path / "run"
    args = _args(data, out, "mostly_bad.csv", "train.max_steps=50", "train.save_every=100",
                 "data.bad_sample_window=40", "data.max_consecutive_failures=1000")  # fmt: skip
    code, log = _finish(launch_pretrain("deepspeed", args, nproc=2))
    assert code == 1, log[-4000:]
    message = log[log.index("BadSampleCeiling: ") :].splitlines()[0]
    assert "of the last" in message and "clip loads failed" in message and "data.bad_sample_ceiling=0.5" in message
    named = message.split("First bad rows: ")[1].split(";")[0].split(", ")
    assert 1 <= len(named) <= 5 and all(f"{data / 'mostly_bad.csv'}:" in row for row in named)
    assert f"{out}/bad_samples.csv" in message
    assert log.count("BadSampleCeiling: ") == 1  # said once (rank 0), though every rank stopped
    records = _records(out)
    assert 1 <= len(records) < 50 and records[-1]["bad_samples_total"] >= 20  # stopped early, counted
    assert not (out / "export").exists()


@pytest.mark.slow
def test_a_streak_of_unreadable_clips_stops_the_run_naming_it_in_train_log(data, tmp_path):
    """The loader's backstop (a storage gone away: no clip loads at all) ends the run with exit 1 and one line in
    train.log naming the streak and the last row, not a bare traceback."""
    out = tmp_path / "run"
    args = _args(data, out, "mostly_bad.csv", "train.max_steps=50", "data.max_consecutive_failures=2",
                 "data.bad_sample_ceiling=1.0")  # fmt: skip
    code, log = _finish(launch_pretrain("python", args))
    assert code == 1, log[-4000:]
    line = next(x for x in (out / "train.log").read_text().splitlines() if "TooManyBadSamples: " in x)
    assert "2 clips in a row failed to load (last: " in line and f"{data / 'mostly_bad.csv'}:" in line, line
    assert "videomae manifest check" in line
    assert not (out / "export").exists()


def _user_namespaces() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _user_namespaces(), reason="no unprivileged user+mount namespaces to mount a small tmpfs")
def test_a_full_tmpfs_during_a_save_says_no_space_left(data, tmp_path):
    mount, saved = tmp_path / "small", tmp_path / "saved"
    mount.mkdir()
    args = pretrain_overrides(data, mount, "train.max_steps=4", "train.save_every=2")
    # One checkpoint (about 0.9 MB for this model on one process) fits, the second does not. The tmpfs lives as
    # long as the namespace: the run folder is copied out before it ends.
    script = (
        f"mount -t tmpfs -o size=1200k tmpfs {mount} && cd {ROOT} && "
        f"{sys.executable} launch/pretrain.py --config {PRETRAIN_DEMO_YAML} {' '.join(map(shlex.quote, args))}; rc=$?; "
        f"cp -a {mount} {saved}; exit $rc"
    )
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-4000:]
    root = mount / "checkpoints"
    assert f"saving checkpoint {root / 'step_00000004'} failed: rank 0: no space left on {root}" in proc.stderr
    assert f"The last committed checkpoint {root / 'step_00000002'} is kept" in proc.stderr
    kept = saved / "checkpoints"
    assert sorted(p.name for p in kept.iterdir() if p.is_dir()) == ["step_00000002"]
    assert ckpt.find_latest(kept).step == 2 and [r["step"] for r in _records(saved)] == [1, 2, 3, 4]
