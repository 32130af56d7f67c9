"""The checks behind ``videomae doctor``, each run on every rank: collectives with known answers, the shared output
folder, a timed decode of sample rows per manifest; and the pure parts: the throughput verdict, the merge of every
rank's rows, the table.
"""

from __future__ import annotations

import math
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from videomae.data.sampler import source_quotas
from videomae.engine import dist
from videomae.engine.dist import all_gather_objects
from videomae.launching.collectives_check import check_collectives

__all__ = [
    "FAIL",
    "PASS",
    "WARN",
    "CheckResult",
    "ManifestSample",
    "check_shared_folder",
    "collective_rows",
    "data_rows",
    "decode_sample",
    "format_table",
    "merge_ranks",
    "sample_positions",
    "throughput_verdict",
]

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
_SEVERITY = {PASS: 0, WARN: 1, FAIL: 2}
HEADROOM = 1.25
"""A worker must decode this many times what the model consumes to call the run model-bound: decode times vary
from clip to clip, and a loader that only just keeps up still makes the step wait now and then."""


@dataclass
class CheckResult:
    """One row of the doctor's table."""

    check: str
    status: str
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)
    """Numbers behind the detail, for ``doctor.json``."""


def hostname() -> str:
    """This machine's short name (for messages naming a rank)."""
    return socket.gethostname().split(".")[0]


# ---------------------------------------------------------------------------------------------------- collectives


def collective_rows(env: dist.DistEnv, device: torch.device, dtype: torch.dtype, elements: int) -> list[CheckResult]:
    """Every collective helper the run calls, with known answers (:mod:`videomae.launching.collectives_check`), and
    the accelerator's data plane: a gradient-bucket-sized sum on ``device`` in ``dtype`` (what DeepSpeed's gradient
    reduction does), with its bus bandwidth. A collective that raises is a FAIL naming the error."""
    rows = [CheckResult(f"collective {c.name}", PASS if c.ok else FAIL, c.detail) for c in check_collectives(device)]
    name = f"collective all_reduce {_dtype_name(dtype)} on {device.type}"
    if device.type == "cuda" and torch.cuda.device_count() < env.local_world_size:
        rows.append(CheckResult(name, WARN, f"skipped: {env.local_world_size} ranks share "
                                f"{torch.cuda.device_count()} GPU(s), NCCL needs one each"))  # fmt: skip
        return rows
    try:
        rows.append(_bucket_sum(name, env.world_size, device, dtype, elements))
    except RuntimeError as err:
        rows.append(CheckResult(name, FAIL, f"{type(err).__name__}: {err}"))
    return rows


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _bucket_sum(name: str, world: int, device: torch.device, dtype: torch.dtype, elements: int) -> CheckResult:
    ones = torch.ones(elements, dtype=dtype, device=device)
    dist.sum_across_ranks(ones[:1024]).sum().item()  # creates communicators, waits for the device: not timed
    start = time.perf_counter()
    low, high = (v.item() for v in dist.sum_across_ranks(ones).aminmax())  # .item() waits for the device
    seconds = time.perf_counter() - start
    # Summing ones in bf16/fp16 is exact up to 256/2048 ranks; allow rounding beyond that.
    want, tolerance = float(world), 0.0 if dtype == torch.float32 else 0.01 * world
    if abs(low - want) > tolerance or abs(high - want) > tolerance:
        return CheckResult(name, FAIL, f"a sum of ones gave values in [{low}, {high}], expected {want}")
    size = elements * ones.element_size()
    bus = size * 2 * (world - 1) / world / seconds if world > 1 else 0.0  # ring all-reduce traffic per rank
    detail = f"{size / 2**20:.0f} MiB in {seconds * 1e3:.1f} ms" + (f", {bus / 1e9:.2f} GB/s bus" if world > 1 else "")
    return CheckResult(name, PASS, detail, {"bytes": size, "seconds": seconds, "bus_bytes_per_s": bus})


# ---------------------------------------------------------------------------------------------------- shared folder


