"""``videomae manifest transcode``: files re-encoded to the asked size, GOP and rate with the same frames, the new
manifest read back, broken rows reported, resumed runs, refused option changes, the before/after speed report."""

from __future__ import annotations

import os

import av
import numpy as np
import pytest
from conftest import HEIGHT, WIDTH, frame_ids

from videomae.cli import main
from videomae.data.decoding import DecodeError, probe_video, read_frames
from videomae.data.manifest import read_manifest
from videomae.data.transcode import CODECS, TranscodeError, TranscodeOptions, output_size, transcode_video
from videomae.data.transcode_manifest import transcode_manifest

SMALL = TranscodeOptions(short_side=32, gop=8)  # 96x64 -> 48x32


def _manifest(tmp_path, media, broken: bool = True) -> str:
    """h264 (64 frames), MPEG-4 AVI (64), a JPEG frame folder (40, 1-based), and a file of random bytes."""
    lines = ["path,label,num_frames,width,split"]
    lines += [f"{media['h264']},walk,64,96,a", f"{media['mpeg4_avi']},run,,96,b", f"{media['frames']},walk,40,,c"]
    if broken:
        lines.append(f"{media['junk']},run,,,d")
    path = tmp_path / "in.csv"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _keyframes(path: str) -> list[int]:
    with av.open(path) as c:
        return [i for i, p in enumerate(c.demux(video=0)) if p.size and p.is_keyframe]


def _ids_at_original_size(frames) -> list[int]:
    small = np.asarray(frames)  # (T, 32, 48, 3): every pixel back to a 2x2 block
    return frame_ids(small.repeat(2, axis=1).repeat(2, axis=2))


def test_output_size_keeps_aspect_even_and_never_upscales():
    assert output_size(768, 576, 256) == (342, 256)
    assert output_size(576, 768, 256) == (256, 342)
    assert output_size(96, 64, 256) == (96, 64)
    assert output_size(101, 57, None) == (100, 56)  # yuv420p needs even sides


def test_transcode_manifest(tmp_path, media):
    out = tmp_path / "out"
    result = transcode_manifest(_manifest(tmp_path, media), out, SMALL, workers=2, progress=False)
    assert (result.rows, result.encoded, result.skipped) == (3, 3, 0)
    assert [(line, path) for line, path, _ in result.failures] == [(5, str(media["junk"]))]

    new = read_manifest(result.manifest, out)
    header = (out / "in.csv").read_text().splitlines()[0]
    assert sorted(header.split(",")) == ["label", "num_frames", "path", "split", "width"]  # the same columns
    assert [new.label_names[r.label] for r in new.rows] == ["walk", "run", "walk"]  # class names written back
    assert [r.extra["split"] for r in new.rows] == ["a", "b", "c"]
    assert [r.num_frames for r in new.rows] == [64, 64, 40]
    assert [r.width for r in new.rows] == [48, 48, None]  # updated where the input had the column
    names = [os.path.relpath(r.path, out) for r in new.rows]
    assert names == ["h264.mp4", "mpeg4_b.mp4", "frames/clip_a.mp4"]  # layout mirrored under OUT_DIR
    for row in new.rows:
        info = probe_video(row.path)
        assert (info.width, info.height) == (48, 32)
        assert _keyframes(row.path) == list(range(0, row.num_frames, 8))  # a keyframe every GOP frames, no others
        n = row.num_frames
        assert _ids_at_original_size(read_frames(row.path, range(n))) == list(range(n))  # frame i is frame i


def test_resume_skips_finished_files_and_redoes_interrupted_ones(tmp_path, media):
    manifest, out = _manifest(tmp_path, media), tmp_path / "out"
    transcode_manifest(manifest, out, SMALL, workers=1, progress=False)
    done = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}
    # an interrupted run: one output missing, its temporary file left behind
    (out / "h264.mp4").unlink()
    (out / "h264.mp4.tmp").write_bytes(b"half a file")
    result = transcode_manifest(manifest, out, SMALL, workers=1, progress=False)
    assert (result.rows, result.encoded, result.skipped, len(result.failures)) == (3, 1, 2, 1)
    assert not (out / "h264.mp4.tmp").exists()
    for path, mtime in done.items():
        if path.name != "h264.mp4":
            assert path.stat().st_mtime_ns == mtime  # not rewritten
    assert [r.num_frames for r in read_manifest(out / "in.csv").rows] == [64, 64, 40]

    # a row starting past the decoded end is reported, not written with num_frames <= 0
    (tmp_path / "late.csv").write_text(f"path,start\n{media['h264']},64\n{media['h264']},60\n")
    late = transcode_manifest(tmp_path / "late.csv", out, SMALL, output=tmp_path / "late_out.csv", progress=False)
    assert late.failures == [(2, str(media["h264"]), "start=64 is past the 64 decoded frames")] and late.rows == 1
    assert read_manifest(tmp_path / "late_out.csv").rows[0].num_frames == 4

    with pytest.raises(TranscodeError, match=r"other options \(gop: \[8\] there, \[4\] now\)"):
        transcode_manifest(manifest, out, TranscodeOptions(short_side=32, gop=4), progress=False)


