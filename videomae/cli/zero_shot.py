"""``videomae zero-shot``: zero-shot classification and retrieval of a MAE-CLIP export on a captioned manifest."""

from __future__ import annotations

import argparse
import json

__all__ = ["add_zero_shot", "run_zero_shot"]


def run_zero_shot(args: argparse.Namespace) -> int:
    """Evaluate ``args.checkpoint`` on ``args.val``; prints (and with ``--out`` writes) the JSON report."""
    import torch

    from videomae.checkpoint_maeclip import load_maeclip
    from videomae.config import build_config
    from videomae.config.maeclip import MaeClipConfig
    from videomae.evaluation.zero_shot import zero_shot_report
    from videomae.methods.maeclip import val_dataset
    from videomae.text import load_tokenizer

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, info = load_maeclip(args.checkpoint, device)
    stored = dict(info["pretrain_config"])
    stored["zero_shot"] = {**stored.get("zero_shot", {}), "val": args.val, "data_root": args.data_root}
    if args.template:
        stored["zero_shot"]["templates"] = args.template
    stored["data"] = {**stored["data"], "num_workers": args.num_workers}
    cfg = build_config(MaeClipConfig, stored)
    tokenizer = load_tokenizer(None, info["context_length"], json_text=info["tokenizer"])
    dataset = val_dataset(cfg)
    z = cfg.zero_shot
    report = zero_shot_report(
        model, tokenizer, dataset, dataset.label_names, z.templates, underscores_as_spaces=z.underscores_as_spaces,
        batch_size=args.batch_size or z.batch_size, num_workers=args.num_workers,
    )  # fmt: skip
    text = json.dumps({"checkpoint": str(args.checkpoint), "val": args.val, "step": info.get("step"), **report},
                      indent=2)  # fmt: skip
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text)
    return 0


def add_zero_shot(subparsers: argparse._SubParsersAction) -> None:
    """Register ``zero-shot``."""
    p = subparsers.add_parser(
        "zero-shot",
        help="zero-shot classification and video<->text retrieval of a MAE-CLIP export on a captioned manifest",
        description="Classify each clip of a labelled, captioned manifest by its similarity to the class names' "
        "prompts (top-1 / top-5 against chance), and retrieve captions from clips and clips from captions "
        "(recall@1/5/10), with the tokenizer and clip settings stored in the export.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="export/maeclip.safetensors, or the run folder")
    p.add_argument("--val", required=True, help="labelled manifest with a text column (captions)")
    p.add_argument("--data-root", default=None, help="prefix of the manifest's relative paths")
    p.add_argument("--template", action="append", default=None,
                   help="prompt template with {} for the class name (repeat; default: the run's)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=None, help="clips per forward pass (default: the run's)")
    p.add_argument("--num-workers", type=int, default=2, help="data-loader workers")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--out", default=None, help="also write the JSON report to this file")
    p.set_defaults(handler=run_zero_shot)
