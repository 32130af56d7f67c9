"""Million-row manifests: time to a ready dataset, memory it adds, and what DataLoader workers reading it copy.

Writes a CSV of ``--rows`` clips (default 1.35 M, the size of the VideoMAE V2 hybrid: ``path,num_frames,label``
with 710 class names) in a temporary folder, then measures two representations of it, each in a fresh
interpreter so that the memory figures are its own:

* **columnar**: ``HybridVideoDataset([SourceSpec(csv)])`` as the code builds it now (a ``ManifestTable``: numpy
  columns, paths in one buffer); the workers read ``dataset.row(i)``.
* **baseline**: the representation before, rebuilt here as the dataset built it: ``read_manifest(csv).rows`` (a
  ``ManifestRow`` per row) plus the per-row ``labels`` and row-source lists; the workers read ``rows[i]``,
  ``labels[i]`` and the row's source.

Measured: seconds until the dataset is ready; RSS added to the process (after - before, live, and the peak); then a
``torch`` DataLoader (``fork``, as on Linux by default) with ``--workers`` workers, worker ``k`` reading the metadata
of every index of its share (together every row, no decoding) and reporting its private memory
(``Private_Clean + Private_Dirty`` of ``/proc/self/smaps_rollup``, i.e. USS) at the start, after reading and after
a ``gc.collect()`` (a full collection writes to every tracked object, the interpreter's own included: a long-running
worker's collector does it sooner or later); once more with ``gc.freeze()`` in the main process before the workers
fork. The sampler is measured in processes of its own: memory held during an epoch by rank 0 of 2 of a
``WeightedDistributedSampler`` over all rows, as it is (an ``int64`` tensor) and as it was (``global_indices()``
sliced: a list of Python ints).
Targets (issue 15): ready <= 5 s, <= 300 MB added, <= 50 MB private growth per worker.

    python bench/manifest_scale.py                              # 1.35 M rows, 2 workers
    python bench/manifest_scale.py --rows 200000 --workers 4
    python bench/manifest_scale.py --write-results bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from videomae.data.datasets import HybridVideoDataset, SourceSpec
from videomae.data.manifest import read_manifest
from videomae.data.sampler import WeightedDistributedSampler

CLASSES = [f"class_{k:03d}" for k in range(710)]
TARGETS = {"ready_s": 5.0, "added_mb": 300.0, "growth_mb": 50.0}


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    """``path,num_frames,label`` rows shaped like a Kinetics-710 manifest (~47 bytes a row)."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        f.write("path,num_frames,label\n")
        for i in range(rows):
            name = CLASSES[rng.randrange(len(CLASSES))]
            f.write(f"k710/{name}/{i:011d}.mp4,{rng.randrange(30, 600)},{name}\n")


def status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def trimmed_rss_kb() -> int:
    """RSS after glibc gave back the free memory it keeps (``malloc_trim``): what the process holds live."""
    ctypes.CDLL(None).malloc_trim(0)
    return status_kb("VmRSS")


