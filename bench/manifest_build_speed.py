"""Files per second of ``videomae manifest build`` with 1 and with 2 probe processes, in one run.

Writes ``--distinct`` demo clips (``videomae demo-data``: 32 frames of 64x64 H.264 each) and hard-links them under
``--files`` names in a scratch folder (a probe does the same work on a link as on a copy; the page cache is warm for
every run alike), then times the whole build (scan, probe, write the manifest) for each worker count, interleaved,
best of ``--repeats``, and prints files/s and the ratio to the 1-process build as a markdown table.

    python bench/manifest_build_speed.py --files 2000 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

from videomae.data.demo import DemoConfig, write_demo_dataset
from videomae.data.manifest_tools import build_manifest


def make_folder(root: Path, files: int, distinct: int) -> int:
    """``files`` links to ``distinct`` demo clips under ``root/clips/k/``; returns how many clips were written."""
    demo = root / "demo"
    write_demo_dataset(demo, DemoConfig(num_train=distinct - distinct // 5, num_val=distinct // 5), workers=2)
    sources = sorted((demo / "videos").rglob("*.mp4"))
    for k in range(files):
        target = root / "clips" / f"{k % 100:02d}" / f"clip_{k:05d}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(sources[k % len(sources)], target)
        except OSError:  # a file system without hard links
            shutil.copy(sources[k % len(sources)], target)
    return len(sources)


def _cpu_s() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_build(folder: Path, out: Path, workers: int) -> tuple[float, float]:
    """Wall seconds and CPU seconds (this process and its probers) of one whole build from scratch."""
    cpu, began = _cpu_s(), time.perf_counter()
    result = build_manifest(folder, out, workers=workers, progress=False)
    elapsed, cpu = time.perf_counter() - began, _cpu_s() - cpu
    assert not result.skipped and result.probed == len(result.rows), result.summary(str(folder))
    return elapsed, cpu


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=2000, help="files in the folder (default 2000)")
    p.add_argument("--distinct", type=int, default=200, help="distinct demo clips they link to (default 200)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="probe processes to compare (first: base)")
    p.add_argument("--repeats", type=int, default=2, help="runs per worker count, interleaved; best kept")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="manifest_build_speed_") as scratch:
        root = Path(scratch)
        distinct = make_folder(root, args.files, args.distinct)
        build_manifest(root / "clips" / "00", root / "warm-up.csv", workers=1, progress=False)  # imports, cache
        load = os.getloadavg()[0]
        best = {w: (float("inf"), 0.0) for w in args.workers}
        for _ in range(args.repeats):
            for w in args.workers:
                best[w] = min(best[w], time_build(root / "clips", root / f"m{w}.csv", w))
        same = len({(root / f"m{w}.csv").read_bytes() for w in args.workers}) == 1

    base = args.files / best[args.workers[0]][0]
    print(f"{args.files} files ({distinct} distinct demo clips, hard-linked), best of {args.repeats}; ", end="")
    print(f"{os.cpu_count()} CPU cores ({platform.machine()}), 1-min load average {load:.1f} before the runs; ", end="")
    print(f"manifests identical: {same}\n")
    print("| probe processes | seconds | files/s | CPU ms per file (all processes) | vs 1 process |")
    print("| --- | --- | --- | --- | --- |")
    for w in args.workers:
        (wall, cpu), rate = best[w], args.files / best[w][0]
        print(f"| {w} | {wall:.2f} | {rate:.0f} | {1000 * cpu / args.files:.2f} | **{rate / base:.2f}x** |")


if __name__ == "__main__":
    main()