def test_frame_rate_change_keeps_the_frames_at_their_times(tmp_path, media):
    (tmp_path / "in.csv").write_text(f"path\n{media['h264']}\n")
    result = transcode_manifest(tmp_path / "in.csv", tmp_path / "out", TranscodeOptions(None, 8, fps=12.5), workers=1,
                                progress=False)  # fmt: skip
    row = read_manifest(result.manifest, tmp_path / "out").rows[0]
    assert probe_video(row.path).fps == 12.5 and row.num_frames == 32
    assert frame_ids(read_frames(row.path, range(32))) == list(range(0, 64, 2))  # 25 -> 12.5 fps: every 2nd frame
    # a row starting mid-video would point at other frames after a rate change
    (tmp_path / "start.csv").write_text(f"path,start\n{media['h264']},10\n")
    with pytest.raises(TranscodeError, match="start.csv:2: fps=12.5 would move"):
        transcode_manifest(tmp_path / "start.csv", tmp_path / "out2", TranscodeOptions(fps=12.5), progress=False)


def test_cli_reports_failures_and_speed(tmp_path, media, capsys):
    manifest = _manifest(tmp_path, media)
    argv = ["manifest", "transcode", manifest, str(tmp_path / "out"), "--short-side", "32", "--gop", "8"]
    assert main(argv + ["--workers", "1", "--quiet", "--speed-rows", "2"]) == 1  # a row failed
    printed = capsys.readouterr().out
    assert f"line 5: {media['junk']}" in printed and "3 rows; 3 files encoded" in printed
    assert "decode speed on 2 row(s), num_sample 1:" in printed and "clips per CPU-second" in printed
    assert main([*argv, "--quiet", "--speed-rows", "0", "--codec", "vp9"]) == 2  # other options, same folder
    assert "holds files transcoded with other options (codec" in capsys.readouterr().err
    assert (HEIGHT, WIDTH) == (64, 96)  # the fixture sizes the expectations above assume


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_every_codec_keeps_the_frames_on_a_fixed_gop(tmp_path, media, codec):
    if CODECS[codec][0] not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {CODECS[codec][0]} encoder")
    dst = str(tmp_path / f"out{CODECS[codec][1]}")
    # the source's own keyframes (every 12 frames) must not carry over
    short = 64 if codec == "hevc" else 32  # x265 crashes below 64 px (HEVC_MIN_SIDE)
    assert transcode_video(str(media["h264"]), dst, TranscodeOptions(short, 8, codec=codec))[0] == 64
    assert _keyframes(dst) == list(range(0, 64, 8))
    frames = read_frames(dst, [63, 0, 9, 40, 41])
    assert (frame_ids(frames) if short == 64 else _ids_at_original_size(frames)) == [63, 0, 9, 40, 41]


def test_hevc_below_its_minimum_size_is_refused_not_crashed(tmp_path, media):
    with pytest.raises(TranscodeError, match="short_side >= 64"):
        TranscodeOptions(short_side=32, codec="hevc")
    from PIL import Image

    folder = tmp_path / "small"
    folder.mkdir()
    for i in (1, 2):
        Image.new("RGB", (48, 32), (i, 0, 0)).save(folder / f"img_{i:05d}.jpg")
    with pytest.raises(DecodeError, match="48x32 is too small for HEVC"):
        transcode_video(str(folder), str(tmp_path / "a.mp4"), TranscodeOptions(None, codec="hevc"))
    assert not (tmp_path / "a.mp4").exists() and not (tmp_path / "a.mp4.tmp").exists()
