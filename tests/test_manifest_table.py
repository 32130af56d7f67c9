"""Columnar manifests: every field round-trips, the numpy fast path gives exactly the line-by-line parser's rows
and errors, ``dataset.row(i)``, small pickles, and no per-row objects (a forked reader does not grow)."""

from __future__ import annotations

import gc
import os
import pickle
import random
import sys

import numpy as np
import pytest

from videomae.data.datasets import HybridVideoDataset, SourceSpec
from videomae.data.manifest import ManifestError, ManifestRow, read_manifest, read_manifest_table, write_manifest
from videomae.data.manifest_fast import fast_table
from videomae.data.manifest_table import ManifestTable, StringColumn

ODD_PATHS = [
    "clips/vidéo été/日本語 ünïcödé.mp4",
    "clips/a,b,c.mp4",  # commas: quoted by the writer
    'clips/say "hi".mp4',  # quotes: doubled by the writer
    "/abs/" + "deep/" * 400 + "long.mp4",  # a 2 KB path
    "clips/emoji 🎬.webm",
]


def odd_rows() -> list[ManifestRow]:
    rows = []
    for i, path in enumerate(ODD_PATHS * 3):
        rows.append(
            ManifestRow(
                path=path,
                start=i if i % 2 else None,
                num_frames=10 + i,
                label=i % 3 if i % 4 else None,
                source=["k400", "ssv2", None][i % 3],
                text=f"a caption, with a comma and “quotes” {i}" if i % 2 else None,
                fps=[29.97, 25.0, None][i % 3],
                width=320 + i,
                height=240 if i % 5 else None,
                duration=[12.5, None, 3.0][i % 3],
                extra={"split": ["train", "val", ""][i % 3], "youtube_id": f"yt_{i:04d}"},
            )
        )
    return rows


def test_string_column_round_trips_any_text():
    values = ["", "a", "日本語", "x" * 5000, "", '🎬,"q"']
    column = StringColumn.from_strings(values)
    assert [column[i] for i in range(len(column))] == values
    assert column.offsets.dtype == np.int64 and isinstance(column.data, bytes)
    with pytest.raises(ValueError, match="offsets"):
        StringColumn(b"abc", np.array([0, 2], np.int64))


@pytest.mark.parametrize("data_root", [None, "/mnt/data"])
def test_every_field_round_trips_through_the_fast_path(tmp_path, data_root):
    names = ["archery", "bowling", "cooking"]
    manifest = tmp_path / "odd.csv"
    write_manifest(odd_rows(), manifest, label_names=names)
    # the file is clean CSV (quoted fields, unicode, long lines): the numpy path reads it, not the fallback
    fast = fast_table(str(manifest), "auto", None, data_root)
    assert fast is not None
    careful = read_manifest(manifest, data_root)
    table = read_manifest_table(manifest, data_root)
    assert len(table) == len(careful.rows) == len(ODD_PATHS) * 3
    assert table.label_names == careful.label_names == names
    assert [table.row(i) for i in range(len(table))] == careful.rows == list(table.rows)
    assert [fast.row(i) for i in range(len(fast))] == careful.rows
    # what was written comes back, field by field (paths joined to the root when relative)
    for made, back in zip(odd_rows(), table.rows):
        expected = os.path.join(data_root, made.path) if data_root and not made.path.startswith("/") else made.path
        assert back.path == expected
        for field in ("start", "num_frames", "source", "text", "fps", "width", "height", "duration", "extra"):
            assert getattr(back, field) == getattr(made, field), field
        assert back.label == made.label and back.manifest == str(manifest)
    assert table.rows[-1] == table.row(len(table) - 1) and table.rows[2:4] == careful.rows[2:4]


def test_a_manifest_made_in_code_becomes_the_same_table(tmp_path):
    manifest = tmp_path / "odd.csv"
    write_manifest(odd_rows(), manifest, label_names=["a", "b", "c"])
    careful = read_manifest(manifest)
    table = ManifestTable.from_manifest(careful)
    assert list(table.rows) == careful.rows
    assert table.numbers.keys() == read_manifest_table(manifest).numbers.keys()


