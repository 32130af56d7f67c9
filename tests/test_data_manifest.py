"""Manifests: CSV and the original list formats, validation errors with line numbers, labels, round trip."""

from __future__ import annotations

import os

import pytest

from videomae.data.manifest import ManifestError, ManifestRow, read_manifest, write_manifest


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_columns_types_extra_and_data_root(tmp_path):
    path = write(
        tmp_path,
        "m.csv",
        "path,start,num_frames,label,source,text,fps,width,height,duration,split\n"
        "a.mp4,0,120,3,k400,a dog runs,29.97,340,256,4.004,train\n"
        "/abs/frames_b,1,30,,ssv2,,,,,,\n",
    )
    m = read_manifest(path, data_root="/data")
    assert m.format == "csv" and m.label_names is None
    a, b = m.rows
    assert a == ManifestRow(
        path="/data/a.mp4",
        start=0,
        num_frames=120,
        label=3,
        source="k400",
        text="a dog runs",
        fps=29.97,
        width=340,
        height=256,
        duration=4.004,
        line=2,
        manifest=str(path),
        extra={"split": "train"},
    )
    assert b.path == "/abs/frames_b" and b.start == 1 and b.label is None and b.fps is None and b.line == 3


def test_class_names_sorted_and_label_map(tmp_path):
    path = write(tmp_path, "m.csv", "path,label\na.mp4,zebra\nb.mp4,ant\nc.mp4,zebra\nd.mp4,\n")
    m = read_manifest(path)
    assert m.label_names == ["ant", "zebra"]
    assert [r.label for r in m.rows] == [1, 0, 1, None]
    label_map = write(tmp_path, "labels.txt", "zebra\nant\nbee\n")
    m = read_manifest(path, label_map=label_map)
    assert m.label_names == ["zebra", "ant", "bee"]
    assert [r.label for r in m.rows] == [0, 1, 0, None]
    with pytest.raises(ManifestError) as e:
        read_manifest(write(tmp_path, "n.csv", "path,label\na.mp4,zebr\n"), label_map=label_map)
    assert e.value.line == 2 and "unknown class name 'zebr'" in e.value.reason and "zebra" in e.value.reason


def test_integer_labels_checked_against_label_map(tmp_path):
    path = write(tmp_path, "m.csv", "path,label\na.mp4,0\nb.mp4,2\n")
    assert read_manifest(path, label_map=["x", "y", "z"]).label_names == ["x", "y", "z"]
    with pytest.raises(ManifestError, match=r"m.csv:3: label=2 is outside the label map \(2 classes\)"):
        read_manifest(path, label_map=["x", "y"])


def test_errors_collected_with_file_and_line(tmp_path):
    path = write(
        tmp_path,
        "bad.csv",
        "path,start,num_frames,fps\n"
        "ok.mp4,0,10,25\n"
        ",0,10,25\n"  # line 3: empty path
        "b.mp4,-1,ten,25\n"  # line 4: negative start, non-integer num_frames
        "c.mp4,0\n"  # line 5: wrong column count
        "\n"
        "d.mp4,0,0,-3\n",
    )  # line 7: num_frames 0, negative fps
    with pytest.raises(ManifestError) as e:
        read_manifest(path)
    err = e.value
    assert err.file == str(path) and err.line == 3 and err.reason == "empty path"
    assert err.errors == [
        (3, "empty path"),
        (4, "start=-1 must be >= 0"),
        (4, "num_frames='ten' is not an integer"),
        (5, "2 columns, the header has 4"),
        (7, "num_frames=0 must be >= 1"),
        (7, "fps=-3 must be a positive finite number"),
    ]
    assert f"{path}:4: start=-1 must be >= 0" in str(err)
    assert isinstance(err, ValueError)


def test_error_report_is_capped(tmp_path):
    path = write(tmp_path, "bad.csv", "path,start\n" + "".join(f"v{i}.mp4,x\n" for i in range(30)))
    with pytest.raises(ManifestError) as e:
        read_manifest(path, max_errors=5)
    assert len(e.value.errors) == 30
    assert "... and 25 more" in str(e.value) and str(e.value).count("is not an integer") == 5


@pytest.mark.parametrize(
    "header, message",
    [
        ("video,label", "no 'path' column"),
        ("path,lable", "'lable' looks like a misspelling of 'label'"),
        ("path,label,label", "duplicate columns"),
    ],
)
def test_bad_headers(tmp_path, header, message):
    with pytest.raises(ManifestError, match=message) as e:
        read_manifest(write(tmp_path, "m.csv", header + "\na.mp4,1,2\n"))
    assert e.value.line == 1


