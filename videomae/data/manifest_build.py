"""``videomae manifest build``: scan a folder for video files, frame folders and images, probe each, write a CSV.

Built to survive a large folder: clips are probed in a pool of killable processes (a probe past ``timeout`` is
killed and its clip rejected with the reason), each result is appended to a probe log as it arrives
(:mod:`~videomae.data.manifest_resume`: rerunning the command after a kill probes only the rest), a build can be
one shard of several (:mod:`~videomae.data.manifest_shards`), and the manifest and its rejects are written
atomically at the end. Captions come from sidecar ``.txt`` files or a captions file (:mod:`.captions`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from videomae.data.captions import match_captions, read_captions_file, read_sidecar_captions
from videomae.data.clip_labels import clip_label, read_path_label_map
from videomae.data.frame_check import guess_frame_template, template_regex
from videomae.data.images import IMAGE_EXTENSIONS, is_image_path
from videomae.data.labels import label_rule_violation
from videomae.data.manifest import ManifestRow, write_manifest
from videomae.data.manifest_probe import DEFAULT_FRAME_TEMPLATE, ProbeJob, ProbeResult, probe_stream
from videomae.data.manifest_resume import ProbeLog
from videomae.data.manifest_shards import Shard, parse_shard, write_rejects, write_shard_info

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "IMAGE_EXTENSIONS",
    "IMAGE_MODES",
    "VIDEO_EXTENSIONS",
    "BuildInterrupted",
    "BuildResult",
    "ScannedClip",
    "build_manifest",
    "scan_folder",
]

VIDEO_EXTENSIONS = ("mp4", "avi", "mkv", "webm", "mov", "m4v", "mpg", "mpeg", "flv", "wmv")
IMAGE_MODES = ("auto", "all", "none")
"""Which images outside frame folders a build lists (see :func:`scan_folder`)."""
DEFAULT_TIMEOUT_S = 30.0
"""Seconds a probe may take before its process is killed (a clip probes in well under a second)."""
_MAX_LISTED = 20


class BuildInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a build; the message says what the probe log keeps and how to resume."""


@dataclass(frozen=True)
class ScannedClip:
    """A clip found by :func:`scan_folder`: ``rel`` is relative to the scanned root (``/`` separators); a file
    that is no frame folder is a video or, by its extension, an image."""

    rel: str
    is_folder: bool
    start: int | None = None


@dataclass
class BuildResult:
    """What :func:`build_manifest` wrote.

    Attributes:
        output: the manifest written.
        rows: the clips written, in file order (paths relative to the root).
        skipped: ``(relative path, reason)`` of every clip left out, sorted (also in ``rejects``).
        label_names: class names when labels were written.
        unlabelled: relative paths that got no label although labels were requested.
        rejects: the CSV listing ``skipped``.
        probed: clips probed by this run; resumed: clips whose result came from an interrupted run's log.
        shard: the shard built, ``None`` for the whole folder.
        captions: where captions came from (``"sidecars"``, a captions file, ``None``: none asked for).
        captioned: rows written with a caption.
        caption_misses: paths of the captions file that name no clip under the root (sorted).
    """

    output: str
    rows: list[ManifestRow]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    label_names: list[str] | None = None
    unlabelled: list[str] = field(default_factory=list)
    rejects: str = ""
    probed: int = 0
    resumed: int = 0
    shard: Shard | None = None
    captions: str | None = None
    captioned: int = 0
    caption_misses: list[str] = field(default_factory=list)

    def summary(self, root: str) -> str:
        """A short human-readable report."""
        lines = [
            f"wrote {len(self.rows)} clips to {self.output}"
            + (f" ({len(self.label_names)} classes)" if self.label_names else "")
            + (f", shard {self.shard}" if self.shard else "")
            + f"; probed {self.probed}"
            + (f", {self.resumed} resumed from the interrupted run's log" if self.resumed else "")
        ]
        for rel, reason in self.skipped[:_MAX_LISTED]:
            lines.append(f"  skipped {rel}: {reason}")
        if self.skipped:
            more = f"{len(self.skipped) - _MAX_LISTED} more, " if len(self.skipped) > _MAX_LISTED else ""
            lines.append(f"  ({more}all {len(self.skipped)} with their reasons in {self.rejects})")
        if self.unlabelled:
            lines.append(f"  {len(self.unlabelled)} clips have no label, e.g. {self.unlabelled[0]}")
        images = sum(is_image_path(r.path) for r in self.rows)
        if images:
            lines.append(
                f"  {images} rows are still images, one row each (if they are video frames, give --frame-template "
                "to read their folders as clips; --images none lists no image)"
            )
        if self.captions is not None:
            lines.append(f"  {self.captioned} of {len(self.rows)} rows have a caption (from {self.captions})")
        if self.caption_misses:
            shown = ", ".join(self.caption_misses[:5]) + (", ..." if len(self.caption_misses) > 5 else "")
            lines.append(f"  {len(self.caption_misses)} captioned paths name no clip under the root: {shown}")
        lines.append(f"paths are relative to {root}: use it as data_root (--data-root {root})")
        return "\n".join(lines)