def private_kb() -> int:
    """USS: pages only this process holds (``Private_Clean + Private_Dirty``)."""
    with open("/proc/self/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith("Private_"))


class Baseline:
    """The per-row representation the dataset had: a ``ManifestRow`` per row plus parallel per-row lists."""

    def __init__(self, csv: str):
        manifest = read_manifest(csv)
        index = {n: i for i, n in enumerate(sorted(manifest.label_names))}
        remap = [index[n] for n in manifest.label_names]
        self.rows = manifest.rows
        self.labels = [-1 if r.label is None else remap[r.label] for r in manifest.rows]
        self.source_sizes = [len(manifest.rows)]
        self._row_source = [0] * len(manifest.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, i: int) -> tuple:
        row = self.rows[i]
        return row.path, row.num_frames, self.labels[i], self._row_source[i]


class Share(Dataset):
    """Item ``k``: read the metadata of every ``k``-th share of the rows; returns this worker's USS before/after."""

    def __init__(self, store, shares: int):
        self.store, self.shares = store, shares

    def __len__(self) -> int:
        return self.shares

    def __getitem__(self, k: int) -> dict:
        n = len(self.store)
        before, start = private_kb(), time.perf_counter()
        for i in range(k * n // self.shares, (k + 1) * n // self.shares):
            self.store.row(i)
        after, seconds = private_kb(), time.perf_counter() - start
        gc.collect()  # as a worker's collector eventually does: it writes to the header of every tracked object
        return {"before_kb": before, "after_kb": after, "collected_kb": private_kb(), "s": seconds}


def run_case(case: str, csv: str, workers: int) -> dict:
    """One representation, measured in this (fresh) process."""
    torch.set_num_threads(1)
    base_rss = trimmed_rss_kb()
    start = time.perf_counter()
    columnar = case.startswith("columnar")
    store = HybridVideoDataset([SourceSpec(csv)], num_frames=16, sampling_rate=4) if columnar else Baseline(csv)
    ready = time.perf_counter() - start
    added = status_kb("VmRSS") - base_rss
    peak = status_kb("VmHWM") - base_rss
    held = trimmed_rss_kb() - base_rss
    if case.endswith("-frozen"):
        gc.freeze()  # objects alive now are left out of every later collection, the workers' included
    loader = DataLoader(Share(store, workers), batch_size=None, num_workers=workers, multiprocessing_context="fork")
    reports = list(loader)
    return {
        "case": case,
        "rows": len(store),
        "ready_s": ready,
        "added_mb": added / 1024,
        "peak_mb": peak / 1024,
        "held_mb": held / 1024,
        "workers": [
            {key.replace("_kb", "_mb"): value / 1024 for key, value in r.items() if key != "s"} for r in reports
        ],
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


class Rows:
    """A dataset of ``n`` rows in one source, for the sampler alone."""

    def __init__(self, n: int):
        self.source_sizes = [n]

    def __len__(self) -> int:
        return self.source_sizes[0]


def run_sampler(case: str, rows: int) -> dict:
    """Memory held by rank 0 of 2 during an epoch: the sampler as it is, or as it was (a list of Python ints)."""
    sampler = WeightedDistributedSampler(Rows(rows), num_replicas=2, rank=0, seed=0)
    before = trimmed_rss_kb()
    if case == "sampler":
        it = iter(sampler)
        next(it)
    else:  # before: the epoch's global list, its rest from the resume offset, and this rank's share of it
        it = iter(sampler.global_indices()[0:][0::2])
    return {"case": case, "held_mb": (trimmed_rss_kb() - before) / 1024}


def table(results: dict[str, dict], rows: int, csv_mb: float, workers: int) -> str:
    old, new = results["baseline"], results["columnar"]

    def growth(case: str, key: str) -> float:
        return max(w[key] - w["before_mb"] for w in results[case]["workers"])

    def number(v: float) -> str:
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.0f}"

    def row(label: str, old_value: float, new_value: float, unit: str, better: str, target: str = "") -> str:
        ratio = f"{old_value / max(new_value, 0.01):.0f}x {better}"
        return f"| {label} | {number(old_value)} {unit} | {number(new_value)} {unit} | {ratio} | {target} |"

    def uss(case: str) -> str:
        return ", ".join(f"{w['before_mb']:.0f} / {w['after_mb']:.0f} / {w['collected_mb']:.0f}"
                         for w in results[case]["workers"])  # fmt: skip

    mb, per_worker = f"<= {TARGETS['added_mb']:.0f} MB", f"<= {TARGETS['growth_mb']:.0f} MB"
    lines = [
        f"{rows:,} rows, {csv_mb:.0f} MB CSV; {workers} DataLoader workers (fork), each reading the metadata of "
        f"1/{workers} of the rows (together every row), then running `gc.collect()`.",
        "",
        "| | baseline (row objects) | columnar | ratio | target |",
        "| --- | --- | --- | --- | --- |",
        row("seconds to ready", old["ready_s"], new["ready_s"], "s", "faster", f"<= {TARGETS['ready_s']:.0f} s"),
        row("RSS added to the main process", old["added_mb"], new["added_mb"], "MB", "less", mb),
        row("of it live (after `malloc_trim`)", old["held_mb"], new["held_mb"], "MB", "less"),
        row("RSS peak during the build (above the start)", old["peak_mb"], new["peak_mb"], "MB", "less"),
        f"| worker USS, MB: start / after reading / after `gc.collect()` | {uss('baseline')} | {uss('columnar')} | | |",
        row(
            "private growth per worker: reading",
            growth("baseline", "after_mb"),
            growth("columnar", "after_mb"),
            "MB",
            "less",
            per_worker,
        ),  # fmt: skip
        row(
            "... then a full collection",
            growth("baseline", "collected_mb"),
            growth("columnar", "collected_mb"),
            "MB",
            "less",
        ),  # fmt: skip
        row(
            "... the same with `gc.freeze()` before the workers fork",
            growth("baseline-frozen", "collected_mb"),
            growth("columnar-frozen", "collected_mb"),
            "MB",
            "less",
            per_worker,
        ),  # fmt: skip
        row(
            "sampler during an epoch (rank 0 of 2, live)",
            results["sampler-list"]["held_mb"],
            results["sampler"]["held_mb"],
            "MB",
            "less",
        ),  # fmt: skip
    ]
    met = (
        new["ready_s"] <= TARGETS["ready_s"]
        and new["added_mb"] <= TARGETS["added_mb"]
        and growth("columnar", "after_mb") <= TARGETS["growth_mb"]
        and growth("columnar-frozen", "collected_mb") <= TARGETS["growth_mb"]
    )
    lines += ["", "targets met" if met else "targets NOT met"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_350_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--write-results", type=Path, help="append a section to this RESULTS.md")
    cases = ("columnar", "baseline", "columnar-frozen", "baseline-frozen", "sampler", "sampler-list")
    parser.add_argument("--case", choices=cases, help=argparse.SUPPRESS)  # child process
    parser.add_argument("--csv", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case in ("sampler", "sampler-list"):
        print(json.dumps(run_sampler(args.case, args.rows)))
        return
    if args.case:
        print(json.dumps(run_case(args.case, args.csv, args.workers)))
        return
    with tempfile.TemporaryDirectory(prefix="manifest_scale_") as tmp:
        csv = Path(tmp) / "hybrid.csv"
        write_csv(csv, args.rows)
        csv_mb = csv.stat().st_size / 1e6
        results = {}
        for case in cases:
            cmd = [sys.executable, __file__, "--case", case, "--csv", str(csv), "--workers", str(args.workers)]
            cmd += ["--rows", str(args.rows)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[case] = json.loads(out.strip().splitlines()[-1])
            print(f"{case}: {json.dumps(results[case])}", flush=True)
    text = table(results, args.rows, csv_mb, args.workers)
    print(text)
    if args.write_results:
        command = "python bench/manifest_scale.py " + " ".join(sys.argv[1:])
        machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}, torch {torch.__version__}"
        with open(args.write_results, "a", encoding="utf-8") as f:
            f.write(f"\n## Million-row manifests (`bench/manifest_scale.py`)\n\nCommand: `{command}` ({machine}; "
                    f"{time.strftime('%Y-%m-%d')})\n\n{text}\n")  # fmt: skip


if __name__ == "__main__":
    main()
