"""Manifest tools for data engineers: build a manifest from a folder, check one before a run, merge several.

* :func:`build_manifest` scans a folder for video files (by extension) and frame folders (folders of images named
  by a template), probes each clip in a process pool with :func:`videomae.data.decoding.probe_video` (decoded
  frame count, fps, size; never the container's header) and writes a CSV with paths relative to the folder.
* :func:`check_manifest` reports everything that would hurt a run, with the manifest line of each problem:
  malformed rows, unknown labels, duplicate rows, missing files, undecodable or empty clips, clips shorter than
  the span of ``num_frames`` frames ``sampling_rate`` apart, and rows that declare more frames than decode. It
  can write a cleaned copy.
* :func:`merge_manifests` merges labelled manifests into one label space by normalised class name (as
  Kinetics-710 is made from Kinetics-400/600/700) and writes the label map and one remap per input.

The formats are described in ``data_lists/SCHEMA.md``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from videomae.data.labels import normalize_class_name
from videomae.data.manifest import Manifest, ManifestError, ManifestRow, read_label_map, read_manifest, write_manifest

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "BuildResult",
    "CheckReport",
    "MergeResult",
    "Problem",
    "build_manifest",
    "check_manifest",
    "merge_manifests",
    "normalize_class_name",
    "scan_folder",
]

VIDEO_EXTENSIONS = ("mp4", "avi", "mkv", "webm", "mov", "m4v", "mpg", "mpeg", "flv", "wmv")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "webp")
DEFAULT_FRAME_TEMPLATE = "img_{:05d}.jpg"
PROBLEM_KINDS = ("malformed", "unknown_label", "duplicate", "missing", "undecodable", "frame_count", "too_short")


# --------------------------------------------------------------------------------------------------------------
# probing in a process pool


@dataclass(frozen=True)
class _ProbeJob:
    path: str
    frame_template: str
    start: int | None
    timeout: float | None


@dataclass(frozen=True)
class _ProbeResult:
    num_frames: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    error: str | None = None
    missing: bool = False


def _probe(job: _ProbeJob) -> _ProbeResult:
    from videomae.data.decoding import DecodeError, probe_video

    if not os.path.exists(job.path):
        return _ProbeResult(error="file not found", missing=True)
    try:
        info = probe_video(job.path, job.frame_template, job.start, timeout=job.timeout)
    except DecodeError as e:
        return _ProbeResult(error=e.reason)
    except Exception as e:  # a decoder bug must be reported for this file, not end the scan
        return _ProbeResult(error=f"{type(e).__name__}: {e}")
    return _ProbeResult(info.num_frames, info.fps, info.width, info.height)


def _probe_all(jobs: Sequence[_ProbeJob], workers: int | None, progress: bool, desc: str) -> list[_ProbeResult]:
    """Probe every job, in order; ``workers`` <= 1 probes in this process."""
    import torchvision.io  # noqa: F401  (imported once here: forked workers inherit it instead of each paying)
    from tqdm import tqdm

    import videomae.data.decoding  # noqa: F401

    workers = os.cpu_count() or 1 if workers is None else workers
    bar = tqdm(total=len(jobs), desc=desc, unit="clip", disable=not progress)
    results: list[_ProbeResult] = []
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


# --------------------------------------------------------------------------------------------------------------
# build


@dataclass(frozen=True)
class ScannedClip:
    """A clip found by :func:`scan_folder`: ``rel`` is relative to the scanned root (``/`` separators)."""

    rel: str
    is_folder: bool
    start: int | None = None


@dataclass
class BuildResult:
    """What :func:`build_manifest` wrote.

    Attributes:
        output: the manifest written.
        rows: the clips written, in file order (paths relative to the root).
        skipped: ``(relative path, reason)`` of every clip left out.
        label_names: class names when labels were written.
        unlabelled: relative paths that got no label although labels were requested.
    """

    output: str
    rows: list[ManifestRow]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    label_names: list[str] | None = None
    unlabelled: list[str] = field(default_factory=list)

    def summary(self, root: str) -> str:
        """A short human-readable report."""
        lines = [f"wrote {len(self.rows)} clips to {self.output}"
                 + (f" ({len(self.label_names)} classes)" if self.label_names else "")]
        for rel, reason in self.skipped:
            lines.append(f"  skipped {rel}: {reason}")
        if self.unlabelled:
            lines.append(f"  {len(self.unlabelled)} clips have no label, e.g. {self.unlabelled[0]}")
        lines.append(f"paths are relative to {root}: use it as data_root (--data-root {root})")
        return "\n".join(lines)


def _template_regex(template: str) -> re.Pattern[str]:
    """A regex matching the file names a ``str.format`` template with one integer field produces."""
    match = re.fullmatch(r"(.*?)\{[^{}]*\}(.*)", template)
    if match is None:
        raise ValueError(f"frame_template={template!r} must contain exactly one {{}} field, e.g. 'img_{{:05d}}.jpg'")
    return re.compile(re.escape(match.group(1)) + r"(\d+)" + re.escape(match.group(2)))


def scan_folder(root: str | os.PathLike, frame_template: str = DEFAULT_FRAME_TEMPLATE,
                extensions: Iterable[str] = VIDEO_EXTENSIONS) -> tuple[list[ScannedClip], list[tuple[str, str]]]:
    """Find video files and frame folders under ``root`` (hidden entries skipped, sorted by path).

    A frame folder is a directory holding image files; its ``start`` is the lowest index among the files named
    by ``frame_template``. Returns the clips and ``(relative path, reason)`` for image folders whose files do
    not match the template.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise NotADirectoryError(f"{root} is not a folder")
    pattern = _template_regex(frame_template)
    video_ext = {e.lower().lstrip(".") for e in extensions}
    clips: list[ScannedClip] = []
    skipped: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        prefix = "" if rel_dir == "." else rel_dir + "/"
        images = []
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
            if ext in video_ext:
                clips.append(ScannedClip(prefix + name, False))
            elif ext in IMAGE_EXTENSIONS:
                images.append(name)
        if images and rel_dir != ".":
            indices = [int(m.group(1)) for m in map(pattern.fullmatch, images)
                       if m and frame_template.format(int(m.group(1))) == m.group(0)]
            if indices:
                clips.append(ScannedClip(rel_dir, True, min(indices)))
            else:
                skipped.append((rel_dir, f"{len(images)} images, none named like {frame_template!r} "
                                         "(set --frame-template)"))
    clips.sort(key=lambda c: c.rel)
    return clips, skipped