def check_shared_folder(folder: Path, env: dist.DistEnv) -> CheckResult:
    """Rank 0 writes a file with a random token into ``folder``; every rank must read the same token back (a run
    writes each checkpoint from every rank into one folder, so ``output_dir`` must be shared by all nodes)."""
    path = folder / "shared_folder_check.txt"
    sent: tuple[str, str | None] = ("", None)
    if env.rank == 0:
        token = f"{secrets.token_hex(16)} written by rank 0 on {hostname()}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(token)
            sent = (token, None)
        except OSError as err:
            sent = ("", f"rank 0 cannot write {path}: {err}")
    token, error = dist.broadcast_object(sent)
    if error is None:
        try:
            seen = path.read_text()
            error = None if seen == token else f"reads {seen!r} instead of rank 0's token"
        except OSError as err:
            error = f"cannot read {path}: {err.strerror or err}"
    outcomes = all_gather_objects((hostname(), error))
    dist.barrier()
    if env.rank == 0 and token:
        path.unlink(missing_ok=True)
    nodes = len({host for host, _ in outcomes})
    failed = [(rank, host, err) for rank, (host, err) in enumerate(outcomes) if err is not None]
    if not failed:
        return CheckResult("shared output_dir", PASS, f"{env.world_size} ranks on {nodes} node(s) read rank 0's file")
    rank, host, err = failed[0]
    more = f" (and {len(failed) - 1} more ranks)" if len(failed) > 1 else ""
    return CheckResult(
        "shared output_dir", FAIL,
        f"rank {rank} on {host}: {err}{more}; output_dir must be one folder shared by every node",
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------- data


@dataclass
class ManifestSample:
    """What decoding sample rows of one manifest showed on one rank."""

    manifest: str
    share: float
    """Fraction of an epoch's draws that come from this manifest."""
    rows: int = 0
    clips: int = 0
    """Clips made from the readable rows (``num_sample`` per row in training)."""
    seconds: float = 0.0
    """Decode + transform time of the readable rows."""
    failures: list[tuple[int, str, str]] = field(default_factory=list)
    """``(line, path, reason)`` of each unreadable row."""


def sample_positions(size: int, count: int, rank: int, world: int) -> list[int]:
    """Rows of a ``size``-row manifest this rank decodes: ``count x world`` positions spread evenly over the
    manifest (every row when it is shorter), dealt out to the ranks so they read different rows."""
    total = min(size, count * world)
    return [(j * size) // total for j in range(total)][rank::world]


def decode_sample(dataset: Any, count: int, rank: int, world: int) -> list[ManifestSample]:
    """Decode and transform sample rows of every manifest of ``dataset`` as the run's loader does, timing each;
    unreadable rows are recorded, never replaced."""
    quotas = source_quotas(dataset.source_sizes, dataset.source_weights, dataset.source_repeats)
    samples = []
    for k, (size, offset) in enumerate(zip(dataset.source_sizes, dataset.source_offsets)):
        name = dataset.row(offset).manifest if size else str(dataset.sources[k].manifest)
        sample = ManifestSample(name, quotas[k] / max(sum(quotas), 1))
        for j in sample_positions(size, count, rank, world):
            row, start = dataset.row(offset + j), time.perf_counter()
            sample.rows += 1
            try:
                video = dataset.load_clip(offset + j)  # (C, T, H, W) or (S, C, T, H, W)
            except Exception as err:  # a doctor reports every failure, whatever raised it
                reason = getattr(err, "reason", None) or f"{type(err).__name__}: {err}"
                sample.failures.append((row.line, row.path, str(reason)))
                continue
            sample.seconds += time.perf_counter() - start
            sample.clips += 1 if video.dim() == 4 else video.shape[0]
        samples.append(sample)
    return samples


def merge_samples(per_rank: list[list[ManifestSample]]) -> list[ManifestSample]:
    """One sample per manifest from every rank's."""
    merged = [ManifestSample(s.manifest, s.share) for s in per_rank[0]]
    for samples in per_rank:
        for total, s in zip(merged, samples):
            total.rows += s.rows
            total.clips += s.clips
            total.seconds += s.seconds
            total.failures += s.failures
    return merged


def data_rows(label: str, samples: list[ManifestSample], world: int) -> list[CheckResult]:
    """One row per manifest: FAIL naming unreadable rows (manifest, line, path, reason), else the decode rate."""
    rows = []
    for s in samples:
        name = f"{label} {Path(s.manifest).name}"
        rate = s.clips / s.seconds if s.seconds > 0 else None
        figures = {"manifest": s.manifest, "rows": s.rows, "unreadable": len(s.failures), "clips_per_s": rate}
        if s.failures:
            shown = "; ".join(f"{s.manifest}:{line} {path}: {reason}" for line, path, reason in s.failures[:3])
            more = f" (+{len(s.failures) - 3} more)" if len(s.failures) > 3 else ""
            detail = f"{len(s.failures)}/{s.rows} sampled rows unreadable: {shown}{more}"
            rows.append(CheckResult(name, FAIL, detail, figures))
        elif s.rows == 0:
            rows.append(CheckResult(name, FAIL, f"{s.manifest} has no rows", figures))
        else:
            detail = f"{s.rows} rows on {world} rank(s) decoded, {rate:.1f} clips/s per worker"
            rows.append(CheckResult(name, PASS, detail, figures))
    return rows


def worker_rate(samples: list[ManifestSample]) -> float | None:
    """Clips/s one loader worker delivers for the training mix (each manifest's time per clip weighted by its
    share of the draws); None when nothing was readable."""
    timed = [(s.share, s.seconds / s.clips) for s in samples if s.clips > 0]
    share = sum(w for w, _ in timed)
    if share <= 0:
        return None
    return share / sum(w * t for w, t in timed)


def throughput_verdict(
    worker_clips_per_s: float, step_s: float, clips_per_step: int, num_workers: int, cores_per_rank: int
) -> CheckResult:
    """Is the run data-bound or model-bound?

    Args:
        worker_clips_per_s: clips/s one loader worker decodes and transforms.
        step_s: one optimizer step's device time on the slowest rank.
        clips_per_step: clips one rank consumes per optimizer step (``batch_size x grad_accum x num_sample``).
        num_workers: ``data.num_workers`` (0: loading runs in the training process, between steps).
        cores_per_rank: CPU cores each rank's workers can use.
    """
    workers = max(num_workers, 1)
    need_per_rank = clips_per_step / step_s
    need = need_per_rank / workers
    ratio = worker_clips_per_s / need
    figures = {"worker_clips_per_s": worker_clips_per_s, "needed_clips_per_s_per_worker": need, "ratio": ratio,
               "step_s": step_s, "clips_per_step_per_rank": clips_per_step}  # fmt: skip
    facts = (
        f"a worker decodes {worker_clips_per_s:.1f} clips/s, the model step ({step_s:.3f} s for {clips_per_step} "
        f"clips per rank) needs {need:.1f} per worker with {num_workers} workers"
    )
    if ratio >= HEADROOM:
        return CheckResult("throughput", PASS, f"model-bound: {facts} ({ratio:.1f}x headroom)", figures)
    wanted = math.ceil(need_per_rank * HEADROOM / worker_clips_per_s)
    if wanted > cores_per_rank:
        advice = (
            f"more workers than the {cores_per_rank} cores per rank would be needed: decode cheaper clips "
            "(videomae manifest transcode --short-side ...) or raise data.num_sample"
        )
    else:
        advice = f"raise data.num_workers to {wanted}"
    if ratio >= 1.0:
        return CheckResult("throughput", WARN, f"barely model-bound: {facts}; {advice}", figures)
    return CheckResult("throughput", WARN, f"data-bound (the bottleneck is decoding): {facts}; {advice}", figures)


# ---------------------------------------------------------------------------------------------------- the table


def merge_ranks(per_rank: list[list[CheckResult]]) -> list[CheckResult]:
    """One row per check (in order of first appearance): the worst status over ranks, with rank 0's detail unless
    another rank did worse, whose detail is then shown with its rank."""
    merged: dict[str, CheckResult] = {}
    worst_ranks: dict[str, list[int]] = {}
    for rank, rows in enumerate(per_rank):
        for row in rows:
            best = merged.get(row.check)
            if best is None or _SEVERITY[row.status] > _SEVERITY[best.status]:
                merged[row.check] = row if rank == 0 else CheckResult(row.check, row.status, f"rank {rank}: "
                                                                      f"{row.detail}", row.figures)  # fmt: skip
                worst_ranks[row.check] = [rank]
            elif row.status == best.status and row.status != PASS and rank > 0:
                worst_ranks[row.check].append(rank)
    for check, ranks in worst_ranks.items():
        if len(ranks) > 1:
            row = merged[check]
            merged[check] = CheckResult(check, row.status, f"{row.detail} (ranks {_spans(ranks)})", row.figures)
    return list(merged.values())


def _spans(ranks: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2,5``."""
    spans, start = [], ranks[0]
    for prev, cur in zip(ranks, ranks[1:] + [-1]):
        if cur != prev + 1:
            spans.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    return ",".join(spans)


def format_table(rows: list[CheckResult]) -> str:
    """``check | status | detail`` lines and a count line."""
    width = max([len("check")] + [len(r.check) for r in rows])
    lines = [f"{'check':<{width}} | status | detail", f"{'-' * width}-+--------+-{'-' * 40}"]
    lines += [f"{r.check:<{width}} | {r.status:<6} | {r.detail}" for r in rows]
    counts = {status: sum(r.status == status for r in rows) for status in (PASS, WARN, FAIL)}
    lines.append(", ".join(f"{n} {status}" for status, n in counts.items()))
    return "\n".join(lines)
