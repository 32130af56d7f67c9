"""Probe clips for the manifest tools, in a process pool, with a timeout: video files through
:func:`videomae.data.decoding.probe_video`, frame folders frame by frame (:mod:`videomae.data.frame_check`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from videomae.data.frame_check import check_frame_folder

__all__ = ["DEFAULT_FRAME_TEMPLATE", "ProbeJob", "ProbeResult", "probe_all"]

DEFAULT_FRAME_TEMPLATE = "img_{:05d}.jpg"


@dataclass(frozen=True)
class ProbeJob:
    """One clip to probe: ``num_frames`` is the row's declared count (frame folders: the frames to check)."""

    path: str
    frame_template: str
    start: int | None
    timeout: float | None
    num_frames: int | None = None


@dataclass(frozen=True)
class ProbeResult:
    """What a probe measured; ``error`` names what is wrong, ``note`` says where a short count ends."""

    num_frames: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    error: str | None = None
    missing: bool = False
    note: str | None = None


def _probe(job: ProbeJob) -> ProbeResult:
    from videomae.data.decoding import DecodeError, probe_video, run_with_timeout

    if not os.path.exists(job.path):
        return ProbeResult(error="file not found", missing=True)
    try:
        if os.path.isdir(job.path):
            check = run_with_timeout(
                lambda: check_frame_folder(job.path, job.frame_template, job.start, job.num_frames),
                job.timeout,
                job.path,
            )
            note = f"{check.first_missing} is missing" if check.first_missing else None
            return ProbeResult(check.num_frames, 0.0, check.width, check.height, error=check.error, note=note)
        info = probe_video(job.path, job.frame_template, job.start, timeout=job.timeout)
    except DecodeError as e:
        return ProbeResult(error=e.reason)
    except Exception as e:  # a decoder bug must be reported for this file, not end the scan
        return ProbeResult(error=f"{type(e).__name__}: {e}")
    return ProbeResult(info.num_frames, info.fps, info.width, info.height)


def probe_all(jobs: Sequence[ProbeJob], workers: int | None, progress: bool, desc: str) -> list[ProbeResult]:
    """Probe every job, in order; ``workers`` <= 1 probes in this process."""
    import torchvision.io  # noqa: F401  (imported once here: forked workers inherit it instead of each paying)
    from tqdm import tqdm

    import videomae.data.decoding  # noqa: F401

    workers = os.cpu_count() or 1 if workers is None else workers
    bar = tqdm(total=len(jobs), desc=desc, unit="clip", disable=not progress)
    results: list[ProbeResult] = []
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            results.append(_probe(job))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            for result in pool.map(_probe, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers)))):
                results.append(result)
                bar.update()
    bar.close()
    return results
