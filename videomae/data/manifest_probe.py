"""Probe clips for the manifest tools, in a pool of killable processes (:mod:`videomae.data.worker_pool`): video
files through :func:`videomae.data.decoding.probe_video`, frame folders frame by frame
(:mod:`videomae.data.frame_check`). A probe that runs past its timeout has its process killed and replaced, so a
file whose read blocks (a FIFO, a hung mount) or a decoder that hangs or crashes costs one clip, never the build."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from videomae.data.frame_check import check_frame_folder
from videomae.data.readers import DEFAULT_FRAME_TEMPLATE
from videomae.data.worker_pool import JobFailed, default_workers, map_unordered

__all__ = ["DEFAULT_FRAME_TEMPLATE", "ProbeJob", "ProbeResult", "probe_all", "probe_stream"]


@dataclass(frozen=True)
class ProbeJob:
    """One clip to probe: ``num_frames`` is the row's declared count (frame folders: the frames to check)."""

    path: str
    frame_template: str
    start: int | None
    num_frames: int | None = None


@dataclass(frozen=True)
class ProbeResult:
    """What a probe measured; ``error`` names what is wrong (``timed_out``: the probe was killed at the timeout),
    ``note`` says where a short count ends."""

    num_frames: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    error: str | None = None
    missing: bool = False
    note: str | None = None
    timed_out: bool = False


def _probe(job: ProbeJob) -> ProbeResult:
    from videomae.data.decoding import DecodeError, probe_video

    if not os.path.exists(job.path):
        return ProbeResult(error="file not found", missing=True)
    try:
        if os.path.isdir(job.path):
            check = check_frame_folder(job.path, job.frame_template, job.start, job.num_frames)
            note = f"{check.first_missing} is missing" if check.first_missing else None
            return ProbeResult(check.num_frames, 0.0, check.width, check.height, error=check.error, note=note)
        info = probe_video(job.path, job.frame_template, job.start)
    except DecodeError as e:
        return ProbeResult(error=e.reason)
    except Exception as e:  # a decoder bug must be reported for this file, not end the scan
        return ProbeResult(error=f"{type(e).__name__}: {e}")
    return ProbeResult(info.num_frames, info.fps, info.width, info.height)


def probe_stream(
    jobs: Sequence[ProbeJob], workers: int | None, timeout: float | None
) -> Iterator[tuple[int, ProbeResult]]:
    """Yield ``(index, result)`` for every job as its probe finishes, from ``workers`` processes (default: the
    cores this process may use). A probe past ``timeout`` seconds (``None`` or 0: no limit) is killed and yields
    an error with ``timed_out`` set; a prober that crashes yields an error for its clip."""
    import torchvision.io  # noqa: F401  (imported once here: forked workers inherit it instead of each paying)

    import videomae.data.decoding  # noqa: F401

    workers = default_workers() if workers is None else workers
    for index, result in map_unordered(_probe, jobs, workers, timeout or None):
        if isinstance(result, JobFailed):
            result = ProbeResult(error=result.reason, timed_out=result.timed_out)
        yield index, result


def probe_all(
    jobs: Sequence[ProbeJob], workers: int | None, progress: bool, desc: str, timeout: float | None
) -> list[ProbeResult]:
    """:func:`probe_stream`'s results in job order, with a progress bar."""
    from tqdm import tqdm

    results: list[ProbeResult | None] = [None] * len(jobs)
    with tqdm(total=len(jobs), desc=desc, unit="clip", disable=not progress) as bar:
        for index, result in probe_stream(jobs, workers, timeout):
            results[index] = result
            bar.update()
    return results  # type: ignore[return-value]  (every index is filled)