def scan_folder(
    root: str | os.PathLike,
    frame_template: str = DEFAULT_FRAME_TEMPLATE,
    extensions: Iterable[str] = VIDEO_EXTENSIONS,
    images: str = "auto",
) -> tuple[list[ScannedClip], list[tuple[str, str]]]:
    """Find video files, frame folders and images under ``root`` (hidden entries skipped, sorted by path).

    A frame folder is a directory holding image files some of which are named by ``frame_template``; its
    ``start`` is the lowest index among them (its other images are ignored). The images of any other folder (and
    of ``root``) are clips of their own, one each, as ``images`` says: ``all``; ``auto``: unless they look like
    the frames of a video under another template (:func:`~videomae.data.frame_check.guess_frame_template`), which
    are reported with that template; ``none``: never (folders of images are reported). Returns the clips and
    ``(relative path, reason)`` of what was left out.
    """
    if images not in IMAGE_MODES:
        raise ValueError(f"images={images!r}: expected one of {', '.join(IMAGE_MODES)}")
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise NotADirectoryError(f"{root} is not a folder")
    pattern = template_regex(frame_template)
    video_ext = {e.lower().lstrip(".") for e in extensions}
    clips: list[ScannedClip] = []
    skipped: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        prefix = "" if rel_dir == "." else rel_dir + "/"
        image_files = []
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
            if ext in video_ext:
                clips.append(ScannedClip(prefix + name, False))
            elif ext in IMAGE_EXTENSIONS:
                image_files.append(name)
        indices = [
            int(m.group(1))
            for m in map(pattern.fullmatch, image_files)
            if m and frame_template.format(int(m.group(1))) == m.group(0)
        ]
        guess = guess_frame_template(image_files) if images == "auto" else None
        if indices and rel_dir != ".":
            clips.append(ScannedClip(rel_dir, True, min(indices)))
        elif images == "all" or (images == "auto" and guess is None):
            clips += [ScannedClip(prefix + name, False) for name in image_files]
        elif guess is not None:
            skipped.append(
                (
                    rel_dir,
                    f"{len(image_files)} images named like video frames ({guess!r}), none like "
                    f"{frame_template!r}: set --frame-template {guess!r}, or --images all to list each image",
                )
            )
        elif image_files and rel_dir != ".":
            skipped.append(
                (rel_dir, f"{len(image_files)} images, none named like {frame_template!r} (set --frame-template)")
            )
    clips.sort(key=lambda c: c.rel)
    return clips, skipped