def _read_path_label_map(path: str) -> dict[str, str]:
    """A clip -> label mapping: JSON object, or CSV with a ``label`` column and a ``path`` (or ``name``) column."""
    text = Path(path).read_text(encoding="utf-8")
    if path.lower().endswith(".json"):
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object {{clip: label}}, got {type(data).__name__}")
        return {str(k): str(v) for k, v in data.items()}
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip().lower() for c in reader.fieldnames or []]
    key = "path" if "path" in columns else "name" if "name" in columns else None
    if key is None or "label" not in columns:
        raise ValueError(f"{path}: a label mapping CSV needs a 'label' column and a 'path' or 'name' column "
                         f"(found: {', '.join(columns) or 'no header'})")
    mapping = {}
    for row in reader:
        row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
        mapping[row[key]] = row["label"]
    return mapping


def _lookup_label(mapping: dict[str, str], rel: str) -> str | None:
    base = rel.rsplit("/", 1)[-1]
    for key in (rel, os.path.splitext(rel)[0], base, os.path.splitext(base)[0]):
        if key in mapping:
            return mapping[key]
    return None


def build_manifest(
    root: str | os.PathLike,
    output: str | os.PathLike,
    *,
    labels_from_subfolders: bool = False,
    label_map: str | os.PathLike | None = None,
    workers: int | None = None,
    frame_template: str = DEFAULT_FRAME_TEMPLATE,
    extensions: Iterable[str] | None = None,
    timeout: float | None = 120.0,
    progress: bool = True,
) -> BuildResult:
    """Scan ``root``, probe every clip in parallel and write a CSV manifest with paths relative to ``root``.

    Args:
        root: folder to scan (recursively).
        output: CSV file to write.
        labels_from_subfolders: label = first path component under ``root`` (``root/<class>/clip.mp4``).
        label_map: a clip -> label mapping (JSON object or CSV ``path,label`` / ``name,label``); a clip matches by
            relative path, relative path without extension, file name, or file name without extension.
        workers: probe processes (default: all CPU cores).
        frame_template: names of the frame files in frame folders.
        extensions: video file extensions (default :data:`VIDEO_EXTENSIONS`).
        timeout: seconds per probe before the clip is skipped as hanging.
        progress: show a progress bar.

    Returns:
        A :class:`BuildResult`. Clips that fail to probe are left out and listed in ``skipped``.

    Raises:
        ValueError: both label options, or no clip found.
    """
    if labels_from_subfolders and label_map is not None:
        raise ValueError("give either labels_from_subfolders or label_map, not both")
    root = os.fspath(root)
    mapping = _read_path_label_map(os.fspath(label_map)) if label_map is not None else None  # fail before probing
    clips, skipped = scan_folder(root, frame_template, extensions or VIDEO_EXTENSIONS)
    if not clips:
        raise ValueError(f"no video files ({', '.join(extensions or VIDEO_EXTENSIONS)}) or frame folders "
                         f"({frame_template}) under {root}")
    jobs = [_ProbeJob(os.path.join(root, c.rel), frame_template, c.start, timeout) for c in clips]
    results = _probe_all(jobs, workers, progress, desc="probing")

    rows, labels, unlabelled = [], [], []
    for clip, res in zip(clips, results):
        if res.error is not None:
            skipped.append((clip.rel, res.error))
            continue
        label = None
        if labels_from_subfolders:
            label = clip.rel.split("/", 1)[0] if "/" in clip.rel else None
        elif mapping is not None:
            label = _lookup_label(mapping, clip.rel)
        if (labels_from_subfolders or mapping is not None) and label is None:
            unlabelled.append(clip.rel)
        labels.append(label)
        rows.append(ManifestRow(
            path=clip.rel, start=clip.start, num_frames=res.num_frames, fps=round(res.fps, 6) or None,
            width=res.width, height=res.height,
            duration=round(res.num_frames / res.fps, 6) if res.fps > 0 else None))
    if not rows:
        raise ValueError(f"none of the {len(clips)} clips under {root} could be probed; first: {skipped[0]}")
    names = sorted({lb for lb in labels if lb is not None}) or None
    if names is not None:
        index = {n: i for i, n in enumerate(names)}
        for row, label in zip(rows, labels):
            row.label = index[label] if label is not None else None
    write_manifest(rows, output, label_names=names)
    skipped.sort()
    return BuildResult(os.fspath(output), rows, skipped, names, unlabelled)


