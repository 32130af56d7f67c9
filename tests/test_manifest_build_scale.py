"""``videomae manifest build`` at scale: a killable probe pool, a per-file timeout, resume after a kill, shards
joined by ``manifest merge`` into the bytes an unsharded build writes, and a bad ``--shard`` refused with the fix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
from conftest import write_frame_folder, write_video

from videomae.cli import main
from videomae.data import manifest_build, manifest_probe
from videomae.data.manifest_resume import ProbeLog, probe_log_path
from videomae.data.manifest_shards import parse_shard, rejects_path
from videomae.data.manifest_tools import build_manifest
from videomae.data.worker_pool import JobFailed, map_unordered

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = [5, 6, 7, 8, 9, 10, 11, 12, 5, 6, 7, 8, 9, 10]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """14 short H.264 clips of known lengths in two class folders, a frame folder and a junk file."""
    root = tmp_path_factory.mktemp("videos")
    for i, n in enumerate(LENGTHS):
        (root / f"class_{i % 2}").mkdir(exist_ok=True)
        write_video(root / f"class_{i % 2}" / f"clip_{i:02d}.mp4", n, options={"g": "4"})
    write_frame_folder(root / "class_1" / "frames_a", 7)
    (root / "class_0" / "junk.mp4").write_bytes(os.urandom(3000))
    return root


def _build(folder: Path, out: Path, **kw) -> Path:
    kw = {"labels_from_subfolders": True, "workers": 2, "progress": False, **kw}
    build_manifest(folder, out, **kw)
    return out


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory) -> Path:
    """The unsharded, uninterrupted build with one probe process."""
    return _build(folder, tmp_path_factory.mktemp("ref") / "m.csv", workers=1)


def _count_probes(monkeypatch, counter: Path) -> None:
    """Make every probe append its path to ``counter`` (forked probe processes inherit the patch)."""
    probe = manifest_probe._probe

    def counted(job):
        with open(counter, "a") as f:
            f.write(job.path + "\n")
        return probe(job)

    monkeypatch.setattr(manifest_probe, "_probe", counted)


def test_the_pool_build_equals_the_one_process_build(folder, reference, tmp_path):
    pooled = _build(folder, tmp_path / "m.csv", workers=2)
    assert pooled.read_bytes() == reference.read_bytes()
    assert Path(rejects_path(pooled)).read_bytes() == Path(rejects_path(reference)).read_bytes()
    lines = reference.read_text().splitlines()
    assert lines[0] == "path,start,num_frames,label,fps,width,height,duration" and len(lines) == 1 + 15
    counts = {line.split(",")[0]: int(line.split(",")[2]) for line in lines[1:]}
    with av.open(str(folder / "class_1" / "clip_07.mp4")) as c:  # independent count: decode every frame
        assert counts["class_1/clip_07.mp4"] == sum(1 for _ in c.decode(video=0)) == LENGTHS[7]
    assert counts["class_1/frames_a"] == 7
    assert Path(rejects_path(reference)).read_text().splitlines()[1].startswith("class_0/junk.mp4,")
    assert not Path(probe_log_path(reference)).exists()  # the log goes once the manifest is written


def test_shards_merged_equal_the_unsharded_build(folder, reference, tmp_path, capsys):
    shards = [_build(folder, tmp_path / f"s{i}.csv", shard=f"{i}/3", workers=1) for i in range(3)]
    sizes = [len(s.read_text().splitlines()) - 1 for s in shards]
    assert sum(sizes) == 15 and all(sizes)  # every clip in exactly one shard (the join refuses a repeat)
    rejects = [rejects_path(s) for s in shards]  # what `merge shards/*.csv` passes too
    assert main(["manifest", "merge", *map(str, shards), *rejects, "-o", str(tmp_path / "joined.csv")]) == 0
    assert "joined the shards into 15 rows" in capsys.readouterr().out
    assert (tmp_path / "joined.csv").read_bytes() == reference.read_bytes()
    assert Path(rejects_path(tmp_path / "joined.csv")).read_bytes() == Path(rejects_path(reference)).read_bytes()
    # a missing shard, or a plain manifest among shards, is refused
    assert main(["manifest", "merge", str(shards[0]), str(shards[2]), "-o", str(tmp_path / "x.csv")]) == 2
    assert "missing [1]" in capsys.readouterr().err
    assert main(["manifest", "merge", *map(str, shards), str(reference), "-o", str(tmp_path / "x.csv")]) == 2
    assert "join on their own" in capsys.readouterr().err


@pytest.mark.slow  # a fresh interpreter imports torch: ~5-9 s on a busy 2-core machine
def test_the_sbatch_array_script_builds_its_shard_and_the_shards_join(folder, reference, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    env |= {"ROOT": str(folder), "OUT": str(tmp_path / "shards"), "SLURM_ARRAY_TASK_COUNT": "2"}
    subprocess.run(["bash", "launch/slurm/manifest_build.sbatch", "--labels-from-subfolders", "--quiet"],
                   cwd=ROOT, env=env | {"SLURM_ARRAY_TASK_ID": "1"}, check=True, capture_output=True)  # fmt: skip
    _build(folder, tmp_path / "shards" / "shard_0.csv", shard="0/2")  # task 0, in this process: faster
    shards = sorted(map(str, (tmp_path / "shards").glob("shard_*.csv")))  # the rejects files match the glob too
    assert len(shards) == 4 and main(["manifest", "merge", *shards, "-o", str(tmp_path / "m.csv")]) == 0
    assert (tmp_path / "m.csv").read_bytes() == reference.read_bytes()


_SLOW_BUILD = """
import sys, time
from videomae.data import manifest_build, manifest_probe
probe = manifest_probe._probe
manifest_probe._probe = lambda job: (time.sleep(0.15), probe(job))[1]
from videomae.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _result_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().split("\n")[1:] if line.endswith("}")] if log.exists() else []


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(") ", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] not in "ZX"
    except (FileNotFoundError, IndexError):
        return False


