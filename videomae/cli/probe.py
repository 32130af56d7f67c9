"""``videomae probe``: frozen-feature probes of any method's checkpoint, to compare methods."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from videomae.cli.arguments import add_frame_template

__all__ = ["add_probe"]

_CKPT_HELP = (
    "our .safetensors export (any method), a run folder (its export, else its newest checkpoint, consolidated once "
    "into the cache), a checkpoint folder, a release .pth / state dict (with --model), a transformers folder, or "
    "random:MODEL_NAME (random:EXPORT: a random model of that export's shape), the baseline"
)


def _default_out(checkpoint: str) -> Path:
    """``probe_<checkpoint>``: the checkpoint's name flattened to a folder name."""
    stem = Path(checkpoint.removeprefix("random:")).with_suffix("").as_posix()
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_.")[-80:]
    return Path(f"probe_{'random_' if checkpoint.startswith('random:') else ''}{name}")


def _run_probe(args: argparse.Namespace) -> int:
    from videomae.config import parse_override
    from videomae.inference.probing import ProbeOptions, format_table, run_probe

    overrides = {".".join(path): value for path, value in map(parse_override, args.override)}
    options = ProbeOptions(
        kind=args.kind, pool=args.pool, l2=args.l2, epochs=args.epochs, lr=args.lr, num_heads=args.num_heads,
        seed=args.seed, batch_size=args.batch_size, workers=args.workers, device=args.device,
        precision=args.precision, recompute=args.recompute,
    )  # fmt: skip
    if args.max_iter is not None:
        options.max_iter = args.max_iter
    out = Path(args.out) if args.out else _default_out(args.checkpoint)
    report = run_probe(
        args.checkpoint, args.train, args.val, out=out, data_root=args.data_root, cache=args.cache,
        model_name=args.model, overrides=overrides, num_frames=args.num_frames, sampling_rate=args.sampling_rate,
        short_side_size=args.short_side_size, frame_template=args.frame_template, backend=args.backend,
        options=options,
    )  # fmt: skip
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    if not args.json:
        print(f"report: {out / 'probe.json'}")
    return 0


def add_probe(subparsers: argparse._SubParsersAction) -> None:
    """Register ``probe``."""
    p = subparsers.add_parser(
        "probe",
        help="linear / attentive probes on a checkpoint's frozen features (compare methods)",
        description="Encode the centre clip (centre crop, no augmentation) of every row of TRAIN and VAL with the "
        "frozen encoder of CHECKPOINT (a pretraining model's encoder with nothing masked, or a classifier's "
        "tokens) and fit a linear probe (logistic regression on standardised features, L-BFGS to convergence: "
        "deterministic) and/or an attentive probe (a learned query over the tokens, AdamW). Clip settings come "
        "from the checkpoint's training config unless given. An image model on a video manifest encodes each "
        "frame and averages the tokens over the frames; a video model on an image manifest holds the image over "
        "its frames. Features are cached (safetensors, keyed by the weights, the manifest and the clip settings), "
        "so a second probe of the same checkpoint never runs the model. Writes OUT/probe.json and prints a table. "
        "Exit 2 on a checkpoint or manifest that cannot be probed (e.g. rows without labels).",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help=_CKPT_HELP)
    p.add_argument("--train", required=True, help="labelled manifest the probes are fitted on")
    p.add_argument("--val", required=True, help="labelled manifest they are scored on (train's classes)")
    p.add_argument("--kind", choices=("linear", "attentive", "both"), default="linear", help="probes (default linear)")
    p.add_argument("--data-root", default=None, help="prefix joined to both manifests' relative paths")
    p.add_argument("--out", default=None, help="report folder (default probe_<checkpoint name>)")
    p.add_argument("--cache", default=None, help="feature cache folder (default OUT/features)")
    p.add_argument("--recompute", action="store_true", help="compute the features again even when cached")
    p.add_argument("--model", default=None, help="registered model, for a checkpoint without our metadata")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="constructor argument of --model or of a random: model (repeatable), e.g. --override img_size=64",
    )
    p.add_argument("--seed", type=int, default=0, help="random: model's initialisation and attentive probe's seed")
    p.add_argument(
        "--pool",
        choices=("auto", "cls", "mean"),
        default="auto",
        help="linear-probe features: the class token, the mean of the patch tokens, or auto (the class token where "
        "the encoder has one, as the MAE and MoCo v3 papers probe; else the mean)",
    )
    p.add_argument("--num-frames", type=int, default=None, help="frames an image model averages over on videos")
    p.add_argument("--sampling-rate", type=int, default=None, help="frame stride (default: the run's, else 4)")
    p.add_argument("--short-side-size", type=int, default=None, help="resize before the centre crop")
    p.add_argument("--batch-size", type=int, default=32, help="clips per encoder forward (default 32)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (default 2)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32", help="autocast (default fp32)")
    p.add_argument("--backend", choices=("auto", "decord", "pyav"), default="auto", help="video decoder")
    p.add_argument("--l2", type=float, default=1e-3, help="linear probe: L2 penalty on the weights (default 1e-3)")
    p.add_argument(
        "--max-iter",
        type=int,
        default=None,
        help="linear probe: L-BFGS iterations at most (default 1000); it stops when converged",
    )
    p.add_argument("--epochs", type=int, default=20, help="attentive probe: epochs (default 20)")
    p.add_argument("--lr", type=float, default=1e-2, help="attentive probe: AdamW learning rate (default 1e-2)")
    p.add_argument("--num-heads", type=int, default=4, help="attentive probe: heads (default 4)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    add_frame_template(p)
    p.set_defaults(handler=_run_probe)
