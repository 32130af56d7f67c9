"""Physical lines of a manifest file: line endings, NUL bytes, and CSV records with the lines they span.

One splitting rule serves the reader, ``check`` and ``check --fix``, so every tool names the same line:

* Lines end at ``\\n`` (a ``\\r`` just before it is part of the ending, as in Windows files). A file with no
  ``\\n`` at all but with ``\\r`` is an old Mac OS file: its lines end at ``\\r``. Both conventions are
  unambiguous and read as such.
* A ``\\r`` left inside a line (a file mixing ``\\r`` and ``\\n`` endings) or a NUL byte (binary damage; also
  what C code would silently cut a path at) is refused for that line: neither can be told apart from damage.
* CSV records are parsed strictly. A quote that never closes would swallow the rest of the file into one field,
  and a quote closed too late joins lines into one record; both are reported at the line where the quote opens.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

__all__ = ["CsvRecord", "clean_lines", "csv_records", "line_content", "split_lines"]


def split_lines(text: str) -> list[str]:
    """The physical lines of ``text``, each with its line ending (the last one may have none)."""
    sep = "\r" if "\r" in text and "\n" not in text else "\n"
    parts = text.split(sep)
    lines = [part + sep for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def line_content(line: str) -> str:
    """A physical line without its ending (``\\n``, ``\\r\\n`` or ``\\r``)."""
    return line.removesuffix("\n").removesuffix("\r")


def clean_lines(lines: list[str]) -> tuple[list[str], list[tuple[int, str]]]:
    """The contents of ``lines``, with lines holding a NUL byte or a stray ``\\r`` blanked and reported.

    Returns:
        The contents (same length as ``lines``) and ``(line, reason)`` for every refused line.
    """
    contents, errors = [], []
    for number, line in enumerate(lines, 1):
        text = line_content(line)
        if "\x00" in text:
            errors.append(
                (
                    number,
                    f"NUL byte (\\x00) at column {text.index(chr(0)) + 1}: the line is damaged "
                    "(binary data in a text file); remove the NUL bytes or rewrite the line",
                )
            )
            text = ""
        elif "\r" in text:
            errors.append(
                (
                    number,
                    "carriage return (\\r) inside the line: the file mixes old-Mac (\\r) and \\n line "
                    "endings; save it with \\n line endings",
                )
            )
            text = ""
        contents.append(text)
    return contents, errors


@dataclass(frozen=True)
class CsvRecord:
    """One CSV record: its fields and the 1-based lines ``first..last`` it spans (equal unless a quoted field
    holds a line break)."""

    first: int
    last: int
    fields: list[str]


def csv_records(contents: list[str]) -> tuple[list[CsvRecord], list[tuple[int, str]]]:
    """Parse CSV records from line contents, each with its span; errors name the line where a bad quote opens.

    Returns:
        The records (blank lines give records without fields) and ``(line, reason)`` for every part that is not
        valid CSV. The parser never runs past the end of ``contents``: an unclosed quote ends the records.
    """
    reader = csv.reader((c + "\n" for c in contents), strict=True)
    records: list[CsvRecord] = []
    errors: list[tuple[int, str]] = []
    consumed = 0
    while True:
        first = consumed + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            last = reader.line_num
            opened = multiline_quote(contents, first, last)
            if opened is not None and opened[1] is None:
                errors.append(
                    (
                        opened[0],
                        'a quote (") opens on this line and is never closed, so the rest of the '
                        "file would be one field: close the quote or remove it",
                    )
                )
            elif opened is not None:
                errors.append(
                    (
                        opened[0],
                        f'a quote (") opens on this line and runs to line {last}, where the CSV '
                        f"breaks ({e}): close the quote on this line or remove it",
                    )
                )
            else:
                errors.append(
                    (last, f'not valid CSV ({e}): quote a whole field ("...") and double every quote inside it ("")')
                )
            consumed = reader.line_num
            continue
        consumed = reader.line_num
        records.append(CsvRecord(first, consumed, fields))
    return records, errors


def multiline_quote(contents: list[str], first: int, last: int) -> tuple[int, int | None] | None:
    """The first quoted field of lines ``first..last`` that spans a line break: ``(line it opens on, line it
    closes on or None)``; ``None`` when every quoted field closes on its own line."""
    opened: int | None = None
    at_field_start = True
    for number in range(first, last + 1):
        text = contents[number - 1]
        i = 0
        while i < len(text):
            c = text[i]
            if opened is not None:
                if c == '"' and text[i + 1 : i + 2] == '"':
                    i += 1  # a doubled quote inside a quoted field
                elif c == '"':
                    if opened != number:
                        return opened, number
                    opened = None
                at_field_start = False
            elif c == '"' and at_field_start:
                opened, at_field_start = number, False
            else:
                at_field_start = c == ","
            i += 1
        if opened is None:
            at_field_start = True
    return None if opened is None else (opened, None)
