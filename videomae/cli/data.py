"""``videomae demo-data`` and ``videomae manifest build|check|merge``: the data commands."""

from __future__ import annotations

import argparse

from videomae.cli.arguments import add_frame_template

__all__ = ["add_demo_data", "add_manifest"]


def _run_demo_data(args: argparse.Namespace) -> int:
    import time

    from videomae.data.demo import DemoConfig, write_demo_dataset

    config = DemoConfig(
        num_train=args.num_train, num_val=args.num_val, seed=args.seed, size=args.size, frames=args.frames, fps=args.fps
    )
    began = time.perf_counter()
    written = write_demo_dataset(args.out, config, workers=args.workers, progress=not args.quiet)
    elapsed = time.perf_counter() - began
    print(
        f"wrote {config.num_train} train + {config.num_val} val clips (and one still image each) to {args.out} "
        f"in {elapsed:.1f} s"
    )
    for name, path in written.items():
        print(f"  {name:24s} {path}")
    print(f"manifest paths are relative to {args.out}: use it as data_root (e.g. data.data_root={args.out})")
    return 0


def add_demo_data(subparsers: argparse._SubParsersAction) -> None:
    """Register ``demo-data``."""
    from videomae.data.demo import DemoConfig

    d = DemoConfig()
    p = subparsers.add_parser(
        "demo-data",
        help="write the embedded learnable demo set (H.264 files + frame folders + still images + manifests)",
        description="Write short clips of a square/disc/triangle moving up or down over a random texture; "
        "the class is the (shape, direction) pair. Each clip also gives one PNG frame (an image set labelled by "
        "shape: train_images.csv, val_images.csv, labels_images.txt) and every row a caption (text column) "
        "naming the colour, the shape and the direction. Deterministic from --seed.",
    )
    p.add_argument("out", help="output folder (created if needed)")
    p.add_argument("--num-train", type=int, default=d.num_train, help=f"training clips (default {d.num_train})")
    p.add_argument("--num-val", type=int, default=d.num_val, help=f"validation clips (default {d.num_val})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed (default {d.seed})")
    p.add_argument("--size", type=int, default=d.size, help=f"frame height and width in pixels (default {d.size})")
    p.add_argument("--frames", type=int, default=d.frames, help=f"frames per clip (default {d.frames})")
    p.add_argument("--fps", type=int, default=d.fps, help=f"frame rate of the video files (default {d.fps})")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all CPU cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_run_demo_data)


