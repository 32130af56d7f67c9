"""What a run reports about faults: bad samples counted per batch (through loader workers) and judged against the
ceiling, every rank's warnings in ``train.log``, ``metrics.jsonl`` with each step once after a resume. The real
multi-process runs are in ``test_faults_drill.py``."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re

import pytest
import torch
from helpers import SMALL_CLIP, csv_manifest
from torch.utils.data import DataLoader

from videomae.data.bad_samples import RecordedRows, TooManyBadSamples, append_row_once, read_rows
from videomae.data.datasets import VideoClipDataset, collate_clips
from videomae.data.sampler import WeightedDistributedSampler
from videomae.engine.bad_sample_meter import BadSampleCeiling, BadSampleMeter
from videomae.engine.logging_utils import MetricsWriter, setup_logging

# ------------------------------------------------------------------------------------------------ bad-sample counts


@pytest.fixture
def quarter_bad(tmp_path, media):
    """A dataset of 16 rows, every fourth unreadable, and the indices of those."""
    good = [(media["h264"], "a"), (media["frames"], "b"), (media["mpeg4_avi"], "a")]
    bad = [(media["junk"], "a"), (media["truncated_mp4"], "b"), (media["empty"], "a"), (media["junk"], "b")]
    rows = [bad[i // 4] if i % 4 == 3 else good[i % 3] for i in range(16)]
    ds = VideoClipDataset(csv_manifest(tmp_path / "m.csv", rows), **SMALL_CLIP, run_dir=tmp_path / "run")
    return ds, {3, 7, 11, 15}


def test_each_batch_carries_its_failed_loads_exactly(quarter_bad):
    ds, bad = quarter_bad
    loader = DataLoader(ds, batch_size=4, num_workers=0, collate_fn=collate_clips)
    counted = [b["bad_rows"] for b in loader]
    assert all(rows.dtype == torch.long for rows in counted)
    assert sum(rows.numel() for rows in counted) == ds.bad.count > 0  # the dataset's own count of failures
    assert set(torch.cat(counted).tolist()) >= bad and set(torch.cat(counted).tolist()) <= bad
    assert counted[0].tolist()[0] == 3  # row 3 was drawn in the first batch: its failure is counted there


def test_failed_loads_in_worker_processes_reach_the_batch(quarter_bad):
    ds, bad = quarter_bad
    sampler = WeightedDistributedSampler(ds, seed=0)
    loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=2, collate_fn=collate_clips)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        rows = torch.cat([b["bad_rows"] for b in loader]).tolist()
        # every bad row is drawn once per epoch and fails there; replacements avoid known bad rows per worker
        assert set(rows) == bad and len(rows) >= len(bad)
    assert ds.bad.count == 0  # the main process never loaded a clip: the counts came through the batches


def test_each_bad_row_is_recorded_once_across_processes_reading_only_what_is_new(tmp_path):
    path = str(tmp_path / "run" / "bad_samples.csv")
    first, second = RecordedRows(), RecordedRows()  # what two worker processes know of the file
    key = [("/d/m.csv", line, f"v{line}.mp4") for line in range(2, 6)]
    assert append_row_once(path, key[0], "no frames", first)
    assert append_row_once(path, key[1], "moov atom\nnot found", second)  # second catches up with first's row
    assert not append_row_once(path, key[1], "again", first)  # first catches up with second's
    assert first.offset == second.offset == os.path.getsize(path)
    # Rows already read are never read again: garbage written over them (same length) goes unnoticed.
    with open(path, "r+b") as f:
        header = f.readline()
        f.seek(len(header))
        f.write(b"x" * (os.path.getsize(path) - len(header) - 1))
    assert append_row_once(path, key[2], "timeout", first) and first.offset == os.path.getsize(path)
    assert not append_row_once(path, key[2], "timeout", second)
    rows = [(r["manifest"], r["line"], r["path"], r["error"]) for r in read_rows(path)[1:]]
    assert rows == [("/d/m.csv", "4", "v4.mp4", "timeout")]  # after the garbled line
    # A file cut behind a process's back is read again from the start.
    os.truncate(path, 0)
    assert append_row_once(path, key[0], "no frames", first)
    assert [r["line"] for r in read_rows(path)] == ["2"]


class _Rows:
    """What the meter reads of a dataset: one row's metadata by index."""

    def __init__(self, n: int) -> None:
        self.n = n

    def row(self, i: int):
        from videomae.data.manifest import ManifestRow

        assert 0 <= i < self.n
        return ManifestRow(path=f"/data/v{i}.mp4", line=i + 2, manifest="/data/m.csv")


def _batch(*bad_rows: int) -> dict:
    return {"bad_rows": torch.tensor(bad_rows, dtype=torch.long)}