# --------------------------------------------------------------------------------------------------------------
# check


@dataclass(frozen=True)
class Problem:
    """One problem found by :func:`check_manifest`.

    Attributes:
        line: 1-based line in the manifest (0: the whole file).
        kind: one of :data:`PROBLEM_KINDS`.
        message: what is wrong, naming the clip.
    """

    line: int
    kind: str
    message: str


@dataclass
class CheckReport:
    """The result of :func:`check_manifest`.

    Attributes:
        manifest: the checked file.
        num_rows: rows read (including the bad ones).
        problems: every problem, by line.
        fatal: the manifest could not be read at all (header or format problem); ``problems`` says why.
        fixed: the cleaned copy written, if any; ``kept`` rows went into it.
    """

    manifest: str
    num_rows: int
    problems: list[Problem]
    fatal: bool = False
    fixed: str | None = None
    kept: int = 0

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems

    @property
    def exit_code(self) -> int:
        """0 clean, 1 problems found, 2 unreadable manifest."""
        return 2 if self.fatal else 1 if self.problems else 0

    def bad_lines(self) -> list[int]:
        """The lines with at least one problem, sorted."""
        return sorted({p.line for p in self.problems if p.line > 0})

    def format(self, max_lines: int | None = 200) -> str:
        """The report as text: one line per problem (``file:line: kind: message``) and a per-kind count."""
        head = f"{self.manifest}: {self.num_rows} rows, OK"
        if self.fatal:
            head = f"{self.manifest}: cannot be read"
        elif self.problems:
            head = (f"{self.manifest}: {self.num_rows} rows, {len(self.problems)} problems "
                    f"on {len(self.bad_lines())} rows")
        out = [head]
        shown = self.problems if max_lines is None else self.problems[:max_lines]
        out += [f"  {self.manifest}:{p.line}: {p.kind}: {p.message}" for p in shown]
        if len(shown) < len(self.problems):
            out.append(f"  ... and {len(self.problems) - len(shown)} more")
        if self.problems and not self.fatal:
            counts = {k: sum(p.kind == k for p in self.problems) for k in PROBLEM_KINDS}
            out.append("  summary: " + ", ".join(f"{k}={n}" for k, n in counts.items() if n))
        if self.fixed is not None:
            out.append(f"wrote {self.kept} good rows to {self.fixed}")
        return "\n".join(out)