# Texts that must read alike both ways: the good ones to the same rows, the bad ones to the same error.
CORPUS = {
    "plain": "path,num_frames,label\na.mp4,10,cat\nb.mp4,20,dog\n",
    "ids and label map": "path,label\na.mp4,1\nb.mp4,0\n",
    "no final newline": "path,label\na.mp4,cat\nb.mp4,dog",
    "crlf + bom": "\ufeffpath,label\r\na.mp4,cat\r\nb.mp4,dog\r\n",
    "blank lines": "\npath,label\n\na.mp4,cat\n\n\nb.mp4,dog\n\n",
    "one column": "path\na.mp4\nb.mp4\n",
    "quoted header": '"path","label"\n"a.mp4",cat\nb.mp4,dog\n',
    "odd numbers python accepts": "path,num_frames,start,fps\na.mp4,+12,0,1e1\nb.mp4,1_000,٣,.5\n",
    "padded fields": "path , label\n a.mp4 ,cat\nb.mp4,\u00a0dog\u00a0\n",
    "unicode edges": "path,label\nétoile.mp4,chat\nb.mp4,ñandú\n",
    "all-empty row": "path,label\na.mp4,cat\n,\nb.mp4,dog\n",
    "quoted multiline text": 'path,text\na.mp4,"two\nlines"\nb.mp4,one\n',
    "extra + empty values": "path,split,label,source\na.mp4,train,,k400\nb.mp4,,cat,\n",
    "list path_start_total": "a.mp4 0 -1\nb.mp4 0 -1\n",
    "list folder_total_label": "f/a 30 1\nf/b 40 0\n",
    "list rule on a later line": "f/a 30 1\nf/b 0 -1\n",  # -1 on line 2 makes it path_start_total
    "list path_label names": "a.mp4 cat\r\n\nb.mp4 dog\r\n",
    "list one column": "a.mp4\nb.mp4\n",
    "list unicode path": "vidéo.mp4 0 -1\n日本.mp4 3 100\n",
    "list tabs": "a.mp4\t0\t-1\nb.mp4 0 -1\n",
    "list double space": "a.mp4  0 -1\nb.mp4 0 -1\n",
    "list unicode space": "a\u00a0b.mp4 0 -1\nc.mp4 0 -1\n",
    "list bad total": "a.mp4 0 -1\nb.mp4 0 0\n",
    "list negative start": "a.mp4 0 -1\nb.mp4 -2 5\n",
    "list semicolons": "a;b.mp4 0 -1\nc.mp4 0 -1\n",
    "list width": "a.mp4 0 -1\nb.mp4 0\n",
    "empty path": "path,label\n,cat\nb.mp4,dog\n",
    "bad int": "path,num_frames\na.mp4,ten\nb.mp4,0\n",
    "bad floats": "path,fps,duration\na.mp4,nan,inf\nb.mp4,-1,0\n",
    "float label": "path,label\na.mp4,1.0\nb.mp4,2\n",
    "mixed labels": "path,label\na.mp4,3\nb.mp4,dog\nc.mp4,cat\n",
    "negative label": "path,label\na.mp4,-1\n",
    "label outside map": "path,label\na.mp4,7\n",
    "unknown class": "path,label\na.mp4,zebra\n",
    "column count": "path,label\na.mp4,cat,extra\nb.mp4\n",
    "header typo": "path,lable\na.mp4,cat\n",
    "semicolons": "path;label\na.mp4;cat\n",
    "unclosed quote": 'path,label\n"a.mp4,cat\nb.mp4,dog\n',
    "text after quote": 'path,label\n"a.mp4"x,cat\n',
    "nul byte": "path,label\na.mp\x004,cat\n",
    "old mac": "path,label\ra.mp4,cat\rb.mp4,dog\r",
    "stray cr": "path,label\na.mp4,cat\rb.mp4,dog\n",
    "header only": "path,label\n",
    "empty": "",
}


def outcome(read, manifest, *args, **kwargs) -> tuple:
    """What ``read`` gives: the rows, class names and format, or the error's type and message."""
    try:
        result = read(manifest, *args, **kwargs)
    except ManifestError as e:
        return type(e), str(e)
    return list(result.rows), result.label_names, result.format


@pytest.mark.parametrize("name", list(CORPUS))
def test_fast_path_and_line_by_line_parser_agree(tmp_path, name):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(CORPUS[name].encode())
    label_map = (
        ["cat", "dog"] if name in ("ids and label map", "label outside map", "list folder_total_label") else None
    )
    expected = outcome(read_manifest, manifest, "/root", label_map=label_map)
    assert outcome(read_manifest_table, manifest, "/root", label_map=label_map) == expected