def test_spreadsheet_export_with_bom_and_crlf(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffpath,label\r\na.mp4,1\r\n".encode())
    m = read_manifest(path)
    assert [(r.path, r.label, r.line) for r in m.rows] == [("a.mp4", 1, 2)]


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(ManifestError, match="no rows"):
        read_manifest(write(tmp_path, "e.csv", "path,label\n"))
    with pytest.raises(ManifestError, match="file not found"):
        read_manifest(tmp_path / "nope.csv")


def test_list_path_start_total(tmp_path):
    # VideoMAE V2 pretraining list: video files with total -1, frame folders with start and total
    path = write(tmp_path, "pre.txt", "k400/a.mp4 0 -1\nssv2/12 1 47\n")
    m = read_manifest(path, data_root="/d")
    assert m.format == "path_start_total"
    assert [(r.path, r.start, r.num_frames, r.label, r.line) for r in m.rows] == [
        ("/d/k400/a.mp4", 0, None, None, 1),
        ("/d/ssv2/12", 1, 47, None, 2),
    ]


def test_list_path_label_and_folder_total_label(tmp_path):
    m = read_manifest(write(tmp_path, "k.txt", "a.mp4 3\nb.mp4 0\n"))
    assert m.format == "path_label" and [r.label for r in m.rows] == [3, 0]
    m = read_manifest(write(tmp_path, "s.txt", "78687 49 12\n42326 37 3\n"))
    assert m.format == "folder_total_label"
    assert [(r.path, r.num_frames, r.label, r.start) for r in m.rows] == [
        ("78687", 49, 12, None),
        ("42326", 37, 3, None),
    ]
    m = read_manifest(write(tmp_path, "p.txt", "a.mp4\nb.mp4\n"))
    assert m.format == "path" and [r.label for r in m.rows] == [None, None]


def test_three_column_rule_and_explicit_format(tmp_path):
    # middle column 0/1 on every row reads as `folder start total` ...
    ambiguous = write(tmp_path, "amb.txt", "f/a 1 30\nf/b 0 12\n")
    m = read_manifest(ambiguous)
    assert m.format == "path_start_total" and [(r.start, r.num_frames) for r in m.rows] == [(1, 30), (0, 12)]
    # ... a -1 total anywhere too; otherwise it is `folder total label`
    assert read_manifest(write(tmp_path, "v.txt", "a.mp4 5 -1\n")).format == "path_start_total"
    assert read_manifest(write(tmp_path, "s.txt", "f/a 1 30\nf/b 2 12\n")).format == "folder_total_label"
    # an explicit format overrides the rule
    m = read_manifest(write(tmp_path, "amb2.txt", "f/a 1 30\nf/b 1 12\n"), format="folder_total_label")
    assert [(r.num_frames, r.label, r.start) for r in m.rows] == [(1, 30, None), (1, 12, None)]
    with pytest.raises(ManifestError, match="total=0 must be >= 1"):
        read_manifest(write(tmp_path, "z.txt", "f/a 0 30\n"), format="folder_total_label")
    with pytest.raises(ValueError, match="format='tsv'"):
        read_manifest(ambiguous, format="tsv")


def test_list_errors_have_line_numbers(tmp_path):
    with pytest.raises(ManifestError) as e:
        read_manifest(write(tmp_path, "l.txt", "a.mp4 0 -1\nb.mp4 0\nc.mp4 0 -1\n"))
    assert e.value.errors == [(2, "2 columns, the first line has 3")]
    with pytest.raises(ManifestError) as e:
        read_manifest(write(tmp_path, "l2.txt", "a.mp4 0 -1\nb.mp4 x -1\n"), format="path_start_total")
    assert e.value.errors == [(2, "start='x' is not an integer")]


def test_write_read_round_trip(tmp_path):
    rows = [
        ManifestRow(
            path=str(tmp_path / "videos" / "a.mp4"),
            num_frames=40,
            label=1,
            fps=25.0,
            width=96,
            height=64,
            text="two words, with comma",
            extra={"split": "val"},
        ),
        ManifestRow(path="/elsewhere/b", start=1, num_frames=12, label=0),
    ]
    out = tmp_path / "out" / "m.csv"
    write_manifest(rows, out, label_names=["cat", "dog"], data_root=tmp_path)
    text = out.read_text().splitlines()
    assert text[0] == "path,start,num_frames,label,text,fps,width,height,split"
    assert text[1] == f'{os.path.join("videos", "a.mp4")},,40,dog,"two words, with comma",25.0,96,64,val'
    back = read_manifest(out, data_root=tmp_path)
    assert back.label_names == ["cat", "dog"]
    for orig, new in zip(rows, back.rows):
        assert (new.path, new.start, new.num_frames, new.label, new.text, new.fps, new.extra.get("split", "")) == (
            orig.path,
            orig.start,
            orig.num_frames,
            orig.label,
            orig.text,
            orig.fps,
            orig.extra.get("split", ""),
        )
