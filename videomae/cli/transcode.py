"""``videomae manifest transcode``: re-encode a manifest's videos for fast training reads."""

from __future__ import annotations

import argparse

from videomae.cli.arguments import add_frame_template

__all__ = ["add_manifest_transcode"]


def _run(args: argparse.Namespace) -> int:
    from videomae.data.decode_speed import compare_transcoded
    from videomae.data.transcode import TranscodeOptions
    from videomae.data.transcode_manifest import transcode_manifest

    options = TranscodeOptions(
        short_side=args.short_side or None,
        gop=args.gop,
        fps=args.fps,
        codec=args.codec,
        crf=args.crf,
        preset=args.preset,
        fast_decode=not args.no_fast_decode,
    )
    result = transcode_manifest(
        args.manifest,
        args.out_dir,
        options,
        data_root=args.data_root,
        output=args.output,
        frame_template=args.frame_template,
        workers=args.workers,
        progress=not args.quiet,
    )
    print(result.summary())
    if result.rows:
        print(f"use it with data_root={args.out_dir}")
    if args.speed_rows and result.rows:
        failed = [line for line, _, _ in result.failures]
        speed = compare_transcoded(
            args.manifest,
            result.manifest,
            data_root=args.data_root,
            new_data_root=args.out_dir,
            failed_lines=failed,
            sample=args.speed_rows,
            frame_template=args.frame_template,
        )
        print(speed.summary() + " (16 frames at stride 4, 224 crops, our reader, one process)")
    return 1 if result.failures else 0


def add_manifest_transcode(sub: argparse._SubParsersAction) -> None:
    """Register ``manifest transcode`` under the ``manifest`` sub-commands."""
    from videomae.data.transcode import CODECS, TranscodeOptions

    d = TranscodeOptions()
    t = sub.add_parser(
        "transcode",
        help="re-encode a manifest's videos (short side, GOP, frame rate, codec) and write the new manifest",
        description="Re-encode every video (and frame folder) of IN.csv into OUT_DIR with PyAV in a process pool: "
        "short side scaled down, a keyframe every GOP frames, one codec; then write OUT_DIR/<name>.csv (same "
        "columns, paths relative to OUT_DIR, num_frames updated) and time decoding before/after on a few rows. "
        "Reruns skip finished files. Rows that fail are listed and left out (exit status 1).",
    )
    t.add_argument("manifest", metavar="IN.csv", help="manifest to transcode")
    t.add_argument("out_dir", metavar="OUT_DIR", help="folder for the new files and manifest (the new data_root)")
    t.add_argument("-o", "--output", default=None, help="new manifest (default OUT_DIR/<IN name>.csv)")
    t.add_argument("--data-root", default=None, help="prefix joined to the input's relative paths")
    t.add_argument(
        "--short-side",
        type=int,
        default=d.short_side,
        help=f"shorter side, px (default {d.short_side}; 0 keeps the size; never upscales)",
    )
    t.add_argument("--gop", type=int, default=d.gop, help=f"frames per keyframe interval (default {d.gop})")
    t.add_argument("--fps", type=float, default=None, help="output frame rate (default: the input's)")
    t.add_argument("--codec", choices=sorted(CODECS), default=d.codec, help=f"codec (default {d.codec})")
    t.add_argument("--crf", type=int, default=d.crf, help=f"constant quality, lower is better (default {d.crf})")
    t.add_argument("--preset", default=d.preset, help=f"x264/x265 speed preset (default {d.preset})")
    t.add_argument(
        "--no-fast-decode",
        action="store_true",
        help="h264/hevc: keep CABAC, deblocking and B-frames (smaller files, about 2x slower decoding)",
    )
    t.add_argument("--workers", type=int, default=None, help="encoding processes (default: all CPU cores)")
    add_frame_template(t)
    t.add_argument("--speed-rows", type=int, default=8, help="rows timed before/after (default 8; 0: skip)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(handler=_run)
