"""``videomae manifest merge``: labelled manifests into one label space by normalised class name."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from videomae.data.labels import normalize_class_name
from videomae.data.manifest import Manifest, ManifestRow, read_manifest, write_manifest

__all__ = ["MergeResult", "merge_manifests"]


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
        out = [
            f"wrote {sum(self.rows_per_input)} rows, {len(self.label_names)} classes to {self.output}, "
            f"label map {self.label_map}"
        ]
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
        remap = (
            {str(old): new for old, new in enumerate(ids)}
            if label_map is not None
            else {name: new for name, new in zip(m.label_names, ids)}
        )
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
                    conflicts.append(
                        (
                            os.fspath(file),
                            row.line,
                            f"{row.path} is labelled {_name(merged, label)} "
                            f"here, {_name(merged, kept_label)} at {kept_file}:{kept_line} (kept)",
                        )
                    )
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
