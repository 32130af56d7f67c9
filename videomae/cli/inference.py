"""``videomae predict``, ``videomae extract-features`` and ``videomae visualize``: commands that use a trained model."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from videomae.cli.arguments import add_frame_template

__all__ = ["add_extract_features", "add_predict", "add_visualize"]

_CKPT_HELP = (
    "our export (e.g. <run>/export/model.safetensors, rebuilt from its metadata), a transformers folder (built from "
    "its config.json), or with --model any checkpoint load_pretrained reads (original releases, state dicts)"
)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT", help=_CKPT_HELP)
    p.add_argument(
        "--model", default=None, help="registered model name, for checkpoints without our metadata or a config.json"
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="constructor argument of --model (repeatable), e.g. --override all_frames=8",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32", help="autocast (default fp32)")
    p.add_argument("--backend", choices=("auto", "decord", "pyav"), default="auto", help="video decoder (auto: PyAV)")


def _load(args: argparse.Namespace, allow_missing: tuple[str, ...] = (), device: Any = None) -> Any:
    import torch

    from videomae.config import parse_override
    from videomae.inference import load_inference_model

    if args.override and args.model is None:
        raise ValueError("--override needs --model (an export rebuilds its own model)")
    overrides = {}
    for text in args.override:
        path, value = parse_override(text)
        overrides[".".join(path)] = value
    device = args.device or device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_inference_model(
        args.checkpoint,
        model_name=args.model,
        overrides=overrides,
        allow_missing=allow_missing,
        device=device,
        precision=args.precision,
    )
    for note in model.notes:
        print(f"note: {note}", file=sys.stderr)
    return model


def _sampling_rate(args: argparse.Namespace, model: Any, fallback: int) -> int:
    """``--sampling-rate``, else the training run's ``data.sampling_rate`` stored in the export, else ``fallback``."""
    if args.sampling_rate is not None:
        return args.sampling_rate
    return int(model.run_setting("sampling_rate") or fallback)


def _run_predict(args: argparse.Namespace) -> int:
    from videomae.data.manifest import read_label_map
    from videomae.inference import predict_videos

    model = _load(args)
    if not model.is_classifier:
        raise ValueError(f"{args.checkpoint}: not a classifier (no head); predict needs a fine-tuned model")
    names = read_label_map(args.labels) if args.labels else model.label_names
    num_classes = model.model.num_classes
    if names is not None and len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a {num_classes}-class head (--labels or the export's)")
    predictions = predict_videos(
        model,
        args.videos,
        num_segments=args.num_segments,
        num_crops=args.num_crops,
        sampling_rate=_sampling_rate(args, model, 4),
        short_side_size=args.short_side_size or model.run_setting("short_side_size"),
        batch_size=args.batch_size,
        workers=args.workers,
        backend=args.backend,
    )
    results = [
        {
            "path": p.path,
            "valid": p.valid,
            "top_k": [
                {"class": c, "name": names[c] if names else str(c), "prob": prob} for c, prob in p.top_k(args.top_k)
            ],
        }
        for p in predictions
    ]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(r["path"] + ("" if r["valid"] else ": unreadable, no prediction"))
            for rank, top in enumerate(r["top_k"], 1):
                print(f"  {rank:2d}. {top['prob']:.4f}  {top['name']}")
    return 0 if all(p.valid for p in predictions) else 1


def add_predict(subparsers: argparse._SubParsersAction) -> None:
    """Register ``predict``."""
    p = subparsers.add_parser(
        "predict",
        help="top-k classes of videos with a trained classifier",
        description="Classify videos: NUM_SEGMENTS clips x NUM_CROPS crops per video, softmax per view averaged per "
        "video (as multi-view evaluation). Each video is decoded once. Exit status 1 when a video "
        "could not be read (it is listed, never replaced).",
    )
    _add_model_args(p)
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files or frame folders")
    p.add_argument("--top-k", type=int, default=5, help="classes shown per video (default 5)")
    p.add_argument("--labels", default=None, help="labels.txt (one class name per line; default: the export's)")
    p.add_argument("--num-segments", type=int, default=1, help="clips per video (default 1: the centred clip)")
    p.add_argument("--num-crops", type=int, default=1, help="crops per clip along the long side (default 1)")
    p.add_argument(
        "--sampling-rate",
        type=int,
        default=None,
        help="frame stride in a clip (default: the run's data.sampling_rate from the export, else 4)",
    )
    p.add_argument(
        "--short-side-size", type=int, default=None, help="resize before cropping (default: the run's, else input size)"
    )
    p.add_argument("--batch-size", type=int, default=4, help="videos per forward (default 4)")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (default 0: this one)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=_run_predict)


def _run_extract_features(args: argparse.Namespace) -> int:
    from videomae.engine import dist

    if dist.resolve_env().world_size == 1:
        return _extract_features(args)
    _, device = dist.init_distributed()  # torchrun, deepspeed, srun: this rank's rows on cuda:LOCAL_RANK
    try:
        return _extract_features(args, device, quiet=not dist.is_main())
    finally:
        dist.destroy()