def _read_tolerant(path: str, data_root: str | None, label_map: list[str] | None
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

    jobs = [_ProbeJob(r.path, frame_template, r.start, timeout) for r in unique]
    results = _probe_all(jobs, workers, progress, desc="checking")
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


def _clip_problems(row: ManifestRow, res: _ProbeResult, span: int | None) -> list[Problem]:
    if res.missing:
        return [Problem(row.line, "missing", f"{row.path}: not found")]
    if res.error is not None:
        message = res.error if row.path in res.error else f"{row.path}: {res.error}"
        return [Problem(row.line, "undecodable", message)]
    out = []
    available = res.num_frames
    if row.num_frames is not None and row.num_frames > res.num_frames:
        out.append(Problem(row.line, "frame_count", f"{row.path}: the row declares num_frames={row.num_frames}, "
                                                    f"only {res.num_frames} decode"))
    elif row.num_frames is not None:
        available = row.num_frames
    if span is not None and available < span:
        out.append(Problem(row.line, "too_short", f"{row.path}: {available} frames < the {span} a clip spans"))
    return out


# --------------------------------------------------------------------------------------------------------------
# merge


@dataclass
class MergeResult:
    """What :func:`merge_manifests` wrote.

    Attributes:
        output: merged manifest; label_map: merged class names file; label_names: the merged names.
        remaps: per input, the remap file written and its mapping (old id or class name -> new id).
        rows_per_input: rows taken from each input; duplicates: rows dropped as repeats of an earlier row;
        conflicts: ``(input, line, message)`` for repeats whose label differs from the kept row's.
    """

    output: str
    label_map: str
    label_names: list[str]
    remaps: list[tuple[str, dict[str, int]]]
    rows_per_input: list[int]
    duplicates: int = 0
    conflicts: list[tuple[str, int, str]] = field(default_factory=list)

    def summary(self) -> str:
        """A short human-readable report."""
        out = [f"wrote {sum(self.rows_per_input)} rows, {len(self.label_names)} classes to {self.output}, "
               f"label map {self.label_map}"]
        for (remap_path, remap), n in zip(self.remaps, self.rows_per_input):
            out.append(f"  {n} rows, {len(remap)} classes remapped -> {remap_path}")
        if self.duplicates:
            out.append(f"  dropped {self.duplicates} duplicate rows (same path and start as an earlier row)")
        for file, line, msg in self.conflicts[:20]:
            out.append(f"  {file}:{line}: {msg}")
        return "\n".join(out)


def merge_manifests(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    label_map_out: str | os.PathLike,
    label_maps: Sequence[str | os.PathLike | None] | None = None,
    remap_dir: str | os.PathLike | None = None,
) -> MergeResult:
    """Merge labelled manifests into one label space by normalised class name.

    The merged label map is the sorted union of :func:`normalize_class_name` of every input's class names. Each
    row keeps its columns; its label becomes the merged id and an empty ``source`` becomes the input's file stem.
    A row whose (path, start) repeats an earlier row is dropped (Kinetics 600/700 re-list 400's videos).

    Args:
        inputs: labelled manifests.
        output: merged CSV manifest (labels as merged ids).
        label_map_out: merged label map (one class name per line).
        label_maps: per input, its label map, or ``None`` / ``"-"`` for an input labelled by class name. Inputs
            with integer labels need one.
        remap_dir: folder of the remap files ``<output stem>.remap.<i>.<input stem>.json`` (default: next to
            ``output``). Each maps the input's old ids (or class names, without a label map) to merged ids.

    Raises:
        ValueError: no input, label maps count mismatch, an input without labels or with ids and no label map.
        ManifestError: an input that cannot be read.
    """
    if not inputs:
        raise ValueError("merge needs at least one input manifest")
    maps = list(label_maps) if label_maps is not None else [None] * len(inputs)
    if len(maps) != len(inputs):
        raise ValueError(f"{len(maps)} label maps for {len(inputs)} inputs: give one per input ('-' for none)")
    maps = [None if m is None or os.fspath(m) == "-" else os.fspath(m) for m in maps]

    manifests: list[Manifest] = []
    for file, label_map in zip(inputs, maps):
        m = read_manifest(file, label_map=label_map)
        if all(r.label is None for r in m.rows):
            raise ValueError(f"{file}: no labelled rows; merge combines labelled manifests")
        if m.label_names is None:
            raise ValueError(f"{file}: labels are integer ids; give its label map (--label-maps, in input order)")
        manifests.append(m)

    merged = sorted({normalize_class_name(n) for m in manifests for n in m.label_names})
    new_id = {n: i for i, n in enumerate(merged)}
    out_stem = Path(output).stem
    remap_folder = Path(remap_dir) if remap_dir is not None else Path(output).parent

    rows: list[ManifestRow] = []
    seen: dict[tuple[str, int | None], tuple[int | None, str, int]] = {}
    remaps, counts, duplicates, conflicts = [], [], 0, []
    for i, (file, m, label_map) in enumerate(zip(inputs, manifests, maps)):
        ids = [new_id[normalize_class_name(n)] for n in m.label_names]
        remap = ({str(old): new for old, new in enumerate(ids)} if label_map is not None
                 else {name: new for name, new in zip(m.label_names, ids)})
        remap_path = remap_folder / f"{out_stem}.remap.{i}.{Path(file).stem}.json"
        remaps.append((os.fspath(remap_path), remap))
        taken = 0
        for row in m.rows:
            label = ids[row.label] if row.label is not None else None
            key = (os.path.normpath(row.path), row.start)
            if key in seen:
                duplicates += 1
                kept_label, kept_file, kept_line = seen[key]
                if kept_label != label:
                    conflicts.append((os.fspath(file), row.line, f"{row.path} is labelled {_name(merged, label)} "
                                      f"here, {_name(merged, kept_label)} at {kept_file}:{kept_line} (kept)"))
                continue
            seen[key] = (label, os.fspath(file), row.line)
            rows.append(replace(row, label=label, source=row.source or Path(file).stem))
            taken += 1
        counts.append(taken)

    write_manifest(rows, output)
    Path(label_map_out).parent.mkdir(parents=True, exist_ok=True)
    Path(label_map_out).write_text("".join(f"{n}\n" for n in merged), encoding="utf-8")
    remap_folder.mkdir(parents=True, exist_ok=True)
    for remap_path, remap in remaps:
        Path(remap_path).write_text(json.dumps(remap, indent=1) + "\n", encoding="utf-8")
    return MergeResult(os.fspath(output), os.fspath(label_map_out), merged, remaps, counts, duplicates, conflicts)


def _name(names: list[str], label: int | None) -> str:
    return "(unlabelled)" if label is None else repr(names[label])