def test_fast_path_takes_clean_files_and_leaves_the_rest():
    def fast(text: str, tmp: str = "/tmp") -> bool:
        path = os.path.join(tmp, f"fast_{os.getpid()}.csv")
        with open(path, "wb") as f:
            f.write(text.encode())
        try:
            return fast_table(path, "auto", None, None) is not None
        finally:
            os.remove(path)

    for name in (
        "plain",
        "no final newline",
        "crlf + bom",
        "blank lines",
        "one column",
        "unicode edges",
        "quoted header",
    ):
        assert fast(CORPUS[name]), name
    for name in ("list path_start_total", "list rule on a later line", "list path_label names", "list unicode path"):
        assert fast(CORPUS[name]), name
    for name in ("padded fields", "quoted multiline text", "empty path", "bad int", "mixed labels", "list tabs"):
        assert not fast(CORPUS[name]), name
    for name in ("list double space", "list unicode space", "list bad total", "list semicolons", "list width"):
        assert not fast(CORPUS[name]), name


@pytest.mark.parametrize("format", ["csv", "path", "path_label", "path_start_total", "folder_total_label"])
@pytest.mark.parametrize("name", ["plain", "list folder_total_label", "list path_label names", "list one column"])
def test_an_explicit_format_reads_alike_both_ways(tmp_path, name, format):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(CORPUS[name].encode())
    assert outcome(read_manifest_table, manifest, format=format) == outcome(read_manifest, manifest, format=format)


def two_sources(tmp_path) -> HybridVideoDataset:
    (tmp_path / "a.csv").write_text("path,label,num_frames\nx/1.mp4,dog,10\n/abs/2.mp4,cat,\n")
    (tmp_path / "b.txt").write_text("v/3.mp4 1\nv/4.mp4 0\nv/5.mp4 1\n")  # a list file
    return HybridVideoDataset(
        [SourceSpec(tmp_path / "a.csv", data_root="/data"), SourceSpec(tmp_path / "b.txt", label_map=["emu", "dog"])],
        num_frames=4,
        sampling_rate=2,
    )


def test_dataset_row_matches_the_parsed_rows(tmp_path):
    ds = two_sources(tmp_path)
    parsed = read_manifest(tmp_path / "a.csv", "/data").rows + read_manifest(tmp_path / "b.txt").rows
    assert ds.label_names == ["cat", "dog", "emu"] and ds.labels.tolist() == [1, 0, 1, 2, 1]
    for i, want in enumerate(parsed):
        got = ds.row(i)
        assert (got.path, got.line, got.manifest, got.num_frames) == (
            want.path,
            want.line,
            want.manifest,
            want.num_frames,
        )
        assert got.label == ds.labels[i]  # in the dataset's merged label space
    assert [r.path for r in ds.rows] == ["/data/x/1.mp4", "/abs/2.mp4", "v/3.mp4", "v/4.mp4", "v/5.mp4"]
    assert len(ds.rows) == len(ds) == 5 and ds.rows[-1].line == 3
    with pytest.raises(IndexError):
        ds.rows[5]
    with pytest.raises(IndexError):
        ds.row(-1)


def test_pickled_dataset_stays_small(tmp_path):
    rows = [ManifestRow(path=f"videos/class_{i % 700:03d}/clip_{i:08d}.mp4", num_frames=300, label=i % 700) for i in
            range(20_000)]  # fmt: skip
    names = [f"class_{k:03d}" for k in range(700)]
    write_manifest(rows, tmp_path / "big.csv", label_names=names)
    ds = HybridVideoDataset([SourceSpec(tmp_path / "big.csv")], num_frames=4, sampling_rate=2)
    blob = pickle.dumps(ds)
    columns = sum(t.nbytes() for t in ds._tables) + ds.labels.nbytes + ds._row_source.nbytes
    assert len(blob) < columns + 200_000  # the arrays' bytes plus a constant, nothing per row
    assert columns < 100 * len(ds)
    back = pickle.loads(blob)
    assert back.row(12_345) == ds.row(12_345) and back.labels.tolist() == ds.labels.tolist()


def reachable_objects(root: object) -> int:
    """Python objects reachable from ``root`` (containers and leaves), stopping at modules and classes."""
    seen, todo = set(), [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, (type, type(sys))):
            continue
        seen.add(id(obj))
        todo += gc.get_referents(obj)
    return len(seen)


