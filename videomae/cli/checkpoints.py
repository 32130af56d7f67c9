"""``videomae export`` and ``videomae info``: checkpoint files."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

__all__ = ["add_export", "add_info"]


def _run_export(args: argparse.Namespace) -> int:
    from videomae.config import parse_override
    from videomae.data.manifest import read_label_map
    from videomae.engine.export import export_checkpoint, export_transformers

    overrides = {".".join(path): value for path, value in map(parse_override, args.override)}
    labels = read_label_map(args.labels) if args.labels else None
    if args.format == "transformers":
        model, folder = export_transformers(
            args.checkpoint_dir, args.out, label_names=labels, model_name=args.model, overrides=overrides or None
        )
        cls = model.__class__.__name__
        print(f"wrote a transformers folder for {model.model_config['name']} ({cls}) to {folder}")
        return 0
    result = export_checkpoint(
        args.checkpoint_dir, args.out, model_name=args.model, overrides=overrides or None, label_names=labels
    )
    print(
        f"exported {result.num_tensors} fp32 tensors of {result.model_name} (step {result.step}, "
        f"{result.checkpoint}) to {result.path}"
    )
    for note in result.notes:
        print(f"note: {note}")
    return 0


def add_export(subparsers: argparse._SubParsersAction) -> None:
    """Register ``export``."""
    p = subparsers.add_parser(
        "export",
        help="consolidate a run's DeepSpeed checkpoint into a safetensors export, or write a transformers folder",
        description="Merge the fp32 weights of a DeepSpeed checkpoint (any ZeRO stage, any number of ranks) on one "
        "process and write them as our safetensors export (model config and metadata included), as "
        "the run does at its end. What is exported follows the run's method: the whole model for VideoMAE "
        "and image MAE, the query backbone for MoCo v3 (its momentum encoder stays in the checkpoint), the vision "
        "tower for MAE-CLIP. SRC: a checkpoint folder (checkpoints/step_00000200), or a run "
        "folder / checkpoints folder (its newest complete checkpoint). With --format transformers, SRC may "
        "also be our .safetensors export, and OUT is a folder VideoMAEForPreTraining / "
        "VideoMAEForVideoClassification.from_pretrained opens (config.json with id2label, model.safetensors); "
        "a model transformers cannot express (cosine attention, a learned position table...) is refused.",
    )
    p.add_argument("checkpoint_dir", metavar="SRC", help="checkpoint, checkpoints or run folder (or an export file)")
    p.add_argument("out", metavar="OUT", help="the .safetensors file (or, --format transformers, folder) to write")
    p.add_argument(
        "--format",
        choices=("videomae", "transformers"),
        default="videomae",
        help="videomae: our safetensors export (default); transformers: a save_pretrained folder",
    )
    p.add_argument("--model", default=None, help="registered model name (default: the checkpoint's config)")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="constructor argument (repeatable; added to the checkpoint's config, or alone with --model)",
    )
    p.add_argument("--labels", default=None, help="labels.txt to store as label_names (default: the checkpoint's)")
    p.set_defaults(handler=_run_export)


def _run_info(args: argparse.Namespace) -> int:
    from videomae.checkpoint_info import summarize_checkpoint

    summary = summarize_checkpoint(args.file)
    if args.json:
        print(json.dumps(asdict(summary), indent=2))
    else:
        print(summary.format_text(max_value_chars=0 if args.full else 160))
    return 0


def add_info(subparsers: argparse._SubParsersAction) -> None:
    """Register ``info``."""
    p = subparsers.add_parser(
        "info",
        help="what a checkpoint holds: format, model, parameters, grid, classes, metadata",
        description="Describe any checkpoint load_pretrained reads (our exports, original releases, transformers). "
        "Without our metadata the architecture is read off the tensor shapes.",
    )
    p.add_argument("file", help="checkpoint file or transformers folder")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--full", action="store_true", help="do not shorten long metadata values")
    p.set_defaults(handler=_run_info)
