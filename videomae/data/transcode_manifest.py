"""``videomae manifest transcode``: re-encode every video of a manifest in a process pool, write the new manifest.

The layout of the inputs (under their common folder) is mirrored in ``OUT_DIR``; a file listed on several rows is
encoded once. Each file is written under a temporary name and renamed when complete (see
:func:`~videomae.data.transcode.transcode_video`), so a rerun skips what is done; the options are recorded in
``OUT_DIR/transcode.json`` and a rerun with other options is refused (the folder would mix two encodings). A file
that fails is reported with its manifest line and left out of the new manifest; the others go on.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice

from videomae.data.decoding import DEFAULT_FRAME_TEMPLATE, DecodeError, probe_video
from videomae.data.manifest import ManifestRow, read_manifest, write_manifest
from videomae.data.transcode import CODECS, TranscodeError, TranscodeOptions, transcode_video

__all__ = ["OPTIONS_FILE", "TranscodeResult", "transcode_manifest"]

OPTIONS_FILE = "transcode.json"


@dataclass(frozen=True)
class _Job:
    src: str
    dst: str
    options: TranscodeOptions
    frame_template: str
    start: int | None
    fps: float | None


@dataclass(frozen=True)
class _Done:
    num_frames: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    error: str | None = None
    skipped: bool = False  # already transcoded by an earlier run


def _run_job(job: _Job) -> _Done:
    if not os.path.exists(job.src):
        return _Done(error="file not found")
    if os.path.exists(job.dst):
        try:
            info = probe_video(job.dst)
            return _Done(info.num_frames, info.fps, info.width, info.height, skipped=True)
        except DecodeError:
            pass  # not ours or damaged: encode it again
    try:
        return _Done(
            *transcode_video(
                job.src, job.dst, job.options, frame_template=job.frame_template, start=job.start, fps=job.fps
            )
        )
    except DecodeError as e:
        return _Done(error=e.reason)
    except Exception as e:  # an encoder or decoder error must fail this file, not the run
        return _Done(error=f"{type(e).__name__}: {e}")


@dataclass
class TranscodeResult:
    """What :func:`transcode_manifest` did.

    Attributes:
        manifest: the new manifest file (paths relative to ``out_dir``).
        rows: rows written to it.
        encoded, skipped: files encoded now / found complete from an earlier run.
        failures: ``(line, path, reason)`` of each input row left out.
    """

    manifest: str
    rows: int
    encoded: int
    skipped: int
    failures: list[tuple[int, str, str]] = field(default_factory=list)

    def summary(self, max_failures: int = 20) -> str:
        done = f"{self.encoded} files encoded, {self.skipped} already done"
        lines = [f"wrote {self.manifest}: {self.rows} rows; {done}" if self.rows else f"no row transcoded ({done})"]
        if self.failures:
            lines.append(f"{len(self.failures)} row(s) failed and were left out:")
            lines += [f"  line {line}: {path}: {reason}" for line, path, reason in self.failures[:max_failures]]
            if len(self.failures) > max_failures:
                lines.append(f"  ... and {len(self.failures) - max_failures} more")
        return "\n".join(lines)


def _destinations(sources: list[str], out_dir: str, ext: str) -> dict[str, str]:
    """Output file per source: its path under the sources' common folder, mirrored in ``out_dir``, with ``ext``.

    Two sources that would share a name (``a.avi``, ``a.mkv``) both keep their old extension (``a.avi.mp4``).
    """
    present = {s for s in sources if os.path.exists(s)} or set(sources)  # a missing file must not move the root
    common = os.path.commonpath([os.path.dirname(s) for s in present])
    # a missing file outside the common folder would land outside out_dir: it keeps only its name
    rel = {s: os.path.relpath(s, common) if s in present else os.path.basename(s) for s in sources}
    plain = {s: os.path.splitext(r)[0] + ext for s, r in rel.items()}
    claimed: dict[str, int] = {}
    for name in plain.values():
        claimed[name] = claimed.get(name, 0) + 1
    out = {s: os.path.join(out_dir, plain[s] if claimed[plain[s]] == 1 else rel[s] + ext) for s in sources}
    clash = [s for s, d in out.items() if os.path.abspath(d) == os.path.abspath(s)]
    if clash:
        raise TranscodeError(f"{clash[0]} would be overwritten by its own output: choose another OUT_DIR")
    return out


def _check_options(out_dir: str, options: TranscodeOptions) -> None:
    """Record ``options`` in ``out_dir``; refuse a folder that holds files encoded with other options."""
    record = os.path.join(out_dir, OPTIONS_FILE)
    wanted = dataclasses.asdict(options)
    if os.path.exists(record):
        with open(record, encoding="utf-8") as f:
            before = json.load(f)
        if before != wanted:
            changed = sorted(k for k in wanted.keys() | before.keys() if before.get(k) != wanted.get(k))
            raise TranscodeError(
                f"{out_dir} holds files transcoded with other options ({', '.join(changed)}: "
                f"{[before.get(k) for k in changed]} there, {[wanted.get(k) for k in changed]} now); "
                "use another folder or the same options"
            )
        return
    os.makedirs(out_dir, exist_ok=True)
    with open(record, "w", encoding="utf-8") as f:
        json.dump(wanted, f, indent=1)


def _new_row(row: ManifestRow, dst: str, done: _Done, keep_count: bool) -> ManifestRow:
    """The row pointing at its transcoded file, with ``num_frames`` and the metadata columns it had updated.

    ``num_frames`` becomes the frames decodable from ``start``, or stays the row's own count where that is smaller
    and ``keep_count`` (same frame rate): a row may use fewer frames than the file holds.
    """
    start = None if os.path.isdir(row.path) else row.start  # a frame folder's video starts at its first frame
    num_frames = done.num_frames - (start or 0)
    if keep_count and row.num_frames is not None:
        num_frames = min(num_frames, row.num_frames)
    return dataclasses.replace(
        row,
        path=dst,
        start=start,
        num_frames=num_frames,
        fps=round(done.fps, 6) if row.fps is not None else None,
        width=done.width if row.width is not None else None,
        height=done.height if row.height is not None else None,
        duration=round(num_frames / done.fps, 6) if row.duration is not None and done.fps > 0 else None,
    )


def _map_jobs(jobs: list[_Job], workers: int) -> Iterator[_Done]:
    """Results in job order; ``workers`` <= 1 runs them in this process."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_run_job, jobs)
        return
    workers = min(workers, len(jobs))
    todo = iter(jobs)
    with ProcessPoolExecutor(max_workers=workers) as pool:  # a bounded window: not a million futures at once
        pending = deque(pool.submit(_run_job, job) for job in islice(todo, 4 * workers))
        while pending:
            done = pending.popleft().result()
            for job in islice(todo, 1):
                pending.append(pool.submit(_run_job, job))
            yield done


