"""``videomae manifest check``: everything in a manifest that would hurt a run, by line, and ``--fix``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from videomae.data.manifest import Manifest, ManifestError, ManifestRow, read_label_map, read_manifest
from videomae.data.manifest_probe import DEFAULT_FRAME_TEMPLATE, ProbeJob, ProbeResult, probe_all
from videomae.data.manifest_report import PROBLEM_KINDS, CheckReport, Problem

__all__ = ["check_manifest"]


def _read_tolerant(
    path: str, data_root: str | None, label_map: list[str] | None
) -> tuple[Manifest | None, list[Problem], list[str]]:
    """Read a manifest, blanking bad rows (so line numbers stay) until the rest reads cleanly.

    Returns the manifest (``None`` when the file itself is unusable: header, encoding), the problems found and the
    original lines.
    """
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().splitlines(keepends=True)
    first = next((i + 1 for i, ln in enumerate(lines) if ln.strip()), 0)
    header = first if first and ("," in lines[first - 1] or "path" in lines[first - 1].lower()) else None
    problems: list[Problem] = []
    work = list(lines)
    fd, tmp_name = tempfile.mkstemp(suffix=Path(path).suffix, prefix="videomae-check-")
    os.close(fd)
    tmp = Path(tmp_name)
    current = path
    try:
        while True:
            try:
                return read_manifest(current, data_root, label_map=label_map), problems, lines
            except ManifestError as e:
                if any(ln <= 0 or ln == header for ln, _ in e.errors):  # the file, not a row, is wrong
                    problems += [Problem(ln, "malformed", reason) for ln, reason in e.errors]
                    return None, problems, lines
                for ln, reason in e.errors:
                    kind = "unknown_label" if ("class name" in reason or "label map" in reason) else "malformed"
                    problems.append(Problem(ln, kind, reason))
                    work[ln - 1] = "\n"  # a blank line: skipped by the reader, later lines keep their numbers
                tmp.write_text("".join(work), encoding="utf-8")
                current = os.fspath(tmp)
    finally:
        tmp.unlink(missing_ok=True)


def check_manifest(
    manifest: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None = None,
    num_frames: int | None = None,
    sampling_rate: int = 1,
    label_map: str | os.PathLike | None = None,
    fix: str | os.PathLike | None = None,
    workers: int | None = None,
    frame_template: str = DEFAULT_FRAME_TEMPLATE,
    timeout: float | None = 120.0,
    progress: bool = True,
) -> CheckReport:
    """Validate a manifest before a run.

    Args:
        manifest: CSV manifest or one of the original list formats.
        data_root: prefix joined to relative paths.
        num_frames, sampling_rate: the clip the run samples; clips with fewer decodable frames than the clip spans,
            ``(num_frames - 1) * sampling_rate + 1`` (:func:`videomae.data.sampling.clip_span`), are too short.
        label_map: label map file the labels must belong to (names known, ids in range).
        fix: write a copy without the rows that have problems (duplicates keep their first occurrence).
        workers: probe processes (default: all CPU cores).
        frame_template: names of the frame files in frame folders.
        timeout: seconds per probe before a clip counts as undecodable (hanging decoder).
        progress: show a progress bar.

    Returns:
        A :class:`CheckReport` (``exit_code``: 0 clean, 1 problems, 2 unreadable).
    """
    from videomae.data.sampling import clip_span

    path = os.fspath(manifest)
    if num_frames is not None and num_frames < 1 or sampling_rate < 1:
        raise ValueError(f"num_frames={num_frames}, sampling_rate={sampling_rate}: both must be >= 1")
    names = read_label_map(label_map) if label_map is not None else None
    root = os.fspath(data_root) if data_root is not None else None
    try:
        parsed, problems, lines = _read_tolerant(path, root, names)
    except (OSError, UnicodeDecodeError) as e:
        return CheckReport(path, 0, [Problem(0, "malformed", str(e))], fatal=True)
    if parsed is None:
        return CheckReport(path, 0, problems, fatal=True)
    rows = parsed.rows

    seen: dict[tuple[str, int | None], int] = {}
    unique: list[ManifestRow] = []
    for row in rows:
        key = (os.path.normpath(row.path), row.start)
        if key in seen:
            problems.append(Problem(row.line, "duplicate", f"{row.path} repeats line {seen[key]}"))
        else:
            seen[key] = row.line
            unique.append(row)

    jobs = [ProbeJob(r.path, frame_template, r.start, timeout) for r in unique]
    results = probe_all(jobs, workers, progress, desc="checking")
    span = clip_span(num_frames, sampling_rate) if num_frames is not None else None
    for row, res in zip(unique, results):
        problems += _clip_problems(row, res, span)

    problems.sort(key=lambda p: (p.line, PROBLEM_KINDS.index(p.kind)))
    unparsed = {p.line for p in problems if p.kind in ("malformed", "unknown_label")}
    report = CheckReport(path, len(rows) + len(unparsed), problems)
    if fix is not None:
        bad = set(report.bad_lines())
        kept = [ln for i, ln in enumerate(lines, 1) if i not in bad]
        with open(fix, "w", encoding="utf-8", newline="") as f:
            f.writelines(kept)
        report.fixed = os.fspath(fix)
        report.kept = len(rows) - len({r.line for r in rows} & bad)
    return report


def _clip_problems(row: ManifestRow, res: ProbeResult, span: int | None) -> list[Problem]:
    if res.missing:
        return [Problem(row.line, "missing", f"{row.path}: not found")]
    if res.error is not None:
        message = res.error if row.path in res.error else f"{row.path}: {res.error}"
        return [Problem(row.line, "undecodable", message)]
    out = []
    available = res.num_frames
    if row.num_frames is not None and row.num_frames > res.num_frames:
        out.append(
            Problem(
                row.line,
                "frame_count",
                f"{row.path}: the row declares num_frames={row.num_frames}, only {res.num_frames} decode",
            )
        )
    elif row.num_frames is not None:
        available = row.num_frames
    if span is not None and available < span:
        out.append(Problem(row.line, "too_short", f"{row.path}: {available} frames < the {span} a clip spans"))
    return out