def _run_manifest_build(args: argparse.Namespace) -> int:
    import signal
    import sys

    from videomae.data.manifest_tools import build_manifest

    def stop(signum: int, frame: object) -> None:  # SLURM preemption / kill: stop as Ctrl-C does, log kept
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    extensions = args.extensions.split(",") if args.extensions else None
    try:
        result = build_manifest(
            args.root,
            args.output,
            labels_from_subfolders=args.labels_from_subfolders,
            label_map=args.label_map,
            workers=args.workers,
            frame_template=args.frame_template,
            extensions=extensions,
            timeout=args.timeout,
            progress=not args.quiet,
            shard=args.shard,
            images=args.images,
            captions=args.captions,
            captions_from_sidecars=args.captions_from_sidecars,
        )
    except KeyboardInterrupt as stopped:  # BuildInterrupted says what the probe log keeps
        print(f"videomae manifest build: {stopped or 'interrupted before any clip was probed'}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(result.summary(args.root))
    return 0


def _shard_arg(text: str) -> object:
    from videomae.data.manifest_shards import parse_shard

    try:
        return parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _run_manifest_check(args: argparse.Namespace) -> int:
    from videomae.data.manifest_tools import check_manifest

    report = check_manifest(
        args.manifest,
        data_root=args.data_root,
        num_frames=args.num_frames,
        sampling_rate=args.sampling_rate,
        label_map=args.label_map,
        fix=args.fix,
        workers=args.workers,
        frame_template=args.frame_template,
        timeout=args.timeout,
        progress=not args.quiet,
    )
    print(report.format(max_lines=None if args.all else 200))
    return report.exit_code


def _run_manifest_merge(args: argparse.Namespace) -> int:
    from videomae.data.manifest_shards import is_shard_output, join_shards, rejects_path
    from videomae.data.manifest_tools import merge_manifests

    companions = {rejects_path(m) for m in args.manifests}  # `merge shards/*.csv` also matches OUT.csv.rejects.csv
    args.manifests = [m for m in args.manifests if m not in companions]
    shards = [is_shard_output(m) for m in args.manifests]
    if any(shards):
        if not all(shards) or args.label_map_out or args.label_maps or args.remap_dir:
            raise ValueError(
                "shard outputs (with their .shard.json) join on their own: give all shards of one build and no "
                "other manifest, without --label-map-out/--label-maps/--remap-dir; merge label spaces afterwards"
            )
        print(join_shards(args.manifests, args.output).summary())
        return 0
    if args.label_map_out is None:
        raise ValueError("merging labelled manifests writes a merged label map: give --label-map-out FILE")
    result = merge_manifests(
        args.manifests,
        args.output,
        label_map_out=args.label_map_out,
        label_maps=args.label_maps,
        remap_dir=args.remap_dir,
    )
    print(result.summary())
    return 0


def add_manifest(subparsers: argparse._SubParsersAction) -> None:
    """Register ``manifest build|check|merge``."""
    from videomae.data.manifest_build import DEFAULT_TIMEOUT_S, IMAGE_MODES

    p = subparsers.add_parser("manifest", help="build, check and merge manifests (see data_lists/SCHEMA.md)")
    sub = p.add_subparsers(dest="manifest_command", required=True, metavar="{build,check,merge,transcode}")

    b = sub.add_parser(
        "build",
        help="scan a folder of videos / frame folders / images and write a CSV manifest",
        description="Scan ROOT for video files (by extension), frame folders (folders of images named by "
        "--frame-template) and other images (.jpg .jpeg .png .bmp .webp: one row each, read as one-frame clips), "
        "probe each (decoded frame count, fps, size) in a process pool, write OUT.csv with paths "
        "relative to ROOT and OUT.csv.rejects.csv (clips left out, with the reason). Results are logged "
        "to OUT.csv.probed.jsonl as they come: after a kill, rerun the same command to probe only the rest.",
    )
    b.add_argument("root", help="folder to scan")
    b.add_argument("-o", "--output", required=True, help="CSV manifest to write")
    labels = b.add_mutually_exclusive_group()
    labels.add_argument(
        "--labels-from-subfolders",
        action="store_true",
        help="label = name of the first sub-folder under ROOT (ROOT/<class>/..., e.g. the ImageNet layout "
        "ROOT/<class>/xxx.JPEG)",
    )
    labels.add_argument(
        "--label-map",
        metavar="FILE",
        help="CSV (path,label) or JSON {path: label} giving each clip's label; keys are paths "
        "relative to ROOT, with or without extension, or bare file/folder names",
    )
    b.add_argument(
        "--workers", type=int, default=None, help="probe processes (default: the CPU cores this process may use)"
    )
    captions = b.add_mutually_exclusive_group()
    captions.add_argument(
        "--captions",
        metavar="FILE",
        default=None,
        help='captions for the text column: CSV with a path,text header or JSON Lines of {"path", "text"}, '
        "paths relative to ROOT as in the manifest; paths that match no clip are reported",
    )
    captions.add_argument(
        "--captions-from-sidecars",
        action="store_true",
        help="caption of each clip = the .txt of the same name beside it (clip.mp4, photo.jpg or the frame "
        "folder clip/ -> clip.txt, photo.txt)",
    )
    b.add_argument(
        "--images",
        choices=IMAGE_MODES,
        default="auto",
        help="image files outside frame folders: auto (default) lists each as a one-frame clip, except folders "
        "whose images look like numbered video frames (reported with the --frame-template to use); all lists "
        "them all; none lists none",
    )
    add_frame_template(b)
    b.add_argument(
        "--extensions",
        default=None,
        help="comma-separated video extensions (default: mp4,avi,mkv,webm,mov,m4v,mpg,mpeg,flv,wmv)",
    )
    b.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds per probe before its process is killed and the clip rejected (default {DEFAULT_TIMEOUT_S:g})",
    )
    b.add_argument(
        "--shard",
        type=_shard_arg,
        default=None,
        metavar="I/N",
        help="build shard I of N (0-based; e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); "
        "'manifest merge' joins the N outputs into the manifest one build writes",
    )
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(handler=_run_manifest_build)

    c = sub.add_parser(
        "check",
        help="validate a manifest before a run; exit 1 if anything is wrong",
        description="Report missing files, undecodable or zero-frame videos, missing or broken frames in "
        "frame folders (every frame is checked), clips shorter than the sampled span, unknown or mixed labels, "
        "duplicate rows and conflicting labels, with line numbers (span = (NUM_FRAMES - 1) x SAMPLING_RATE + 1). "
        "Exit status 0 = clean, 1 = problems found, 2 = unreadable manifest.",
    )
    c.add_argument("manifest", help="manifest to check (CSV or an original list format)")
    c.add_argument("--data-root", default=None, help="prefix joined to relative paths")
    c.add_argument("--num-frames", type=int, default=None, help="frames per clip the run samples")
    c.add_argument("--sampling-rate", type=int, default=1, help="frame stride the run samples (default 1)")
    c.add_argument("--label-map", default=None, help="label map (labels.txt) the labels must belong to")
    c.add_argument(
        "--fix",
        metavar="OUT",
        default=None,
        help="write a copy without the unusable rows, with num_frames corrected where it exceeds what decodes",
    )
    c.add_argument(
        "--workers", type=int, default=None, help="probe processes (default: the CPU cores this process may use)"
    )
    add_frame_template(c)
    c.add_argument("--timeout", type=float, default=120.0, help="seconds per probe before a clip counts as bad")
    c.add_argument("--all", action="store_true", help="list every problem (default: the first 200)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(handler=_run_manifest_check)

    m = sub.add_parser(
        "merge",
        help="merge labelled manifests with a label map merged by class name",
        description="Merge labelled manifests (as Kinetics-710 from 400/600/700): class names are "
        "normalised (case, '_' vs ' '), united and sorted; labels are rewritten as "
        "ids of the merged map; one JSON remap (old id -> new id) per input is written. "
        "Given the outputs of 'manifest build --shard 0/N ... N-1/N', joins them into the manifest "
        "(and rejects) one unsharded build writes.",
    )
    m.add_argument("manifests", nargs="+", help="input manifests")
    m.add_argument("-o", "--output", required=True, help="merged CSV manifest")
    m.add_argument(
        "--label-map-out", default=None, help="merged label map to write (one class name per line; not for shards)"
    )
    m.add_argument(
        "--label-maps",
        nargs="+",
        default=None,
        metavar="FILE",
        help="label map of each input, in the same order (needed for inputs with integer labels; "
        "'-' for an input that uses class names)",
    )
    m.add_argument("--remap-dir", default=None, help="folder for the remap JSON files (default: next to OUT)")
    m.set_defaults(handler=_run_manifest_merge)

    from videomae.cli.transcode import add_manifest_transcode

    add_manifest_transcode(sub)
