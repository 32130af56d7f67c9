"""``videomae manifest check --fix``: a copy of the manifest without its unusable rows and with corrected counts.

Every kept line is written byte for byte (line endings, quoting, a byte-order mark, blank lines); a row whose
``num_frames`` is larger than what decodes is rewritten with the decodable count, its other fields unchanged.
"""

from __future__ import annotations

import csv
import io
import os

from videomae.data.manifest_lines import csv_records, line_content

__all__ = ["write_fixed"]

_LIST_COUNT_FIELD = {"path_start_total": 2, "folder_total_label": 1}  # where a list format keeps its frame count


def write_fixed(
    out: str | os.PathLike, lines: list[str], work: list[str], format: str, drop: set[int], counts: dict[int, int]
) -> None:
    """Write the cleaned copy.

    Args:
        out: the file to write.
        lines: the manifest's physical lines, with their endings.
        work: the same lines with the refused ones blanked (what finally parsed cleanly).
        format: ``"csv"`` or a list format.
        drop: first lines of the rows to leave out.
        counts: first line of a row -> the ``num_frames`` to write instead of the declared one.
    """
    text = list(lines)
    for number, (line, kept) in enumerate(zip(lines, work), 1):
        if line != kept:  # refused while reading (malformed, unknown label...): left out
            text[number - 1] = ""
    contents = [line_content(w) for w in work]
    if contents:
        contents[0] = contents[0].removeprefix("\ufeff")
    if format == "csv":
        records, _ = csv_records(contents)
        header: list[str] | None = None
        for record in records:
            if not any(f.strip() for f in record.fields):
                continue
            if header is None:
                header = [f.strip().lower() for f in record.fields]
                continue
            span = range(record.first - 1, record.last)
            if record.first in drop:
                for i in span:
                    text[i] = ""
            elif record.first in counts:
                fields = list(record.fields)
                fields[header.index("num_frames")] = str(counts[record.first])
                buffer = io.StringIO()
                csv.writer(buffer, lineterminator="").writerow(fields)
                for i in span:
                    text[i] = ""
                text[record.first - 1] = buffer.getvalue() + _ending(lines[record.last - 1])
    else:
        for number, content in enumerate(contents, 1):
            if number in drop:
                text[number - 1] = ""
            elif number in counts:
                fields = content.split()
                fields[_LIST_COUNT_FIELD[format]] = str(counts[number])
                text[number - 1] = " ".join(fields) + _ending(lines[number - 1])
    with open(out, "w", encoding="utf-8", newline="") as f:
        f.writelines(text)


def _ending(line: str) -> str:
    return line[len(line_content(line)) :]