def build_manifest(
    root: str | os.PathLike,
    output: str | os.PathLike,
    *,
    labels_from_subfolders: bool = False,
    label_map: str | os.PathLike | None = None,
    workers: int | None = None,
    frame_template: str = DEFAULT_FRAME_TEMPLATE,
    extensions: Iterable[str] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    progress: bool = True,
    shard: Shard | str | None = None,
    images: str = "auto",
    captions: str | os.PathLike | None = None,
    captions_from_sidecars: bool = False,
) -> BuildResult:
    """Scan ``root``, probe every clip in a process pool and write a CSV manifest with paths relative to ``root``.

    Each result is appended to ``OUT.probed.jsonl`` as it arrives; when that log is there from an interrupted run
    of the same build, its clips are not probed again. At the end the manifest and ``OUT.rejects.csv`` are written
    atomically and the log is deleted.

    Args:
        root: folder to scan (recursively).
        output: CSV file to write.
        labels_from_subfolders: label = first path component under ``root`` (``root/<class>/clip.mp4``, and the
            ImageNet layout ``root/<class>/xxx.jpg``).
        label_map: a clip -> label mapping (JSON object or CSV ``path,label`` / ``name,label``); a clip matches by
            relative path, relative path without extension, file name, or file name without extension.
        workers: probe processes (default: the CPU cores this process may use).
        frame_template: names of the frame files in frame folders.
        extensions: video file extensions (default :data:`VIDEO_EXTENSIONS`).
        timeout: seconds per probe before its process is killed and the clip rejected (``None``/0: no limit).
        progress: show a progress bar (with the rate and the time left).
        shard: build only shard ``i/n`` (``"i/n"`` or a :class:`Shard`); ``manifest merge`` joins the shards.
        images: which image files outside frame folders to list as one-frame clips, ``auto``, ``all`` or ``none``
            (see :func:`scan_folder`).
        captions: a captions file (CSV ``path,text`` or JSON Lines, paths relative to ``root``) for the ``text``
            column; its paths that name no clip are reported in the result.
        captions_from_sidecars: take each clip's caption from the ``.txt`` of the same name beside it.

    Returns:
        A :class:`BuildResult`. Clips that fail to probe are left out and listed in ``skipped`` and the rejects.

    Raises:
        ValueError: both label options, both caption options, an unreadable captions file, labels that break
            :data:`videomae.data.labels.LABEL_RULE`, no clip found (none probed, unsharded), a bad ``shard``, or a
            probe log of another build at ``OUT.probed.jsonl``.
        BuildInterrupted: Ctrl-C (or SIGTERM turned into it); the log keeps every result so far.
    """
    if labels_from_subfolders and label_map is not None:
        raise ValueError("give either labels_from_subfolders or label_map, not both")
    if captions_from_sidecars and captions is not None:
        raise ValueError("give either captions or captions_from_sidecars, not both")
    shard = parse_shard(shard) if isinstance(shard, str) else shard
    root = os.fspath(root)
    extensions = list(extensions or VIDEO_EXTENSIONS)
    mapping = read_path_label_map(os.fspath(label_map)) if label_map is not None else None  # fail before probing
    caption_file = read_captions_file(captions) if captions is not None else None
    clips, skipped = scan_folder(root, frame_template, extensions, images)
    if not clips:
        kinds = f"video files ({', '.join(extensions)}), frame folders ({frame_template})"
        kinds += f" or images ({', '.join(IMAGE_EXTENSIONS)})" if images != "none" else ""
        raise ValueError(f"no {kinds} under {root}")
    clip_texts, misses = {}, []
    if caption_file is not None:  # matched against every clip, whatever the shard
        clip_texts, misses = match_captions(caption_file, (c.rel for c in clips))
    clip_labels = {c.rel: clip_label(c.rel, labels_from_subfolders, mapping) for c in clips}
    problem = label_rule_violation([lb for lb in clip_labels.values() if lb is not None])
    if problem is not None:  # before probing, over every shard's clips: the manifest could not be read back
        raise ValueError(f"labels of the clips under {root}: {problem}")
    if shard is not None:
        clips, skipped = shard.take(clips, lambda c: c.rel), shard.take(skipped, lambda s: s[0])
    if captions_from_sidecars:
        clip_texts = read_sidecar_captions(root, ((c.rel, c.is_folder) for c in clips))
    identity = {
        "root": os.path.abspath(root),
        "frame_template": frame_template,
        "extensions": sorted({e.lower().lstrip(".") for e in extensions}),
        "images": images,
        "shard": str(shard) if shard is not None else None,
    }
    log = ProbeLog(output, identity)
    try:
        results, probed = _probe_into(log, root, clips, frame_template, workers, timeout, progress, shard)
    except KeyboardInterrupt:
        log.close()
        raise BuildInterrupted(
            f"interrupted: the results of {len(log.done)} of {len(clips)} clips are kept in {log.path}; "
            "rerun the same command to probe the rest"
        ) from None
    except BaseException:
        log.close()
        raise

    rows, labels, unlabelled = [], [], []
    for clip, res in zip(clips, results):
        label = clip_labels[clip.rel]
        if res.error is not None:
            skipped.append((clip.rel, res.error))
            continue
        if (labels_from_subfolders or mapping is not None) and label is None:
            unlabelled.append(clip.rel)
        labels.append(label)
        rows.append(_row(clip, res, clip_texts.get(clip.rel)))
    if not rows and shard is None:
        log.close()
        raise ValueError(f"none of the {len(clips)} clips under {root} could be probed; first: {skipped[0]}")
    names = sorted({lb for lb in labels if lb is not None}) or None
    if names is not None:
        index = {n: i for i, n in enumerate(names)}
        for row, label in zip(rows, labels):
            row.label = index[label] if label is not None else None
    write_manifest(rows, output, label_names=names)
    skipped.sort()
    rejects = write_rejects(output, skipped)
    if shard is not None:
        build = {k: v for k, v in identity.items() if k != "shard"}
        build["labels"] = _label_source(labels_from_subfolders, label_map)
        build["captions"] = _caption_source(captions_from_sidecars, captions)
        write_shard_info(output, shard, build, len(clips), len(rows))
    log.remove()
    resumed = len(clips) - probed
    source = _caption_source(captions_from_sidecars, captions)
    captioned = sum(r.text is not None for r in rows)
    return BuildResult(
        os.fspath(output), rows, skipped, names, unlabelled, rejects, probed, resumed, shard, source, captioned, misses
    )