def _stop_build_after(command: list[str], log: Path, rows: int, sig: int) -> tuple[int, str, list[int]]:
    """Start the slowed build, send ``sig`` once ``log`` holds ``rows`` results; exit code, stderr, probers."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(_result_lines(log)) < rows and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    workers = _children(proc.pid)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=30)
    time.sleep(0.3)
    assert len(workers) == 2 and not any(_alive(pid) for pid in workers), "probers outlived their parent"
    return proc.returncode, err, workers


def test_an_interrupted_build_resumes_and_probes_only_the_rest(folder, reference, tmp_path, monkeypatch):
    stream = manifest_build.probe_stream

    def interrupted_after_5(*args):
        for k, item in enumerate(stream(*args)):
            if k == 5:
                raise KeyboardInterrupt  # as Ctrl-C in the middle of the build
            yield item

    monkeypatch.setattr(manifest_build, "probe_stream", interrupted_after_5)
    out = tmp_path / "m.csv"
    with pytest.raises(manifest_build.BuildInterrupted, match="the results of 5 of 16 clips are kept in"):
        build_manifest(folder, out, labels_from_subfolders=True, workers=2, progress=False)
    assert not out.exists() and len(_result_lines(Path(probe_log_path(out)))) == 5
    monkeypatch.setattr(manifest_build, "probe_stream", stream)
    counter = tmp_path / "probed.txt"
    _count_probes(monkeypatch, counter)
    result = build_manifest(folder, out, labels_from_subfolders=True, workers=2, progress=False)
    assert (result.resumed, result.probed, len(counter.read_text().splitlines())) == (5, 11, 11)
    assert out.read_bytes() == reference.read_bytes()


@pytest.mark.slow  # three builds in fresh interpreters: ~10 s on a busy 2-core machine
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_stopped_then_killed_build_resumes_and_probes_only_the_rest(folder, reference, tmp_path, monkeypatch):
    out = tmp_path / "m.csv"
    log = Path(probe_log_path(out))
    command = [sys.executable, "-c", _SLOW_BUILD, "manifest", "build", str(folder), "-o", str(out)]
    command += ["--labels-from-subfolders", "--workers", "2", "--quiet"]
    code, err, _ = _stop_build_after(command, log, 2, signal.SIGTERM)  # SLURM preemption: stops as Ctrl-C does
    first = len(_result_lines(log))
    assert code == 130 and f"the results of {first} of 16 clips are kept in {log}" in err and not out.exists()
    code, _, _ = _stop_build_after(command, log, first + 3, signal.SIGKILL)  # the rerun resumes, then dies hard
    kept = len(_result_lines(log))
    assert code == -signal.SIGKILL and first + 3 <= kept < 16 and not out.exists()  # 14 videos, frames, junk

    counter = tmp_path / "probed.txt"
    _count_probes(monkeypatch, counter)
    result = build_manifest(folder, out, labels_from_subfolders=True, workers=2, progress=False)
    assert (result.resumed, result.probed) == (kept, 16 - kept)
    assert len(counter.read_text().splitlines()) == 16 - kept  # counted in the probe processes themselves
    assert out.read_bytes() == reference.read_bytes()
    assert not log.exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_timed_out_reported_and_the_build_finishes(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    for i in range(3):
        write_video(root / f"clip_{i}.mp4", 6)
    os.mkfifo(root / "hang.mp4")  # opening it for reading blocks until a writer comes: forever
    began = time.monotonic()
    result = build_manifest(root, tmp_path / "m.csv", workers=2, timeout=1.0, progress=False)
    assert time.monotonic() - began < 20
    assert [r.path for r in result.rows] == ["clip_0.mp4", "clip_1.mp4", "clip_2.mp4"]
    assert Path(rejects_path(tmp_path / "m.csv")).read_text().splitlines() == [
        "path,reason",
        "hang.mp4,timed out after 1 s (its worker process was killed)",
    ]
    # a rerun with the same timeout does not wait on it again; one with more time retries it
    log = ProbeLog(tmp_path / "m.csv", {"id": 1})
    log.record("hang.mp4", manifest_probe.ProbeResult(error="timed out", timed_out=True), 1.0)
    log.record("clip_0.mp4", manifest_probe.ProbeResult(5), 1.0)
    log.close()
    log = ProbeLog(tmp_path / "m.csv", {"id": 1})
    assert log.result_for("hang.mp4", 1.0).timed_out and log.result_for("hang.mp4", 5.0) is None
    assert log.result_for("clip_0.mp4", 5.0).num_frames == 5
    log.close()


def test_the_worker_pool_kills_hung_and_survives_crashed_workers():
    results = dict(map_unordered(_job, list(range(8)), workers=2, timeout=1.0))
    assert {i: results[i] for i in (0, 1, 2, 6, 7)} == {0: 0, 1: 1, 2: 4, 6: 36, 7: 49}
    assert results[3] == JobFailed("timed out after 1 s (its worker process was killed)", timed_out=True)
    assert results[4] == JobFailed("the worker process died (SIGKILL)")
    assert results[5] == JobFailed("ValueError: five")


def _job(x: int) -> int:
    if x == 3:
        time.sleep(60)
    if x == 4:
        os.kill(os.getpid(), signal.SIGKILL)  # as a decoder crash or the OOM killer would
    if x == 5:
        raise ValueError("five")
    return x * x


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3/3", "I = 3 is not in 0..2 (a SLURM array that starts at 1?); shards count from 0: --shard 0/3 ..."),
        ("-1/4", "I = -1 is not in 0..3; shards count from 0: --shard 0/4 ... --shard 3/4"),
        ("0/0", "N = 0, need at least one shard (--shard 0/1: all clips)"),
        ("1of3", "expected I/N, e.g. --shard 0/8 for the first of 8 shards"),
    ],
)
def test_a_bad_shard_is_refused_with_the_fix(text, expected, folder, tmp_path, capsys):
    with pytest.raises(ValueError) as refused:
        parse_shard(text)
    assert str(refused.value).startswith(f"--shard {text!r}: {expected.removesuffix('...')}")
    with pytest.raises(SystemExit) as stopped:
        main(["manifest", "build", str(folder), "-o", str(tmp_path / "m.csv"), f"--shard={text}"])
    assert stopped.value.code == 2 and expected.removesuffix("...") in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # refused before anything is written


def test_the_log_of_another_build_is_refused_and_a_running_one_is_locked(tmp_path):
    out = tmp_path / "m.csv"
    log = ProbeLog(out, {"root": "/a", "shard": "0/2"})
    with pytest.raises(ValueError, match="being written by another build"):
        ProbeLog(out, {"root": "/a", "shard": "0/2"})
    log.record("x.mp4", manifest_probe.ProbeResult(3), 30.0)
    log.close()
    with open(probe_log_path(out), "a") as f:
        f.write('{"rel": "y.mp4", "num_fr')  # a line cut short by a kill
    with pytest.raises(ValueError) as refused:
        ProbeLog(out, {"root": "/a", "shard": "1/2"})
    assert "shard: '0/2' there, '1/2' now" in str(refused.value) and f"delete {probe_log_path(out)}" in str(
        refused.value
    )
    log = ProbeLog(out, {"root": "/a", "shard": "0/2"})
    assert set(log.done) == {"x.mp4"} and log.done["x.mp4"].num_frames == 3
    log.record("z.mp4", manifest_probe.ProbeResult(4), 30.0)
    log.close()
    lines = Path(probe_log_path(out)).read_text().splitlines()
    assert json.loads(lines[-1])["rel"] == "z.mp4" and len(lines) == 4  # header, x, the cut line, z
