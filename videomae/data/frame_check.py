"""Check a frame folder file by file: every expected frame exists, is a non-empty regular file and decodes.

Training reads a handful of frames per clip, so a hole, a 0-byte file or a FIFO in the middle of a folder would
only show up mid-run (a FIFO even blocks the reader). ``videomae manifest check`` and ``build`` therefore look
at every frame the row promises, in order, and name the first one that is missing or broken. Files are examined
with ``stat`` before any is opened, so a FIFO is never opened (opening one blocks until a writer appears).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FolderCheck", "check_frame_folder", "guess_frame_template", "template_regex"]

_NUMBERED = re.compile(r"(.*?)(\d+)(\.[^.]+)")

_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


@dataclass(frozen=True)
class FolderCheck:
    """What :func:`check_frame_folder` found.

    Attributes:
        num_frames: consecutive frame files from ``start`` (what the reader can deliver).
        width, height: size of frame 0 (0 when it does not decode).
        error: the first missing or broken frame among those expected, named; ``None`` when all are good.
        first_missing: the file right after the consecutive run (``img_00020.jpg``), for count messages.
    """

    num_frames: int
    width: int = 0
    height: int = 0
    error: str | None = None
    first_missing: str | None = None


def guess_frame_template(names: Sequence[str]) -> str | None:
    """The ``str.format`` template of ``names`` when they look like extracted video frames: at least two files,
    all ``<prefix><number><.ext>`` with one prefix and extension, numbered consecutively from 0 or 1
    (``frame_0001.jpg``, ``frame_0002.jpg``, ...: ``frame_{:04d}.jpg``); ``None`` otherwise (ImageNet's sparse
    numbers, names without numbers)."""
    parts = [_NUMBERED.fullmatch(n) for n in names]
    if len(parts) < 2 or not all(parts) or len({(m.group(1), m.group(3)) for m in parts}) != 1:
        return None
    numbers = sorted(int(m.group(2)) for m in parts)
    if numbers[0] not in (0, 1) or numbers[-1] - numbers[0] != len(numbers) - 1:
        return None
    widths = {len(m.group(2)) for m in parts}
    padded = len(widths) == 1 and any(m.group(2).startswith("0") for m in parts)
    return parts[0].group(1) + (f"{{:0{widths.pop()}d}}" if padded else "{}") + parts[0].group(3)


def template_regex(template: str) -> re.Pattern[str]:
    """A regex matching the file names a ``str.format`` template with one integer field produces."""
    match = re.fullmatch(r"(.*?)\{[^{}]*\}(.*)", template)
    if match is None:
        raise ValueError(f"frame_template={template!r} must contain exactly one {{}} field, e.g. 'img_{{:05d}}.jpg'")
    return re.compile(re.escape(match.group(1)) + r"(\d+)" + re.escape(match.group(2)))


def check_frame_folder(path: str, template: str, start: int | None = None, declared: int | None = None) -> FolderCheck:
    """Check the frames of a folder that a manifest row uses.

    Args:
        path: the frame folder.
        template: frame file names (``img_{:05d}.jpg``).
        start: index of frame 0 in the file names (``None``: the reader's rule, 1 or 0).
        declared: the row's ``num_frames``; ``None`` expects every consecutive file from ``start``.

    Returns:
        A :class:`FolderCheck`. Frames past the consecutive run with more files after them are a hole (``error``);
        a run shorter than ``declared`` with nothing after it is a short count (``num_frames`` < ``declared``,
        no error), which ``check --fix`` corrects.
    """
    from videomae.data.readers import FrameFolderReader, ReaderError

    try:
        reader = FrameFolderReader(path, template, start)
    except ReaderError as e:
        return FolderCheck(0, error=str(e))
    start, run = reader.start, reader.num_frames
    missing = template.format(start + run)
    expected = run if declared is None else declared
    if run < expected or declared is None:
        pattern = template_regex(template)
        after = sorted(
            int(m.group(1))
            for m in map(pattern.fullmatch, os.listdir(path))
            if m and int(m.group(1)) > start + run and template.format(int(m.group(1))) == m.group(0)
        )
        if after:
            return FolderCheck(
                run,
                error=f"frame {run} ({missing}) is missing, but {len(after)} later frames exist "
                f"({template.format(after[0])} ... {template.format(after[-1])})",
                first_missing=missing,
            )
    if run == 0:
        return FolderCheck(0, error=f"no frames named {template!r} from index {start}", first_missing=missing)
    width = height = 0
    for i in range(min(run, expected)):
        name = template.format(start + i)
        problem = _file_problem(os.path.join(path, name))
        if problem is None:
            try:
                frame = reader.read([i])[0]
            except (ReaderError, OSError, ValueError, RuntimeError) as e:
                reason = str(e.__cause__ or e).replace(os.path.join(path, name), name)
                problem = f"does not decode ({reason})"
            else:
                if i == 0:
                    height, width = frame.shape[:2]
                elif frame.shape[:2] != (height, width):
                    problem = f"is {frame.shape[1]}x{frame.shape[0]} pixels, frame 0 is {width}x{height}"
        if problem is not None:
            return FolderCheck(run, width, height, error=f"frame {i} ({name}) {problem}", first_missing=missing)
    return FolderCheck(run, width, height, first_missing=missing)


def _file_problem(file: str) -> str | None:
    """Why ``file`` cannot be a frame (without opening it), or ``None``."""
    try:
        info = os.stat(file)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    for is_kind, kind in _FILE_KINDS:
        if is_kind(info.st_mode):
            return f"is not a regular file ({kind})"
    if info.st_size == 0:
        return "is empty (0 bytes)"
    return None
