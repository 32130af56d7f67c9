"""Decode throughput: training clips per CPU-second through our reader, and the same rows before / after a transcode.

The measure is what one data-loader worker delivers on a core of its own: a training :class:`HybridVideoDataset`
(random clip, multi-scale crop, normalisation; a run's sampling, 16 frames at stride 4, 224 crops by default) read
item by item in this process, clips counted (``num_sample`` per video), divided by this process's CPU time
(``time.process_time``: all its threads), after one warm-up item.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from videomae.data.decoding import DEFAULT_FRAME_TEMPLATE
from videomae.data.manifest import ManifestRow, read_manifest, write_manifest

__all__ = ["SpeedComparison", "clips_per_cpu_second", "compare_transcoded"]


def clips_per_cpu_second(
    rows: Sequence[ManifestRow],
    *,
    num_frames: int = 16,
    sampling_rate: int = 4,
    input_size: int = 224,
    num_sample: int = 1,
    backend: str = "auto",
    passes: int = 1,
    frame_template: str = DEFAULT_FRAME_TEMPLATE,
    seed: int = 0,
) -> float:
    """Training clips per CPU-second of this process over ``rows`` (absolute paths), ``passes`` times each.

    Raises:
        ValueError: no rows.
    """
    from videomae.data.datasets import HybridVideoDataset, SourceSpec

    if not rows:
        raise ValueError("no rows to time")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = os.path.join(tmp, "sample.csv")
        write_manifest(rows, manifest)
        dataset = HybridVideoDataset(
            [SourceSpec(manifest)],
            num_frames=num_frames,
            sampling_rate=sampling_rate,
            input_size=input_size,
            num_sample=num_sample,
            hflip_prob=0.0,
            frame_template=frame_template,
            backend=backend,
            decode_timeout=None,
            seed=seed,
        )
        dataset[0]  # warm-up: imports, first allocations
        began = time.process_time()
        for _ in range(passes):
            for i in range(len(dataset)):
                dataset[i]
        return passes * len(dataset) * num_sample / (time.process_time() - began)


@dataclass(frozen=True)
class SpeedComparison:
    """Clips per CPU-second on the same rows before and after transcoding."""

    rows: int
    num_sample: int
    before: float
    after: float

    @property
    def ratio(self) -> float:
        return self.after / self.before

    def summary(self) -> str:
        return (
            f"decode speed on {self.rows} row(s), num_sample {self.num_sample}: {self.before:.1f} -> "
            f"{self.after:.1f} clips per CPU-second ({self.ratio:.2f}x)"
        )


def compare_transcoded(
    manifest: str | os.PathLike,
    new_manifest: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None = None,
    new_data_root: str | os.PathLike | None = None,
    failed_lines: Sequence[int] = (),
    sample: int = 8,
    num_sample: int = 1,
    passes: int = 1,
    **sampling,
) -> SpeedComparison:
    """Time ``sample`` rows (evenly spaced) of a manifest and the same rows of its transcoded copy.

    Args:
        manifest, data_root: the input manifest.
        new_manifest, new_data_root: what :func:`~videomae.data.transcode_manifest.transcode_manifest` wrote (its
            rows are the input's in order, less ``failed_lines``).
        failed_lines: input lines left out of the new manifest.
        sample: rows to time.
        num_sample, passes, sampling: passed to :func:`clips_per_cpu_second`.
    """
    failed = set(failed_lines)
    before_rows = [r for r in read_manifest(manifest, data_root).rows if r.line not in failed]
    after_rows = read_manifest(new_manifest, new_data_root).rows
    if len(before_rows) != len(after_rows):
        raise ValueError(f"{new_manifest} has {len(after_rows)} rows, expected {len(before_rows)}")
    n = min(sample, len(before_rows))
    picked = [round(k * (len(before_rows) - 1) / max(n - 1, 1)) for k in range(n)]

    def rate(rows: list[ManifestRow]) -> float:
        chosen = [rows[i] for i in picked]
        for r in chosen:
            r.path = os.path.abspath(r.path)
        return clips_per_cpu_second(chosen, num_sample=num_sample, passes=passes, **sampling)

    return SpeedComparison(n, num_sample, rate(before_rows), rate(after_rows))
