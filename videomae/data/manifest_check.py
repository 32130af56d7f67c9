"""``videomae manifest check``: everything in a manifest that would hurt a run, by line, and ``--fix``."""

from __future__ import annotations

import os

from videomae.data.images import is_image_path
from videomae.data.manifest import (
    Manifest,
    ManifestError,
    ManifestFormatError,
    ManifestRow,
    manifest_from_text,
    read_label_map,
    read_manifest_text,
)
from videomae.data.manifest_fix import write_fixed
from videomae.data.manifest_lines import line_content, split_lines
from videomae.data.manifest_probe import DEFAULT_FRAME_TEMPLATE, ProbeJob, ProbeResult, probe_all
from videomae.data.manifest_report import FIXABLE_KINDS, PROBLEM_KINDS, CheckReport, Problem

__all__ = ["check_manifest"]


def _read_tolerant(
    path: str, data_root: str | None, label_map: list[str] | None
) -> tuple[Manifest | None, list[Problem], list[str], list[str]]:
    """Read a manifest, blanking refused rows (so line numbers stay) until the rest reads cleanly.

    Every round blanks at least one more non-blank line or stops, so it ends after at most one round per line.

    Returns:
        The manifest (``None`` when the file itself is unusable: encoding, header, separator), the problems found,
        the file's physical lines and the same lines with the refused ones blanked.
    """
    problems: list[Problem] = []
    try:
        lines = split_lines(read_manifest_text(path))
    except ManifestFormatError as e:
        return None, [Problem(ln, "malformed", reason) for ln, reason in e.errors], [], []
    work = list(lines)
    while True:
        try:
            text = "".join(work).removeprefix("\ufeff")
            return manifest_from_text(path, text, data_root, label_map=label_map), problems, lines, work
        except ManifestFormatError as e:  # the file, not a row, is wrong
            if problems and e.errors == [(0, "no rows")]:  # every row was refused: a report, not an unreadable file
                return Manifest(rows=[], label_names=None, path=path, format="none"), problems, lines, work
            problems += [Problem(ln, "malformed", reason) for ln, reason in e.errors]
            return None, problems, lines, work
        except ManifestError as e:
            progress = False
            for ln, reason in e.errors:
                problems.append(Problem(ln, _row_problem_kind(reason), reason))
                if 0 < ln <= len(work) and line_content(work[ln - 1]).strip():
                    work[ln - 1] = work[ln - 1][len(line_content(work[ln - 1])) :]  # blank, keep the line ending
                    progress = True
            if not progress:
                problems.append(Problem(0, "malformed", "the rows above cannot be told apart; fix them first"))
                return None, problems, lines, work


def _row_problem_kind(reason: str) -> str:
    if reason.startswith("unknown class name") or "outside the label map" in reason:
        return "unknown_label"
    return "malformed"


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
            ``(num_frames - 1) * sampling_rate + 1`` (:func:`videomae.data.sampling.clip_span`), are too short
            (image rows never are: an image is repeated over the clip).
        label_map: label map file the labels must belong to (names known, ids in range).
        fix: write a copy without the unusable rows (duplicates keep their first occurrence; every row of a clip
            with conflicting labels goes) and with ``num_frames`` corrected where it is larger than what decodes.
        workers: probe processes (default: the CPU cores this process may use).
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
    parsed, problems, lines, work = _read_tolerant(path, root, names)
    if parsed is None:
        return CheckReport(path, 0, problems, fatal=True)
    rows = parsed.rows
    unique = _repeated_rows(rows, parsed.label_names, problems)

    jobs = [ProbeJob(r.path, frame_template, r.start, r.num_frames) for r in unique]
    results = probe_all(jobs, workers, progress, desc="checking", timeout=timeout)
    span = clip_span(num_frames, sampling_rate) if num_frames is not None else None
    for row, res in zip(unique, results):
        problems += _clip_problems(row, res, span)

    problems.sort(key=lambda p: (p.line, PROBLEM_KINDS.index(p.kind)))
    unparsed = {p.line for p in problems if p.kind in ("malformed", "unknown_label")}
    report = CheckReport(path, len(rows) + len(unparsed), problems)
    if fix is not None:
        drop = {p.line for p in problems if p.kind not in FIXABLE_KINDS}
        counts = {
            row.line: res.num_frames
            for row, res in zip(unique, results)
            if row.line not in drop and row.num_frames is not None and row.num_frames > res.num_frames
        }
        write_fixed(fix, lines, work, parsed.format, drop, counts)
        report.fixed = os.fspath(fix)
        report.kept = sum(r.line not in drop for r in rows)
        report.corrected = len(counts)
    return report


def _repeated_rows(rows: list[ManifestRow], names: list[str] | None, problems: list[Problem]) -> list[ManifestRow]:
    """Report rows of the same clip (path and start) and return each clip's first row.

    The same label again is a ``duplicate`` (the first row stays usable); different labels are
    ``conflicting_labels`` on every row of that clip, since nothing says which label is right.
    """
    clips: dict[tuple[str, int | None], list[ManifestRow]] = {}
    for row in rows:
        clips.setdefault((os.path.normpath(row.path), row.start), []).append(row)
    for group in clips.values():
        if len({r.label for r in group}) > 1:
            for r in group:
                others = "; ".join(f"line {o.line} says {_label(o.label, names)}" for o in group if o is not r)
                problems.append(
                    Problem(
                        r.line,
                        "conflicting_labels",
                        f"{r.path} is labelled {_label(r.label, names)} "
                        f"here but {others}: keep the row with the right label, delete the others",
                    )
                )
        else:
            problems += [Problem(r.line, "duplicate", f"{r.path} repeats line {group[0].line}") for r in group[1:]]
    return [group[0] for group in clips.values()]


def _label(label: int | None, names: list[str] | None) -> str:
    if label is None:
        return "nothing (unlabelled)"
    return repr(names[label]) if names is not None else str(label)


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
                f"{row.path}: the row declares num_frames={row.num_frames}, only {res.num_frames} decode"
                + (f" ({res.note})" if res.note else "")
                + "; --fix writes the decodable count",
            )
        )
    elif row.num_frames is not None:
        available = row.num_frames
    if span is not None and available < span and not is_image_path(row.path):  # an image repeats over the clip
        out.append(Problem(row.line, "too_short", f"{row.path}: {available} frames < the {span} a clip spans"))
    return out