def test_no_python_object_per_row(tmp_path):
    counts = []
    for n in (1_000, 10_000):
        rows = [ManifestRow(path=f"v/{i}.mp4", num_frames=30, label=i % 3, source="k", extra={"s": "t"})
                for i in range(n)]  # fmt: skip
        write_manifest(rows, tmp_path / f"{n}.csv", label_names=["a", "b", "c"])
        ds = HybridVideoDataset([SourceSpec(tmp_path / f"{n}.csv")], num_frames=4, sampling_rate=2)
        counts.append(reachable_objects(ds))
    assert counts[0] == counts[1]  # ten times the rows, not one object more


def private_kb() -> int:
    with open("/proc/self/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith("Private_"))


def growth_of_a_forked_reader(touch) -> int:
    """KB of private memory a forked child gains by running ``touch()``."""
    gc.collect()
    gc.freeze()  # the parent's other objects stay out of the child's collections: only ``touch`` counts
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        before = private_kb()
        touch()
        os.write(write, str(private_kb() - before).encode())
        os._exit(0)
    os.close(write)
    grown = int(os.read(read, 64))
    os.waitpid(pid, 0)
    gc.unfreeze()
    return grown


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="needs Linux smaps_rollup")
def test_a_forked_worker_reading_every_row_does_not_grow(tmp_path):
    n = 100_000
    (tmp_path / "m.csv").write_text(
        "path,num_frames,label\n" + "".join(f"videos/c{i % 50}/clip_{i:08d}.mp4,300,c{i % 50}\n" for i in range(n))
    )
    ds = HybridVideoDataset([SourceSpec(tmp_path / "m.csv")], num_frames=4, sampling_rate=2)

    def read_every_row():
        for i in range(len(ds)):
            ds.row(i)

    objects = [ds.row(i) for i in range(n)]  # the old representation, to show that the probe sees growth

    def read_every_object():
        for row in objects:
            row.path  # noqa: B018 (the read is the point)

    assert growth_of_a_forked_reader(read_every_object) > 10_000  # > 10 MB: copy-on-read of 100k row objects
    assert growth_of_a_forked_reader(read_every_row) < 2_000


def random_manifest(rng: random.Random) -> str:
    """A small CSV or list file of tricky fields (quotes, unicode, stray spaces, bad numbers), mostly well formed."""
    tokens = ["a.mp4", "b c.mp4", '"q,uoted"', '"a""b"', "é.mp4", "1", "0", "-1", "7", "+3", "1_0", "cat", "dog", "",
              " x", "x ", "1.5", "nan", "\u00a0y", 'z"z', "٣", "1e2", "Cat"]  # fmt: skip
    if rng.random() < 0.6:
        cols = rng.choice([["path", "label"], ["path", "num_frames", "label"], ["path", "start", "fps", "extra"],
                           ["path", "text", "source"], ["Path", "duration", "width"], ["path"]])  # fmt: skip
        lines = [",".join(cols)]
        for _ in range(rng.randrange(1, 6)):
            width = len(cols) if rng.random() < 0.9 else rng.randrange(1, 5)
            lines.append(",".join(rng.choice(tokens) for _ in range(width)))
    else:
        columns, lines = rng.randrange(1, 4), []
        for _ in range(rng.randrange(1, 6)):
            width = columns if rng.random() < 0.9 else rng.randrange(1, 5)
            sep = " " if rng.random() < 0.9 else rng.choice(["  ", "\t", "\u00a0"])
            lines.append(sep.join(rng.choice(tokens).replace(",", "").replace(" ", "_") or "q" for _ in range(width)))
    end = rng.choice(["\n", "\r\n", "\n"])
    return rng.choice(["", "\ufeff"]) + end.join(lines) + rng.choice([end, "", end + end])


def test_random_files_read_alike_both_ways(tmp_path):
    rng, fast_files = random.Random(0), 0
    manifest = tmp_path / "m.csv"
    for _ in range(300):
        manifest.write_bytes(random_manifest(rng).encode())
        label_map = ["cat", "dog", "x"] if rng.random() < 0.2 else None
        fast_files += fast_table(str(manifest), "auto", label_map, None) is not None
        expected = outcome(read_manifest, manifest, "/root", label_map=label_map)
        assert outcome(read_manifest_table, manifest, "/root", label_map=label_map) == expected, manifest.read_text()
    assert fast_files > 30  # the fast path took a fair share of them