def _extract_features(args: argparse.Namespace, device: Any = None, quiet: bool = False) -> int:
    from videomae.inference import extract_features

    model = _load(args, allow_missing=("head.", "fc_norm."), device=device)
    files = extract_features(
        model,
        args.manifest,
        args.out,
        data_root=args.data_root,
        sampling_rate=args.sampling_rate,
        stride=args.stride,
        batch_size=args.batch_size,
        pool=args.pool,
        short_side_size=args.short_side_size,
        workers=args.workers,
        backend=args.backend,
        frame_template=args.frame_template,
        overwrite=args.overwrite,
    )
    bad = [f for f in files if f.error]
    if quiet:
        return 1 if bad else 0
    clips = sum(f.num_clips for f in files)
    reused = sum(f.reused for f in files)
    print(
        f"wrote features of {len(files) - len(bad)} videos ({clips} clips) to {args.out} (index: features.csv); "
        f"{reused} already done, skipped"
    )
    for f in bad:
        print(f"  unreadable: {f.path}: {f.error}")
    return 1 if bad else 0


def add_extract_features(subparsers: argparse._SubParsersAction) -> None:
    """Register ``extract-features``."""
    p = subparsers.add_parser(
        "extract-features",
        help="clip features over whole videos (e.g. for temporal action detection)",
        description="For every video of MANIFEST: clips of the model's frame count, SAMPLING_RATE frames apart, "
        "starting every STRIDE frames; batched encoder forwards; OUT/<row>_<path>.npy = float32 "
        "[num_clips, dim] per video, OUT/features.csv maps rows to files and clip counts. Each video "
        "is decoded once. Works with classifier and pretraining checkpoints. Exit status 1 when a "
        "video could not be read. Under torchrun/deepspeed/srun each rank takes every N-th row on its own "
        "device. A rerun into OUT skips the videos done (OUT/features.json records the model and "
        "preprocessing; a rerun with other settings is refused).",
    )
    _add_model_args(p)
    p.add_argument("manifest", help="CSV manifest or original list file")
    p.add_argument("out", help="output folder")
    p.add_argument("--data-root", default=None, help="prefix joined to the manifest's relative paths")
    p.add_argument("--sampling-rate", type=int, default=1, help="frames between clip frames (default 1)")
    p.add_argument("--stride", type=int, default=None, help="frames between clip starts (default: one clip span)")
    p.add_argument("--batch-size", type=int, default=16, help="clips per forward (default 16)")
    p.add_argument(
        "--pool",
        choices=("mean", "tokens"),
        default="mean",
        help="mean: one vector per clip (a classifier's own pooled features, an encoder's token mean); "
        "tokens: every token, [num_clips, tokens, dim]",
    )
    p.add_argument("--short-side-size", type=int, default=None, help="resize before the centre crop")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (default 0: this one)")
    p.add_argument(
        "--overwrite", action="store_true", help="redo every video, even where OUT holds features (of any settings)"
    )
    add_frame_template(p)
    p.set_defaults(handler=_run_extract_features)


def _run_visualize(args: argparse.Namespace) -> int:
    from videomae.data.decoding import DecodeError
    from videomae.evaluation.pictures import save_reconstruction
    from videomae.inference.reconstruction import reconstruction_picture

    model = _load(args)
    normalize = model.run_setting("normalize_target", section="loss")
    try:
        picture = reconstruction_picture(
            model,
            args.video,
            mask_ratio=args.mask_ratio,
            sampling_rate=_sampling_rate(args, model, 4),
            num_frames_shown=args.frames,
            seed=args.seed,
            normalize_target=normalize is not False,
            backend=args.backend,
        )
    except DecodeError as err:
        raise ValueError(str(err)) from None
    save_reconstruction(args.out, picture.image)
    height, width = picture.image.shape[:2]
    print(f"wrote {args.out} ({width} x {height}): original | visible input | reconstruction | error")
    space = "normalised pixels" if normalize is not False else "0..1 pixels"
    print(
        f"hidden patches, MSE in {space}: reconstruction {picture.recon_mse:.4f}, baseline "
        f"{picture.recon_baseline_mse:.4f} (each hidden patch flat in the colour of the visible ones around it)"
    )
    return 0


def add_visualize(subparsers: argparse._SubParsersAction) -> None:
    """Register ``visualize``."""
    p = subparsers.add_parser(
        "visualize",
        help="reconstruction picture of a video by a pretraining checkpoint",
        description="Rows: original, visible input (tube mask), reconstruction and error of the centred clip of "
        "VIDEO (with normalised targets: the normalised target, reconstruction and error, each patch standardised, "
        "as the model predicts it); prints the MSE over hidden patches of the reconstruction and of a baseline "
        "that fills each hidden patch with the colour of the visible ones around it.",
    )
    _add_model_args(p)
    p.add_argument("video", help="video file or frame folder")
    p.add_argument("out", help="PNG file to write")
    p.add_argument("--mask-ratio", type=float, default=0.9, help="share of tubes hidden (default 0.9)")
    p.add_argument(
        "--sampling-rate",
        type=int,
        default=None,
        help="frame stride (default: the run's data.sampling_rate from the export, else 4)",
    )
    p.add_argument("--frames", type=int, default=4, help="frames shown (default 4)")
    p.add_argument("--seed", type=int, default=0, help="mask seed (default 0)")
    p.set_defaults(handler=_run_visualize)
