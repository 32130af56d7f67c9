"""Manifest drill: crafted bad manifests and frame folders end in a clear message naming file, line and fix.

Each case once made a tool hang, crash with a traceback, guess, or pass silently (issue 13, item 2).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_frame_folder, write_video

from videomae.data.manifest import ManifestError, ManifestFormatError, read_manifest
from videomae.data.manifest_tools import check_manifest

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``videomae ...`` in a subprocess with a deadline, so a reader that loops fails the test instead of CI."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-m", "videomae.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=30
    )


def _main(*args: str, capsys) -> tuple[int, str]:
    """``videomae ...`` in this process: exit status and stdout (for cases that never hung)."""
    from videomae.cli import main

    code = main(list(args))
    return code, capsys.readouterr().out


def _check(path: Path, **kw):
    return check_manifest(path, workers=1, progress=False, timeout=10, **kw)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """a.mp4 (12 frames), b.mp4 (12 frames), frames/ok (20 JPEGs from 1)."""
    root = tmp_path_factory.mktemp("clips")
    write_video(root / "a.mp4", 12, options={"g": "6"})
    write_video(root / "b.mp4", 12, options={"g": "6"}, start=50)
    write_frame_folder(root / "frames" / "ok", 20)
    return root


# ---------------------------------------------------------------------------------------------------------------
# the reader: quotes, line endings, NUL bytes, separators


def test_unterminated_quote_names_its_line_and_check_ends(clips, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b'path,label\na.mp4,0\n"b.mp4,1\na.mp4,0\nb.mp4,1\n')
    with pytest.raises(ManifestError) as e:
        read_manifest(manifest)
    assert e.value.errors[0][0] == 3 and "never closed" in e.value.reason and "close the quote" in e.value.reason
    # the command used to loop forever re-blanking a blank line; now it ends, naming line 3
    out = _cli("manifest", "check", str(manifest), "--data-root", str(clips), "--workers", "1", "--quiet", cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert f'{manifest}:3: malformed: a quote (") opens on this line and is never closed' in out.stdout
    # the rows after the broken one are still checked (a plain duplicate of line 2 on line 4)
    assert f"{manifest}:4: duplicate" in out.stdout and "Traceback" not in out.stderr
    # --fix leaves out the broken line and the duplicate, and keeps the rest
    out = _cli(
        "manifest",
        "check",
        str(manifest),
        "--data-root",
        str(clips),
        "--workers",
        "1",
        "--quiet",
        "--fix",
        str(tmp_path / "fixed.csv"),
        cwd=tmp_path,
    )
    assert out.returncode == 1 and (tmp_path / "fixed.csv").read_text() == "path,label\na.mp4,0\nb.mp4,1\n"


def test_quote_closed_lines_later_is_reported_where_it_opens(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text('path,label\na.mp4,0\n"b.mp4,1\nc.mp4",1\nd.mp4,0\n')
    with pytest.raises(ManifestError) as e:
        read_manifest(manifest)
    assert e.value.errors == [
        (
            3,
            "column 'path' holds a line break: a quote (\") opens on this line and closes on "
            "line 4; close it on this line or remove it",
        )
    ]
    # a quoted line break inside a caption is content, not an error
    captions = tmp_path / "c.csv"
    captions.write_text('path,text\na.mp4,"two\nlines"\nb.mp4,one\n')
    rows = read_manifest(captions).rows
    assert [(r.path, r.text, r.line) for r in rows] == [("a.mp4", "two\nlines", 2), ("b.mp4", "one", 4)]


def test_fix_drops_every_line_of_a_multiline_record(clips, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text('path,text\nmissing.mp4,"a caption\nover two lines"\na.mp4,"kept\nas it is"\n')
    fixed = tmp_path / "fixed.csv"
    report = _check(manifest, data_root=clips, fix=fixed)
    assert [(p.line, p.kind) for p in report.problems] == [(2, "missing")]
    assert fixed.read_text() == 'path,text\na.mp4,"kept\nas it is"\n'


def test_cr_only_line_endings_read_like_unix_ones(clips, tmp_path, capsys):
    unix = "path,num_frames,label\na.mp4,12,0\n\nb.mp4,12,1\n"
    (tmp_path / "unix.csv").write_text(unix)
    (tmp_path / "mac.csv").write_bytes(unix.replace("\n", "\r").encode())
    (tmp_path / "mac.txt").write_bytes(b"a.mp4 0 -1\rb.mp4 0 12\r")  # an original list with old-Mac endings
    expected = [(r.path, r.num_frames, r.label, r.line) for r in read_manifest(tmp_path / "unix.csv").rows]
    assert expected == [("a.mp4", 12, 0, 2), ("b.mp4", 12, 1, 4)]
    assert [(r.path, r.num_frames, r.label, r.line) for r in read_manifest(tmp_path / "mac.csv").rows] == expected
    assert [(r.path, r.start, r.num_frames) for r in read_manifest(tmp_path / "mac.txt").rows] == [
        ("a.mp4", 0, None),
        ("b.mp4", 0, 12),
    ]
    code, out = _main(
        "manifest",
        "check",
        str(tmp_path / "mac.csv"),
        "--data-root",
        str(clips),
        "--quiet",
        "--workers",
        "1",
        capsys=capsys,
    )
    assert code == 0 and "2 rows, OK" in out, out


def test_mixed_line_endings_are_refused_on_their_line(clips, tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b"path,label\na.mp4,0\rb.mp4,1\nb.mp4,1\n")  # line 2 holds a stray \r
    with pytest.raises(ManifestError) as e:
        read_manifest(manifest)
    assert e.value.errors == [
        (
            2,
            "carriage return (\\r) inside the line: the file mixes old-Mac (\\r) and \\n line "
            "endings; save it with \\n line endings",
        )
    ]
    code, out = _main(
        "manifest", "check", str(manifest), "--data-root", str(clips), "--quiet", "--workers", "1", capsys=capsys
    )
    assert code == 1 and f"{manifest}:2: malformed: carriage return" in out


def test_nul_byte_in_a_path_is_refused_not_cut(clips, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b"path,label\nb.mp4,1\na.mp4\x00junk,0\n")  # cut at the NUL, the path is a real file
    with pytest.raises(ManifestError) as e:
        read_manifest(manifest)
    assert e.value.errors[0][0] == 3 and e.value.reason.startswith("NUL byte (\\x00) at column 6")
    report = _check(manifest, data_root=clips)
    assert [(p.line, p.kind) for p in report.problems] == [(3, "malformed")]
    assert "a.mp4" not in report.problems[0].message  # no other file is named missing or checked in its place


@pytest.mark.parametrize(
    "text, separator",
    [
        ("path;label\na.mp4;0\n", "semicolons"),
        ("Path\tnum_frames\tlabel\na.mp4\t12\t0\n", "tabs"),
        ("path label\na.mp4 0\n", "spaces"),
    ],
)
def test_other_separators_are_refused_with_use_commas(clips, tmp_path, capsys, text, separator):
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(ManifestFormatError) as e:
        read_manifest(manifest)
    assert e.value.line == 1 and f"is separated by {separator}" in e.value.reason and "use commas" in e.value.reason
    code, out = _main("manifest", "check", str(manifest), "--data-root", str(clips), "--quiet", capsys=capsys)
    assert code == 2 and f"{manifest}:1: malformed: the header" in out and "use commas" in out
    if separator != "spaces":  # read as CSV on request: the header has no 'path' column, and says why
        with pytest.raises(ManifestFormatError, match=f"no 'path' column .*separated by {separator}: use commas"):
            read_manifest(manifest, format="csv")


def test_unreadable_manifest_files_are_named_not_a_traceback(tmp_path, capsys):
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "latin1.csv").write_bytes("path,label\ncaf\xe9.mp4,0\n".encode("latin-1"))
    for name, reason in (("folder.csv", "cannot be read (Is a directory)"), ("latin1.csv", "not UTF-8 text")):
        code, out = _main("manifest", "check", str(tmp_path / name), "--quiet", capsys=capsys)
        assert code == 2 and f"{tmp_path / name}:0: malformed: {reason}" in out


def test_semicolon_rows_without_header_are_refused_but_tab_lists_read(tmp_path):
    manifest = tmp_path / "m.txt"
    manifest.write_text("a.mp4;0\nb.mp4;1\n")
    with pytest.raises(ManifestFormatError, match="every line is separated by semicolons.*use commas"):
        read_manifest(manifest)
    manifest.write_text("a.mp4\t3\nb.mp4\t0\n")  # whitespace-separated original list: tabs are whitespace
    m = read_manifest(manifest)
    assert m.format == "path_label" and [(r.path, r.label) for r in m.rows] == [("a.mp4", 3), ("b.mp4", 0)]


# ---------------------------------------------------------------------------------------------------------------
# labels


@pytest.mark.parametrize(
    "label, hint",
    [
        ("1.5", ""),
        ("3.0", " (3 written as a float, as pandas writes an integer column with empty cells)"),
        ("1e3", ""),
        ("+2", ""),
        ("-0.5", ""),
    ],
)
def test_non_integer_numbers_are_refused_as_labels(tmp_path, label, hint):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label\na.mp4,0\nb.mp4,{label}\nc.mp4,1\n")
    with pytest.raises(ManifestError) as e:
        read_manifest(manifest)
    assert e.value.errors == [
        (
            3,
            f"label {label!r} is a number but not an integer{hint}: a manifest's labels are all "
            "integer class ids (0, 1, ...) or all class names; write the class id or the "
            "class name",
        )
    ]
    (tmp_path / "l.txt").write_text(f"a.mp4 0\nb.mp4 {label}\n")  # the same rule for the original list format
    with pytest.raises(ManifestError, match=re.escape(f"l.txt:2: label '{label}' is a number but not an integer")):
        read_manifest(tmp_path / "l.txt")


def test_a_mix_of_ids_and_names_is_refused_naming_lines_of_each_kind(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.mp4,dog\nb.mp4,3\nc.mp4,cat\nd.mp4,dog\ne.mp4,1\nf.mp4,cow\nh.mp4,\n")
    with pytest.raises(ManifestError) as e:
        read_manifest(manifest)
    rule = "a manifest's labels are all integer class ids (0, 1, ...) or all class names"
    assert e.value.errors == [
        (
            3,
            f"label '3' is a class id but other rows use class names (lines 2, 4, 5, ... (4 rows)): {rule}; "
            "write this one as a class name",
        ),
        (
            6,
            f"label '1' is a class id but other rows use class names (lines 2, 4, 5, ... (4 rows)): {rule}; "
            "write this one as a class name",
        ),
    ]
    manifest.write_text("path,label\na.mp4,2\nb.mp4,dog\nc.mp4,0\n")  # names are the fewer here
    with pytest.raises(ManifestError) as e:
        read_manifest(manifest)
    assert e.value.errors == [
        (
            3,
            f"label 'dog' is a class name but other rows use class ids (lines 2, 4): {rule}; "
            "write this one as a class id",
        )
    ]
    # one kind per file reads as before: ids as they are, names by the sorted names (or the label map)
    manifest.write_text("path,label\na.mp4,3\nb.mp4,0\nc.mp4,\n")
    assert [r.label for r in read_manifest(manifest).rows] == [3, 0, None]
    manifest.write_text("path,label\na.mp4,zebra\nb.mp4,ant\n")
    assert [r.label for r in read_manifest(manifest).rows] == [1, 0]


def test_check_reports_label_kind_problems_and_fix_drops_only_those_rows(clips, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.mp4,dog\nb.mp4,3\nframes/ok,cat\n")
    fixed = tmp_path / "fixed.csv"
    report = _check(manifest, data_root=clips, fix=fixed)
    assert [(p.line, p.kind) for p in report.problems] == [(3, "malformed")]
    assert "label '3' is a class id but other rows use class names (lines 2, 4)" in report.problems[0].message
    assert fixed.read_text() == "path,label\na.mp4,dog\nframes/ok,cat\n" and report.kept == 2


# ---------------------------------------------------------------------------------------------------------------
# duplicates


def test_duplicate_with_another_label_is_a_conflict(clips, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.mp4,dog\nb.mp4,cat\n./a.mp4,cat\nb.mp4,cat\n")
    fixed = tmp_path / "fixed.csv"
    report = _check(manifest, data_root=clips, fix=fixed)
    assert [(p.line, p.kind) for p in report.problems] == [
        (2, "conflicting_labels"),
        (4, "conflicting_labels"),
        (5, "duplicate"),
    ]
    a = os.path.join(str(clips), "a.mp4")
    assert report.problems[0].message == (
        f"{a} is labelled 'dog' here but line 4 says 'cat': keep the row with the right label, delete the others"
    )
    assert "line 2 says 'dog'" in report.problems[1].message and "repeats line 3" in report.problems[2].message
    assert "summary: duplicate=1, conflicting_labels=2" in report.format()
    # neither label of a.mp4 can be trusted: both rows go; b.mp4 keeps its first row
    assert fixed.read_text() == "path,label\nb.mp4,cat\n"


# ---------------------------------------------------------------------------------------------------------------
# frame folders, frame by frame


def _folder(root: Path, name: str, n: int = 20) -> Path:
    return write_frame_folder(root / name, n)


def test_frame_folders_checked_frame_by_frame(tmp_path):
    root = tmp_path / "frames"
    _folder(root, "ok")
    (_folder(root, "empty") / "img_00010.jpg").write_bytes(b"")
    os.remove(_folder(root, "fifo") / "img_00007.jpg")
    os.mkfifo(root / "fifo" / "img_00007.jpg")  # opening it would block forever: it must never be opened
    (_folder(root, "junk") / "img_00015.jpg").write_bytes(b"not a jpeg at all" * 10)
    os.remove(_folder(root, "hole") / "img_00012.jpg")
    os.remove(_folder(root, "short") / "img_00020.jpg")
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,start,num_frames\nok,1,20\nempty,1,20\nfifo,1,20\njunk,1,20\nhole,1,20\nhole,,\nshort,1,20\n"
    )
    fixed = tmp_path / "fixed.csv"
    report = _check(manifest, data_root=root, num_frames=8, sampling_rate=2, fix=fixed)
    found = {p.line: (p.kind, p.message.removeprefix(str(root) + os.sep)) for p in report.problems}
    assert found == {
        3: ("undecodable", "empty: frame 9 (img_00010.jpg) is empty (0 bytes)"),
        4: ("undecodable", "fifo: frame 6 (img_00007.jpg) is not a regular file (a FIFO)"),
        5: ("undecodable", found[5][1]),
        6: (
            "undecodable",
            "hole: frame 11 (img_00012.jpg) is missing, but 8 later frames exist (img_00013.jpg ... img_00020.jpg)",
        ),
        7: (
            "undecodable",
            "hole: frame 11 (img_00012.jpg) is missing, but 8 later frames exist (img_00013.jpg ... img_00020.jpg)",
        ),
        8: (
            "frame_count",
            "short: the row declares num_frames=20, only 19 decode (img_00020.jpg is missing); "
            "--fix writes the decodable count",
        ),
    }
    assert found[5][1] == "junk: frame 14 (img_00015.jpg) does not decode (cannot identify image file 'img_00015.jpg')"
    # the broken folders go; the folder with a missing last frame stays, with its count corrected
    assert fixed.read_text() == "path,start,num_frames\nok,1,20\nshort,1,19\n"
    assert (report.kept, report.corrected) == (2, 1)
    assert _check(fixed, data_root=root, num_frames=8, sampling_rate=2).ok


def test_a_broken_frame_past_the_declared_count_does_not_matter(tmp_path):
    (_folder(tmp_path, "clip") / "img_00020.jpg").write_bytes(b"")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,start,num_frames\nclip,1,19\nclip,2,18\n")
    assert _check(manifest, data_root=tmp_path).ok


# ---------------------------------------------------------------------------------------------------------------
# --fix corrects counts


def test_fix_corrects_an_off_by_one_count_and_drops_only_unusable_rows(clips, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(
        b'path,num_frames,label,text\r\na.mp4,13,0,"one, two"\r\nb.mp4,40,1,x\r\nmissing.mp4,12,0,y\r\nb.mp4,12,1,z\r\n'
    )
    fixed = tmp_path / "fixed.csv"
    report = _check(manifest, data_root=clips, num_frames=4, sampling_rate=3, fix=fixed)
    assert [(p.line, p.kind) for p in report.problems] == [
        (2, "frame_count"),
        (3, "frame_count"),
        (4, "missing"),
        (5, "duplicate"),
    ]
    # both videos hold 12 frames: their rows stay with 12 (other fields, quoting and CRLF as they were)
    assert fixed.read_bytes() == b'path,num_frames,label,text\r\na.mp4,12,0,"one, two"\r\nb.mp4,12,1,x\r\n'
    assert (report.kept, report.corrected) == (2, 2)
    listed = tmp_path / "m.txt"  # the original `path start total` list: the total field is corrected
    listed.write_text(f"{clips}/a.mp4 0 13\n{clips}/b.mp4 0 -1\n{clips}/frames/ok 1 21\n{clips}/frames/ok 14 10\n")
    report = _check(listed, num_frames=5, sampling_rate=2, fix=tmp_path / "fixed.txt")
    assert [(p.line, p.kind) for p in report.problems] == [
        (1, "frame_count"),
        (3, "frame_count"),
        (4, "frame_count"),
        (4, "too_short"),
    ]
    # the folder from file 14 holds 7 frames, fewer than the 9 a clip spans: that row alone goes
    assert (tmp_path / "fixed.txt").read_text() == (f"{clips}/a.mp4 0 12\n{clips}/b.mp4 0 -1\n{clips}/frames/ok 1 20\n")
    assert (report.kept, report.corrected) == (3, 2)


def test_build_refuses_folder_labels_that_break_the_rule_before_probing(clips, tmp_path):
    from videomae.data.manifest_tools import build_manifest

    for sub in ("3", "dog"):
        (tmp_path / "root" / sub).mkdir(parents=True)
        (tmp_path / "root" / sub / "clip.mp4").write_bytes((clips / "a.mp4").read_bytes())
    with pytest.raises(ValueError, match=r"\['3'\] are class ids and \['dog'\] class names: a manifest's labels"):
        build_manifest(tmp_path / "root", tmp_path / "m.csv", labels_from_subfolders=True, workers=1, progress=False)
    assert not (tmp_path / "m.csv").exists()