def test_the_ceiling_is_judged_over_the_last_window_of_loads(tmp_path):
    meter = BadSampleMeter(_Rows(40), batch_size=4, ceiling=0.5, window=20, run_dir=tmp_path)
    for _ in range(4):  # 4 steps, each 4 good loads + 4 failed ones (50%: not past the ceiling)
        meter.add_batch(_batch(7, 9, 7, 11))
        meter.end_step(*meter.take_step())
    assert meter.take_step() == (0, 0)
    for _ in range(3):  # now clean steps: the window forgets the old failures
        meter.add_batch(_batch())
        meter.end_step(*meter.take_step())
    meter.add_batch(_batch(*range(20, 36)))  # 16 failures + 4 good = 80% of 20 loads, window: this step alone
    bad, loads = meter.take_step()
    assert (bad, loads) == (16, 20)
    with pytest.raises(BadSampleCeiling) as err:
        meter.end_step(bad, loads)
    assert isinstance(err.value, TooManyBadSamples)
    message = str(err.value)
    assert message.startswith("16 of the last 20 clip loads failed (80%), more than data.bad_sample_ceiling=0.5")
    # the first distinct bad rows this rank saw, by manifest line
    assert "First bad rows: /data/m.csv:9 (/data/v7.mp4), /data/m.csv:11 (/data/v9.mp4), /data/m.csv:13 " in message
    assert f"{tmp_path}/bad_samples.csv" in message and "data.bad_sample_ceiling" in message


def test_a_short_burst_before_the_window_fills_does_not_stop(tmp_path):
    meter = BadSampleMeter(_Rows(8), batch_size=2, ceiling=0.5, window=200)
    meter.add_batch(_batch(1, 2, 3, 4, 5))  # 5 of 7 loads failed, but only 7 loads so far
    meter.end_step(*meter.take_step())
    never = BadSampleMeter(_Rows(8), batch_size=1, ceiling=1.0, window=1)
    never.add_batch(_batch(*[1] * 50))
    never.end_step(*never.take_step())  # ceiling 1: never stops


# ------------------------------------------------------------------------------------------------ train.log


def _log_from_rank(rank: int, path: str, lines: int) -> None:
    setup_logging(rank, path)
    log = logging.getLogger("videomae.test")
    for i in range(lines):
        log.warning("rank %d line %d %s", rank, i, "x" * 3000)  # longer than a stdio buffer's worth per line
        log.info("rank %d info %d", rank, i)


def test_every_rank_appends_whole_warning_lines_to_train_log(tmp_path):
    path = str(tmp_path / "train.log")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_log_from_rank, args=(rank, path, 300)) for rank in (0, 1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    lines = (tmp_path / "train.log").read_text().splitlines()
    pattern = re.compile(r"^\S+ \S+ \[rank (\d)\] WARNING videomae\.test: rank (\d) line (\d+) x{3000}$")
    warnings = [pattern.match(line) for line in lines if "WARNING" in line]
    assert all(warnings) and len(warnings) == 900  # none cut or interleaved
    assert all(m.group(1) == m.group(2) for m in warnings)  # each line says its own rank
    infos = [line for line in lines if " INFO " in line]
    assert len(infos) == 300 and all("[rank 0]" in line for line in infos)  # INFO from rank 0 only
    assert len(lines) == 1200


# ------------------------------------------------------------------------------------------------ metrics.jsonl


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_resumed_run_drops_the_steps_it_runs_again(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 7)) + '{"step": 7, "lo')
    writer = MetricsWriter(tmp_path, enabled=True, tensorboard=False, start_step=4)  # resumed from step 4
    assert [r["step"] for r in _rows(path)] == [1, 2, 3, 4]
    for step in (5, 6, 7):
        writer.write(step, {"loss": 0.5})
    writer.close()
    rows = _rows(path)
    assert [r["step"] for r in rows] == list(range(1, 8)) and [r["loss"] for r in rows[4:]] == [0.5] * 3
    assert not list(tmp_path.glob("*.partial"))
    MetricsWriter(tmp_path, enabled=True, tensorboard=False, start_step=7).close()
    assert [r["step"] for r in _rows(path)] == list(range(1, 8))  # nothing after 7: untouched
    MetricsWriter(tmp_path, enabled=True, tensorboard=False, start_step=0).close()
    assert path.read_text() == ""  # a fresh start in the same folder: no rows of the old run


def test_tensorboard_hides_the_steps_a_resume_runs_again(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = MetricsWriter(tmp_path, enabled=True)
    for step in range(1, 7):
        first.write(step, {"loss": float(step), "bad_samples": 1})
    first.close()
    resumed = MetricsWriter(tmp_path, enabled=True, start_step=4)
    for step in (5, 6, 7):
        resumed.write(step, {"loss": 10.0 * step, "bad_samples": 2})
    resumed.close()
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 50.0), (6, 60.0), (7, 70.0)
    ]  # fmt: skip
    assert [e.value for e in events.Scalars("train/bad_samples")] == [1, 1, 1, 1, 2, 2, 2]
