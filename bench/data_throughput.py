"""Pretraining data throughput: our pipeline against the original VideoMAE way, timed in the same run.

Ours: ``HybridVideoDataset`` (decoder opened in the worker, only the sampled frames decoded, one crop + one
antialiased ``F.interpolate`` + one normalisation on the whole uint8 clip) in a ``DataLoader``.

Baseline (written here, the way the original VideoMAE pretraining dataset does it): a decord ``VideoReader`` per
sample (frame folders: one PIL ``Image.open`` per frame), the original random-offset clip sampling,
``get_batch().asnumpy()``, a PIL image per frame, ``GroupMultiScaleCrop`` as per-frame PIL crop + bilinear
resize, ``Stack`` (numpy concatenation), ``ToTorchFormatTensor`` and a per-plane ``GroupNormalize``.

Repeated sampling (``--num-sample S``, default 4 as the published pretraining recipe, then 1): both decode each
video once and augment it S times (the baseline converts the frames to PIL once, then crops per sample, as the
original), and every rate counts clips (S per video).

Both run the same videos in the same order, through the same ``DataLoader`` settings, with no flip (the original
pretraining used none). Reported: clips/s in total and per worker, after warm-up batches, best of ``--repeats``.

    python bench/data_throughput.py                      # real videos + the demo set (generated if needed)
    python bench/data_throughput.py --workers 1 2 --write-results bench/RESULTS.md
    python bench/data_throughput.py --num-sample 4 --backend auto pyav   # also time our PyAV reader
    python bench/data_throughput.py --manifest my.csv --data-root /data --input-size 224 --sampling-rate 4
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from videomae.data import HybridVideoDataset, SourceSpec, collate_clips
from videomae.data.manifest import ManifestRow, read_manifest
from videomae.data.readers import DEFAULT_FRAME_TEMPLATE

REPO = Path(__file__).resolve().parents[1]
REAL_VIDEOS = REPO.parent / "shared" / "data" / "real_videos"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------------------------
# the baseline: the original VideoMAE pretraining data path, re-implemented for timing


class OriginalMultiScaleCrop:
    """``GroupMultiScaleCrop`` of the original (TSN): a scale pair and one of 13 fixed offsets, per-frame PIL."""

    def __init__(self, input_size: int, scales=(1, 0.875, 0.75, 0.66), max_distort: int = 1):
        self.input_size, self.scales, self.max_distort = input_size, scales, max_distort

    def __call__(self, images: list) -> list:
        from PIL import Image

        w, h = images[0].size
        cw, ch, ow, oh = self._sample_crop(w, h)
        cropped = [img.crop((ow, oh, ow + cw, oh + ch)) for img in images]
        return [img.resize((self.input_size, self.input_size), Image.BILINEAR) for img in cropped]

    def _sample_crop(self, w: int, h: int) -> tuple[int, int, int, int]:
        base = min(w, h)
        sizes = [int(base * s) for s in self.scales]
        crop_h = [self.input_size if abs(x - self.input_size) < 3 else x for x in sizes]
        crop_w = crop_h
        pairs = [
            (cw, chh) for i, chh in enumerate(crop_h) for j, cw in enumerate(crop_w) if abs(i - j) <= self.max_distort
        ]
        cw, ch = random.choice(pairs)
        ws, hs = (w - cw) // 4, (h - ch) // 4
        offsets = [
            (0, 0),
            (4 * ws, 0),
            (0, 4 * hs),
            (4 * ws, 4 * hs),
            (2 * ws, 2 * hs),
            (0, 2 * hs),
            (4 * ws, 2 * hs),
            (2 * ws, 4 * hs),
            (2 * ws, 0),
            (ws, hs),
            (3 * ws, hs),
            (ws, 3 * hs),
            (3 * ws, 3 * hs),
        ]
        ow, oh = random.choice(offsets)
        return cw, ch, ow, oh


class OriginalStyleDataset(Dataset):
    """Items loaded and augmented the way the original VideoMAE (V2) pretraining dataset does: the video decoded
    once into PIL images, then ``num_sample`` times multi-scale crop + ``Stack`` + ``ToTorchFormatTensor`` +
    ``GroupNormalize``; the item is the list of the ``num_sample`` clips (flattened by :func:`collate_original`)."""

    def __init__(
        self,
        rows: list[ManifestRow],
        num_frames: int,
        sampling_rate: int,
        input_size: int,
        num_sample: int = 1,
        frame_template: str = DEFAULT_FRAME_TEMPLATE,
    ):
        self.rows, self.num_frames, self.rate = rows, num_frames, sampling_rate
        self.num_sample = num_sample
        self.template = frame_template
        self.crop = OriginalMultiScaleCrop(input_size)

    def __len__(self) -> int:
        return len(self.rows)

    def _indices(self, duration: int) -> list[int]:
        skip = self.num_frames * self.rate  # the original's `skip_length = new_length * new_step`
        average = duration - skip + 1
        offset = random.randint(0, average - 1) if average > 0 else 0
        return [min(offset + k * self.rate, duration - 1) for k in range(self.num_frames)]

    def __getitem__(self, index: int) -> dict:
        from PIL import Image

        row = self.rows[index]
        if os.path.isdir(row.path):
            start = 1 if row.start is None else row.start
            duration = row.num_frames or len(os.listdir(row.path))
            images = [
                Image.open(os.path.join(row.path, self.template.format(i + start))).convert("RGB")
                for i in self._indices(duration)
            ]
        else:
            import decord

            vr = decord.VideoReader(row.path, num_threads=1, ctx=decord.cpu(0))
            frames = vr.get_batch(self._indices(len(vr))).asnumpy()
            images = [Image.fromarray(frames[k]).convert("RGB") for k in range(self.num_frames)]
        return {"video": [self._augment(images) for _ in range(self.num_sample)], "label": -1, "index": index}

    def _augment(self, images: list) -> torch.Tensor:
        images = self.crop(images)
        stacked = np.concatenate([np.array(img) for img in images], axis=2)  # Stack: (H, W, 3T)
        tensor = torch.from_numpy(stacked).permute(2, 0, 1).contiguous().float().div(255)  # (3T, H, W)
        for plane, m, s in zip(tensor, MEAN * self.num_frames, STD * self.num_frames):  # GroupNormalize
            plane.sub_(m).div_(s)
        return tensor.view(self.num_frames, 3, *tensor.shape[1:]).transpose(0, 1)  # (C, T, H, W)


def collate_original(batch: list[dict]) -> dict:
    """The original's ``multiple_pretrain_samples_collate``: flatten the repeated samples, then one stacking copy
    (into shared memory inside a worker, as ``default_collate``)."""
    return collate_clips(
        [{"video": clip, "label": b["label"], "index": b["index"]} for b in batch for clip in b["video"]]
    )


# --------------------------------------------------------------------------------------------------------------
# timing


@dataclass
class Workload:
    name: str
    manifest: str
    data_root: str | None
    input_size: int
    num_frames: int
    sampling_rate: int


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes (Linux ``/proc``); 0 where unavailable."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def _time_loader(
    dataset: Dataset, collate, workers: int, batch_size: int, batches: int, warmup: int, seed: int
) -> tuple[float, float]:
    """Clips per wall second and clips per worker CPU second, over ``batches`` batches after ``warmup``.

    The CPU figure is what one worker delivers on a core of its own, whatever else runs on the machine. Every
    pipeline gets the same video order; clips are counted (``num_sample`` per video).
    """
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    need = (batches + warmup) * batch_size
    order = (order * (need // len(order) + 1))[:need]
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=order,
        num_workers=workers,
        collate_fn=collate,
        prefetch_factor=2 if workers else None,
        worker_init_fn=_seed_worker,
    )
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    pids = [w.pid for w in getattr(it, "_workers", [])] or [os.getpid()]
    cpu0, began = _cpu_seconds(pids), time.perf_counter()
    clips = 0
    for _ in range(batches):
        clips += next(it)["video"].shape[0]
    elapsed, cpu = time.perf_counter() - began, _cpu_seconds(pids) - cpu0
    del it
    return clips / elapsed, clips / cpu if cpu > 0 else float("nan")


def _seed_worker(worker_id: int) -> None:
    random.seed(torch.initial_seed() % 2**32)


def _real_workload(tmp: Path, rows_per_video: int) -> Workload:
    videos = sorted(p for p in REAL_VIDEOS.glob("*") if p.suffix.lower() in (".avi", ".mp4", ".mkv", ".webm"))
    if not videos:
        raise SystemExit(f"no videos in {REAL_VIDEOS}; pass --manifest")
    manifest = tmp / "real.csv"
    manifest.write_text("path\n" + "".join(f"{v}\n" for v in videos) * rows_per_video)
    return Workload("real videos (" + ", ".join(v.name for v in videos) + ")", str(manifest), None, 224, 16, 4)


def _demo_workloads(demo_root: Path | None, tmp: Path) -> list[Workload]:
    if demo_root is None:
        from videomae.data.demo import write_demo_dataset

        demo_root = tmp / "demo"
        print(f"generating the demo set in {demo_root} ...", flush=True)
        write_demo_dataset(demo_root)
    return [
        Workload("demo set, H.264 files", str(demo_root / "train_unlabeled.csv"), str(demo_root), 64, 16, 2),
        Workload(
            "demo set, JPEG frame folders", str(demo_root / "train_unlabeled_frames.csv"), str(demo_root), 64, 16, 2
        ),
    ]


def run(
    workloads: list[Workload],
    workers_list: list[int],
    num_samples: list[int],
    backends: list[str],
    batch_size: int,
    batches: int,
    warmup: int,
    repeats: int,
) -> list[dict]:
    results = []
    for w in workloads:
        rows = read_manifest(w.manifest, w.data_root).rows
        for num_sample in num_samples:
            pipelines = {
                "baseline": (
                    OriginalStyleDataset(rows, w.num_frames, w.sampling_rate, w.input_size, num_sample),
                    collate_original,
                )
            }
            for backend in backends:
                pipelines[backend] = (
                    HybridVideoDataset(
                        [SourceSpec(w.manifest, data_root=w.data_root)],
                        num_frames=w.num_frames,
                        sampling_rate=w.sampling_rate,
                        input_size=w.input_size,
                        num_sample=num_sample,
                        hflip_prob=0.0,
                        backend=backend,
                    ),
                    collate_clips,
                )
            for workers in workers_list:
                wall = dict.fromkeys(pipelines, 0.0)
                cpu = dict.fromkeys(pipelines, 0.0)
                for r in range(repeats):  # interleaved, so load changes on a shared machine hit all alike
                    for name, (ds, collate) in pipelines.items():
                        rate, per_cpu = _time_loader(ds, collate, workers, batch_size, batches, warmup, seed=r)
                        wall[name], cpu[name] = max(wall[name], rate), max(cpu[name], per_cpu)
                for backend in backends:
                    result = {
                        "workload": w.name,
                        "workers": workers,
                        "num_sample": num_sample,
                        "backend": backend,
                        "input": f"{w.num_frames}x{w.input_size}px, rate {w.sampling_rate}",
                        "baseline": wall["baseline"],
                        "ours": wall[backend],
                        "ratio": wall[backend] / wall["baseline"],
                        "baseline_cpu": cpu["baseline"],
                        "ours_cpu": cpu[backend],
                        "ratio_cpu": cpu[backend] / cpu["baseline"],
                    }
                    results.append(result)
                    print(
                        f"{w.name[:34]:34s} S={num_sample} workers={workers} ours={backend:6s} clips/s: baseline "
                        f"{result['baseline']:6.1f}  ours {result['ours']:6.1f}  ({result['ratio']:.2f}x)   "
                        f"clips per worker CPU-second: baseline {result['baseline_cpu']:6.1f}  ours "
                        f"{result['ours_cpu']:6.1f}  ({result['ratio_cpu']:.2f}x)",
                        flush=True,
                    )
    return results


def markdown(results: list[dict], command: str) -> str:
    lines = [
        "## Data throughput",
        "",
        f"Machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), shared with other jobs; "
        f"torch {torch.__version__}, Python {platform.python_version()}. Pretraining pipeline (train transform, "
        "no flip), after warm-up, best of the repeats; baseline = the original VideoMAE (V2) way "
        "(decord per sample, PIL images, then per repeated sample a per-frame PIL multi-scale crop + resize, numpy "
        "stacking, ToTensor, normalize; flattening collate), timed in the same run on the same videos. "
        "*S* is `num_sample` (repeated sampling: each video decoded once and augmented S times, as the original; "
        "the published pretraining recipe uses 4): every figure counts **clips** (S per video), not videos. "
        "*ours* names our reader backend (`auto`: the default, PyAV since issue 15; decord before). "
        "*clips/s* is wall-clock throughput of the whole DataLoader; *clips per worker CPU-s* divides the clips by "
        "the CPU time the worker processes used, i.e. the rate of one worker on a core of its own. That per-worker "
        "ratio is the headline: this machine is shared by other jobs, which makes wall-clock rates swing.",
        "",
        f"Command: `{command}`",
        "",
        "| workload | clip | S | ours | workers | baseline clips/s | ours clips/s | ratio | baseline clips per "
        "worker CPU-s | ours clips per worker CPU-s | ratio per worker |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['workload']} | {r['input']} | {r['num_sample']} | {r['backend']} | {r['workers']} | "
            f"{r['baseline']:.1f} | {r['ours']:.1f} | {r['ratio']:.2f}x | {r['baseline_cpu']:.1f} | "
            f"{r['ours_cpu']:.1f} | **{r['ratio_cpu']:.2f}x** |"
        )
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace (or append) the ``## Data throughput`` section of a results file, leaving other sections alone."""
    text = path.read_text() if path.exists() else "# Benchmark results\n\n"
    start = text.find("## Data throughput")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", action="append", help="manifest(s) to time instead of the defaults")
    p.add_argument("--data-root", default=None, help="data_root of --manifest")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--num-frames", type=int, default=16)
    p.add_argument("--sampling-rate", type=int, default=4)
    p.add_argument("--demo-root", type=Path, default=None, help="existing demo set (default: generate one)")
    p.add_argument("--no-demo", action="store_true", help="skip the demo set workloads")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument(
        "--num-sample",
        type=int,
        nargs="+",
        default=[4, 1],
        help="repeated samples per decoded video (4: the pretraining recipe); clips are counted",
    )
    p.add_argument(
        "--backend",
        nargs="+",
        default=["auto"],
        choices=["auto", "decord", "pyav"],
        help="reader backend(s) of our pipeline (the baseline always uses decord)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="videos per batch (a batch holds S times as many clips)")
    p.add_argument("--batches", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--real-rows", type=int, default=16, help="rows per real video in the default manifest")
    p.add_argument("--write-results", type=Path, default=None, help="write the table into this RESULTS.md")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.manifest:
            workloads = [
                Workload(Path(m).name, m, args.data_root, args.input_size, args.num_frames, args.sampling_rate)
                for m in args.manifest
            ]
        else:
            workloads = [_real_workload(tmp, args.real_rows)]
            if not args.no_demo:
                workloads += _demo_workloads(args.demo_root, tmp)
        results = run(
            workloads,
            args.workers,
            args.num_sample,
            args.backend,
            args.batch_size,
            args.batches,
            args.warmup,
            args.repeats,
        )
    command = "python " + " ".join(
        [os.path.relpath(__file__, Path.cwd())] + (argv if argv is not None else sys.argv[1:])
    )
    table = markdown(results, command)
    print()
    print(table)
    if args.write_results is not None:
        write_section(args.write_results, table)
        print(f"wrote {args.write_results}")


if __name__ == "__main__":
    main()