def _label_source(from_subfolders: bool, label_map: str | os.PathLike | None) -> str | None:
    if from_subfolders:
        return "subfolders"
    return os.path.abspath(os.fspath(label_map)) if label_map is not None else None


def _caption_source(from_sidecars: bool, captions: str | os.PathLike | None) -> str | None:
    if from_sidecars:
        return "sidecars"
    return os.path.abspath(os.fspath(captions)) if captions is not None else None


def _row(clip: ScannedClip, res: ProbeResult, text: str | None) -> ManifestRow:
    return ManifestRow(
        path=clip.rel,
        text=text,
        start=clip.start,
        num_frames=res.num_frames,
        fps=round(res.fps, 6) or None,
        width=res.width,
        height=res.height,
        duration=round(res.num_frames / res.fps, 6) if res.fps > 0 else None,
    )


def _probe_into(
    log: ProbeLog,
    root: str,
    clips: list[ScannedClip],
    frame_template: str,
    workers: int | None,
    timeout: float | None,
    progress: bool,
    shard: Shard | None,
) -> tuple[list[ProbeResult], int]:
    """Every clip's result, in clip order (from the log, or probed and logged); and how many were probed."""
    from tqdm import tqdm

    results = [log.result_for(c.rel, timeout) for c in clips]
    todo = [i for i, r in enumerate(results) if r is None]
    jobs = [ProbeJob(os.path.join(root, clips[i].rel), frame_template, clips[i].start) for i in todo]
    rejected = sum(r is not None and r.error is not None for r in results)
    desc = "probing" + (f" shard {shard}" if shard is not None else "")
    interactive = sys.stderr.isatty()  # in a batch job's log: a line every 30 s, not 10 per second
    bar = tqdm(
        total=len(clips),
        initial=len(clips) - len(todo),
        desc=desc,
        unit="clip",
        disable=not progress,
        mininterval=0.1 if interactive else 30.0,
        postfix={"rejected": rejected},
    )
    with bar:
        for k, result in probe_stream(jobs, workers, timeout):
            i = todo[k]
            log.record(clips[i].rel, result, timeout)
            results[i] = result
            if result.error is not None:
                rejected += 1
                bar.set_postfix(rejected=rejected, refresh=False)
            bar.update()
    return results, len(todo)  # type: ignore[return-value]  (every clip has its result now)
