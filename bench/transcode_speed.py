"""Decode speed before and after ``videomae manifest transcode``, against the original VideoMAE way, in one run.

Transcodes the real videos (default: short side 256, GOP 16, H.264, with and without ``fast_decode``), then times
training clips per CPU-second of one process (16 frames at stride 4, 224 crops, ``num_sample`` 1 and 4) for:

* *original way*: ``OriginalStyleDataset`` of bench/data_throughput.py (decord per sample, PIL per frame, the
  original multi-scale crop) on the original files: the baseline every ratio divides by;
* *ours*: our ``HybridVideoDataset`` (``auto`` backend = PyAV) on the original files and on each transcoded set.

Every pipeline reads the same videos, ``--passes`` random clips each, best of ``--repeats`` (interleaved).

    python bench/transcode_speed.py --write-results bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_throughput import REAL_VIDEOS, OriginalStyleDataset  # noqa: E402

from videomae.data.decode_speed import clips_per_cpu_second  # noqa: E402
from videomae.data.manifest import read_manifest  # noqa: E402
from videomae.data.transcode import TranscodeOptions  # noqa: E402
from videomae.data.transcode_manifest import transcode_manifest  # noqa: E402

SECTION = "## Decode speed after `videomae manifest transcode` (`bench/transcode_speed.py`)"


def _baseline_rate(rows, num_sample: int, passes: int) -> float:
    dataset = OriginalStyleDataset(rows, 16, 4, 224, num_sample)
    dataset[0]  # warm-up
    began = time.process_time()
    for _ in range(passes):
        for i in range(len(dataset)):
            dataset[i]
    return passes * len(dataset) * num_sample / (time.process_time() - began)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--videos",
        type=Path,
        default=Path(os.environ.get("VIDEOMAE_REAL_VIDEOS", REAL_VIDEOS)),
        help="folder of videos (default: $VIDEOMAE_REAL_VIDEOS, else shared/data/real_videos beside the repository)",
    )
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--gop", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="transcoding processes")
    p.add_argument("--num-sample", type=int, nargs="+", default=[1, 4])
    p.add_argument("--passes", type=int, default=4, help="clips timed per video and pipeline")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--write-results", type=Path, default=None, help="append (or replace) the section in this file")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    random.seed(0)
    torch.manual_seed(0)

    videos = sorted(v for v in args.videos.iterdir() if v.suffix.lower() in (".avi", ".mp4", ".mkv", ".webm"))
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "videos.csv"
        manifest.write_text("path\n" + "".join(f"{v}\n" for v in videos))
        sets = {"original files": read_manifest(manifest).rows}
        for fast in (True, False):
            options = TranscodeOptions(short_side=args.short_side, gop=args.gop, fast_decode=fast)
            out = Path(tmp) / f"fast{int(fast)}"
            began = time.perf_counter()
            result = transcode_manifest(manifest, out, options, workers=args.workers, progress=False)
            assert not result.failures, result.failures
            name = f"transcoded, short side {args.short_side}, GOP {args.gop}, H.264" + (" fastdecode" if fast else "")
            print(f"{name}: {time.perf_counter() - began:.1f} s to transcode", flush=True)
            sets[name] = [replace(r, path=os.path.abspath(r.path)) for r in read_manifest(result.manifest, out).rows]
        results = []
        for num_sample in args.num_sample:
            best = {"original way (decord, PIL), original files": 0.0} | dict.fromkeys(sets, 0.0)
            for _ in range(args.repeats):  # interleaved, so load changes on the shared machine hit all alike
                key = "original way (decord, PIL), original files"
                best[key] = max(best[key], _baseline_rate(sets["original files"], num_sample, args.passes))
                for name, rows in sets.items():
                    rate = clips_per_cpu_second(rows, num_sample=num_sample, passes=args.passes)
                    best[name] = max(best[name], rate)
            base = best["original way (decord, PIL), original files"]
            for name, rate in best.items():
                results.append((num_sample, name, rate, rate / base, rate / best["original files"]))
                print(
                    f"S={num_sample} {name:60s} {rate:6.1f} clips/CPU-s  {rate / base:5.2f}x original way  "
                    f"{rate / best['original files']:5.2f}x ours before",
                    flush=True,
                )

    command = "python " + " ".join(["bench/transcode_speed.py"] + (argv if argv is not None else sys.argv[1:]))
    lines = [
        SECTION,
        "",
        f"Videos: {', '.join(v.name for v in videos)} (the real videos here; the issue's two 640x480 H.264 files are "
        "not on this machine). One process, `torch.set_num_threads(1)`, training clips of 16 frames at stride 4 with "
        "224 crops; *clips per CPU-second* = clips (S per decoded video) / CPU time of the process; best of the "
        "repeats. *Original way*: the original VideoMAE (V2) data path as re-implemented in "
        "`bench/data_throughput.py` (decord per sample, PIL per frame), timed in the same run on the original files.",
        "",
        f"Command: `{command}` (under `flock /tmp/heavy.lock` on the shared 2-core machine)",
        "",
        "| S | pipeline and files | clips per CPU-s | vs original way | vs ours before |",
        "| --- | --- | --- | --- | --- |",
    ]
    for num_sample, name, rate, vs_base, vs_before in results:
        pipeline = name if name.startswith("original way") else f"ours (auto = PyAV), {name}"
        lines.append(f"| {num_sample} | {pipeline} | {rate:.1f} | **{vs_base:.2f}x** | {vs_before:.2f}x |")
    section = "\n".join(lines) + "\n"
    print("\n" + section)
    if args.write_results is not None:
        text = args.write_results.read_text()
        start = text.find(SECTION)
        if start >= 0:
            end = text.find("\n## ", start + 1)
            text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
        else:
            text = text.rstrip("\n") + "\n\n" + section
        args.write_results.write_text(text)
        print(f"wrote {args.write_results}")


if __name__ == "__main__":
    main()