def transcode_manifest(
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: TranscodeOptions = TranscodeOptions(),
    *,
    data_root: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    frame_template: str = DEFAULT_FRAME_TEMPLATE,
    workers: int | None = None,
    progress: bool = True,
) -> TranscodeResult:
    """Re-encode every video of a manifest into ``out_dir`` and write the manifest of the new files.

    Args:
        manifest: input manifest (any format :func:`read_manifest` reads).
        out_dir: output folder; the files mirror the inputs' layout under their common folder.
        options: how to encode.
        data_root: prefix of the manifest's relative paths.
        output: new CSV manifest (default ``out_dir/<manifest name>.csv``); its paths are relative to ``out_dir``,
            which is the new ``data_root``. Columns are kept; paths, ``num_frames`` and the metadata columns the
            input has are updated.
        frame_template: file names in frame folders.
        workers: encoding processes (default: all CPU cores; 0 or 1: in this process).
        progress: show a progress bar.

    Returns:
        A :class:`TranscodeResult`; failed rows are listed there and left out of the new manifest.

    Raises:
        TranscodeError: ``out_dir`` holds files encoded with other options, an output would overwrite its input, or
            ``options.fps`` is set for rows that start mid-video.
        ManifestError: the manifest cannot be read.
    """
    from tqdm import tqdm

    out_dir = os.path.abspath(os.fspath(out_dir))
    if output is None:
        output = os.path.join(out_dir, os.path.splitext(os.path.basename(os.fspath(manifest)))[0] + ".csv")
    if os.path.abspath(output) == os.path.abspath(manifest):
        raise TranscodeError(f"the new manifest would overwrite {manifest}: pass another output")
    read = read_manifest(manifest, data_root)
    rows = [dataclasses.replace(r, path=os.path.abspath(r.path)) for r in read.rows]
    moved = [r for r in rows if options.fps is not None and r.start and not os.path.isdir(r.path)]
    if moved:
        raise TranscodeError(
            f"{read.path}:{moved[0].line}: fps={options.fps} would move the frames that 'start' counts "
            f"({len(moved)} row(s) start mid-video); transcode without --fps"
        )
    sources = list(dict.fromkeys(r.path for r in rows))  # a file listed on several rows is encoded once
    dst = _destinations(sources, out_dir, CODECS[options.codec][1])
    _check_options(out_dir, options)
    first_row: dict[str, ManifestRow] = {}
    for r in rows:
        first_row.setdefault(r.path, r)
    folder = {s: os.path.isdir(s) for s in sources}  # frame folders pass their start and rate to the encoder
    jobs = [
        _Job(
            s, dst[s], options, frame_template, *((first_row[s].start, first_row[s].fps) if folder[s] else (None, None))
        )
        for s in sources
    ]
    results: dict[str, _Done] = {}
    failed = 0
    with tqdm(total=len(jobs), desc="transcoding", unit="video", disable=not progress) as bar:
        for job, done in zip(jobs, _map_jobs(jobs, (os.cpu_count() or 1) if workers is None else workers)):
            results[job.src] = done
            failed += done.error is not None
            bar.update()
            bar.set_postfix(failed=failed, refresh=False)

    new_rows, failures = [], []
    for r in rows:
        done = results[r.path]
        if done.error is not None:
            failures.append((r.line, r.path, done.error))
            continue
        new = _new_row(r, dst[r.path], done, keep_count=options.fps is None)
        if new.num_frames < 1:
            failures.append((r.line, r.path, f"start={r.start} is past the {done.num_frames} decoded frames"))
        else:
            new_rows.append(new)
    if new_rows:
        write_manifest(new_rows, output, label_names=read.label_names, data_root=out_dir)
    done_list = [d for d in results.values() if d.error is None]
    return TranscodeResult(
        os.fspath(output),
        len(new_rows),
        sum(not d.skipped for d in done_list),
        sum(d.skipped for d in done_list),
        failures,
    )
