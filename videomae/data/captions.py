"""Captions for ``videomae manifest build``: from a sidecar ``.txt`` beside each clip, or from one captions file.

* Sidecars: ``clip.mp4``, ``photo.jpg`` and the frame folder ``clip/`` take their caption from ``clip.txt`` /
  ``photo.txt`` in the same folder (UTF-8, surrounding whitespace stripped; an empty file is no caption).
* A captions file: CSV with a header naming ``path`` and ``text`` columns, or JSON Lines (``.jsonl`` / ``.json``)
  of objects with ``path`` and ``text``. Paths are relative to the scanned folder, as the manifest writes them.
  A path named twice with different captions is refused with both lines; paths that match no clip are returned,
  so the build reports them instead of dropping them silently.
"""

from __future__ import annotations

import csv
import json
import os
import posixpath
from collections.abc import Iterable

__all__ = ["match_captions", "read_captions_file", "read_sidecar_captions"]


def _key(path: str) -> str:
    """A path as the manifest writes it: ``/`` separators, no ``./``, no trailing ``/``."""
    return posixpath.normpath(path.strip().replace("\\", "/"))


def read_captions_file(path: str | os.PathLike) -> dict[str, str]:
    """``{relative path: caption}`` from a CSV (``path,text`` header) or JSON Lines file; empty captions are left out.

    Raises:
        ValueError: no ``path``/``text`` columns, a malformed JSON line, or one path with two different captions
            (each naming the file and line).
    """
    path = os.fspath(path)
    with open(path, encoding="utf-8-sig", newline="") as f:
        if path.lower().endswith((".jsonl", ".json")):
            entries = list(_jsonl_entries(path, f))
        else:
            entries = list(_csv_entries(path, f))
    captions: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line, clip, text in entries:
        key, text = _key(clip), text.strip()
        if not clip.strip() or not text:
            continue
        if key in captions and captions[key] != text:
            raise ValueError(
                f"{path}:{line}: {clip} already has another caption on line {first_line[key]}; keep one of them"
            )
        captions[key], first_line[key] = text, first_line.get(key, line)
    return captions


def _csv_entries(path: str, f) -> Iterable[tuple[int, str, str]]:
    reader = csv.DictReader(f)
    columns = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
    if "path" not in columns or "text" not in columns:
        found = ", ".join(c for c in columns if c) or "no header"
        raise ValueError(f"{path}: a captions CSV needs a header with 'path' and 'text' columns (found: {found})")
    for row in reader:
        yield reader.line_num, row[columns["path"]] or "", row[columns["text"]] or ""


def _jsonl_entries(path: str, f) -> Iterable[tuple[int, str, str]]:
    for line, text in enumerate(f, start=1):
        if not text.strip():
            continue
        try:
            entry = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{line}: not a JSON object ({e.msg})") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or "text" not in entry:
            raise ValueError(f'{path}:{line}: expected an object {{"path": "...", "text": "..."}}')
        yield line, entry["path"], str(entry["text"] or "")


def match_captions(captions: dict[str, str], clips: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """The captions of ``clips`` (relative paths), and the captioned paths that name no clip (sorted)."""
    clips = list(clips)
    wanted = {_key(c): c for c in clips}
    found = {wanted[k]: text for k, text in captions.items() if k in wanted}
    return found, sorted(k for k in captions if k not in wanted)


def read_sidecar_captions(root: str | os.PathLike, clips: Iterable[tuple[str, bool]]) -> dict[str, str]:
    """``{clip: caption}`` read from the ``.txt`` beside each clip under ``root``.

    Args:
        root: the scanned folder.
        clips: ``(relative path, is a frame folder)`` of each clip (a folder keeps its whole name as the stem).
    """
    root = os.fspath(root)
    found = {}
    for clip, is_folder in clips:
        stem = clip if is_folder else posixpath.splitext(clip)[0]
        sidecar = os.path.join(root, *f"{stem}.txt".split("/"))
        if os.path.isfile(sidecar):
            with open(sidecar, encoding="utf-8-sig") as f:
                text = f.read().strip()
            if text:
                found[clip] = text
    return found
