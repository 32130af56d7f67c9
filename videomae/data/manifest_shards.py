"""Manifest builds split into shards (``--shard i/n``, e.g. one per SLURM array task) and joined again.

A clip belongs to shard ``crc32(relative path) mod n``: each shard takes a deterministic ~1/n of the sorted clip
list, and a clip's shard depends on its name only, so files added to the folder while the array runs never move
another clip to a different shard (no clip is probed twice or lost). Every shard writes a normal manifest (rows
sorted by path, as an unsharded build) plus ``OUT.shard.json``, which names the shard and the build it belongs to.
:func:`join_shards` checks that all ``n`` shards of one build are there and writes the manifest and the rejects
an unsharded build writes: the same rows, in the same order, with the same labels.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from videomae.data.manifest import ManifestRow, read_manifest, write_manifest

__all__ = [
    "Shard",
    "is_shard_output",
    "join_shards",
    "parse_shard",
    "read_rejects",
    "rejects_path",
    "shard_info_path",
    "write_rejects",
    "write_shard_info",
]

T = TypeVar("T")
_SHARD_HELP = (
    "shards count from 0: --shard 0/{n} ... --shard {last}/{n} (in a SLURM array: "
    "--array=0-{last} and --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)"
)


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``0 <= index < count``)."""

    index: int
    count: int

    def owns(self, rel: str) -> bool:
        """Whether the clip at relative path ``rel`` belongs to this shard."""
        return zlib.crc32(rel.encode("utf-8")) % self.count == self.index

    def take(self, items: Sequence[T], rel_of: Callable[[T], str]) -> list[T]:
        """The items of this shard, in their order; ``rel_of(item)`` gives an item's relative path."""
        return [item for item in items if self.owns(rel_of(item))]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"i/n"`` -> :class:`Shard`.

    Raises:
        ValueError: not two integers, ``n < 1`` or ``i`` outside ``0 .. n-1``; the message gives the fix.
    """
    parts = text.strip().split("/")
    try:
        index, count = (int(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        index = count = None
    if index is None or count is None:
        raise ValueError(f"--shard {text!r}: expected I/N, e.g. --shard 0/8 for the first of 8 shards")
    if count < 1:
        raise ValueError(f"--shard {text!r}: N = {count}, need at least one shard (--shard 0/1: all clips)")
    if not 0 <= index < count:
        hint = " (a SLURM array that starts at 1?)" if index == count else ""
        raise ValueError(f"--shard {text!r}: I = {index} is not in 0..{count - 1}{hint}; " + _shard_help(count))
    return Shard(index, count)


def _shard_help(n: int) -> str:
    return _SHARD_HELP.format(n=n, last=n - 1)


def shard_info_path(output: str | os.PathLike) -> str:
    """Where a shard build describes itself: ``OUT.shard.json``."""
    return os.fspath(output) + ".shard.json"


def rejects_path(output: str | os.PathLike) -> str:
    """Where a build lists the clips it left out, with the reason: ``OUT.rejects.csv``."""
    return os.fspath(output) + ".rejects.csv"


def write_rejects(output: str | os.PathLike, rejects: Sequence[tuple[str, str]]) -> str:
    """Write ``(relative path, reason)`` rows, sorted by path, to :func:`rejects_path` (atomically)."""
    from videomae.disk_faults import write_text_atomic

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "reason"])
    writer.writerows(sorted(rejects))
    return os.fspath(write_text_atomic(rejects_path(output), buffer.getvalue()))


def read_rejects(output: str | os.PathLike) -> list[tuple[str, str]]:
    """The rows :func:`write_rejects` wrote for ``output`` (none when the file is missing)."""
    path = rejects_path(output)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", newline="") as f:
        return [(r["path"], r["reason"]) for r in csv.DictReader(f)]


def write_shard_info(output: str | os.PathLike, shard: Shard, build: dict, clips: int, rows: int) -> None:
    """Record which shard ``output`` is and the build it belongs to (``build``: the arguments that choose and
    probe the clips)."""
    from videomae.disk_faults import write_text_atomic

    info = {"shard": str(shard), "build": build, "clips": clips, "rows": rows}
    write_text_atomic(shard_info_path(output), json.dumps(info, indent=1) + "\n")


def is_shard_output(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a manifest written by a ``--shard`` build (it has its ``.shard.json``)."""
    return os.path.exists(shard_info_path(path))


@dataclass
class JoinResult:
    """What :func:`join_shards` wrote: the manifest, its rows, the rejects file and how many it lists."""

    output: str
    rows: int
    rejects: str
    rejected: int

    def summary(self) -> str:
        """A short human-readable report."""
        return f"joined the shards into {self.rows} rows in {self.output}; {self.rejected} rejects in {self.rejects}"


def join_shards(inputs: Sequence[str | os.PathLike], output: str | os.PathLike) -> JoinResult:
    """Join the outputs of ``--shard 0/n`` ... ``--shard n-1/n`` of one build into the manifest (and rejects) an
    unsharded build writes.

    Raises:
        ValueError: an input that is no shard output, shards of different builds, a shard missing or given twice,
            or a clip in two shards.
    """
    infos = []
    for path in inputs:
        if not is_shard_output(path):
            raise ValueError(f"{path} is not a shard output (no {shard_info_path(path)}): join only --shard builds")
        with open(shard_info_path(path), encoding="utf-8") as f:
            infos.append(json.load(f))
    count = parse_shard(infos[0]["shard"]).count
    for path, info in zip(inputs, infos):
        theirs, ours = (
            info["build"] | {"shards": parse_shard(info["shard"]).count},
            infos[0]["build"] | {"shards": count},
        )
        differ = [f"{k}: {theirs.get(k)!r} vs {ours.get(k)!r}" for k in sorted(ours) if theirs.get(k) != ours.get(k)]
        if differ:
            raise ValueError(f"{path} and {inputs[0]} are shards of different builds ({'; '.join(differ)})")
    given = sorted(parse_shard(info["shard"]).index for info in infos)
    if given != list(range(count)):
        missing = sorted(set(range(count)) - set(given))
        twice = sorted({i for i in given if given.count(i) > 1})
        raise ValueError(
            f"need shards 0..{count - 1} once each: missing {missing or 'none'}, given twice {twice or 'none'}"
        )

    rows: list[tuple[ManifestRow, str | None]] = []
    for path, info in zip(inputs, infos):
        if info["rows"] == 0:  # every clip of the shard was rejected: its manifest holds the header only
            continue
        manifest = read_manifest(path)
        names = manifest.label_names
        for row in manifest.rows:
            named = names[row.label] if names is not None and row.label is not None else None
            rows.append((row, named))
    rows.sort(key=lambda pair: pair[0].path)
    paths = [row.path for row, _ in rows]
    repeated = next((a for a, b in zip(paths, paths[1:]) if a == b), None)
    if repeated is not None:
        raise ValueError(f"{repeated} is in two shards: the shards were not built from the same folder listing")
    label_names = sorted({name for _, name in rows if name is not None}) or None
    if label_names is not None:
        index = {name: i for i, name in enumerate(label_names)}
        rows = [(replace(row, label=index[name] if name is not None else None), name) for row, name in rows]
    write_manifest([row for row, _ in rows], output, label_names=label_names)
    rejects = [reject for path in inputs for reject in read_rejects(path)]
    return JoinResult(os.fspath(output), len(rows), write_rejects(output, rejects), len(rejects))
