"""``videomae plan``: ZeRO stage, activation checkpointing, micro-batch and accumulation for a pretraining run."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_plan"]

_GIB = 2**30


def _decoder_ratio(text: str) -> float | None:
    value = float(text)
    return None if value == 0 else value


def _run_plan(args: argparse.Namespace) -> int:
    from videomae.planning import PlanRequest, make_plan

    request = PlanRequest(
        model=args.model, gpu_mem_gib=args.gpu_mem, gpus_per_node=args.gpus_per_node, nodes=args.nodes,
        batch=args.batch, frames=args.frames, input_size=args.input_size, mask_type=args.mask_type,
        mask_ratio=args.mask_ratio, decoder_mask_ratio=args.decoder_mask_ratio, precision=args.precision,
        num_sample=args.num_sample, reserve_gib=args.reserve_gib,
        zero_stage=None if args.zero_stage == "auto" else int(args.zero_stage),
        with_cp={"auto": None, "on": True, "off": False}[args.with_cp],
    )  # fmt: skip
    plan = make_plan(request).to_dict()
    print(json.dumps(plan, indent=2) if args.json else format_plan(plan))
    return 0


def _row(label: str, total: int, per_clip: int | None = None) -> str:
    clip = f"   ({per_clip / 2**20:.1f})" if per_clip is not None else ""
    return f"  {label:<32}{total / _GIB:8.2f}{clip}"


def format_plan(plan: dict[str, Any]) -> str:
    """The human-readable plan: decision, config keys to set, memory breakdown per GPU, FLOPs, alternatives."""
    p = plan
    world, tokens, clips = p["world_size"], p["tokens"], p["micro_batch_clips"]
    off_on = {False: "off", True: "on"}
    lines = [
        f"{p['model']}: {p['num_params'] / 1e6:,.1f} M parameters (largest layer "
        f"{p['largest_layer_params'] / 1e6:.2f} M), {p['precision']}",
        f"{world} GPUs, {p['gpu_mem_bytes'] / _GIB:g} GiB each; effective batch {p['effective_batch']} clips = "
        f"{p['micro_batch']} videos x {p['num_sample']} clips x {world} GPUs x {p['grad_accum']} accumulation",
        f"tokens per clip: {tokens['total']}; the encoder sees {tokens['visible']}, the decoder predicts "
        f"{tokens['decoded']} (and runs on {tokens['visible'] + tokens['decoded']})",
        "",
        f"plan: ZeRO-{p['zero_stage']}, with_cp {off_on[p['with_cp']]}, micro-batch {p['micro_batch']} videos "
        f"({clips} clips) per GPU, grad_accum {p['grad_accum']}",
        f"  config: deepspeed.zero_stage={p['zero_stage']} model.with_cp={str(p['with_cp']).lower()} "
        f"train.batch_size={p['micro_batch']} train.grad_accum={p['grad_accum']} data.num_sample={p['num_sample']} "
        f"precision={p['precision']}",
        "",
        f"  {'memory per GPU':<32}{'GiB':>8}   (MiB per clip)",
        _row("parameters", p["param_bytes_per_gpu"]),
        _row("gradients", p["grad_bytes_per_gpu"]),
        _row("optimizer states", p["optimizer_bytes_per_gpu"]),
    ]
    for label, key in (
        ("activations: encoder", "activation_encoder_bytes_per_clip"),
        ("activations: decoder", "activation_decoder_bytes_per_clip"),
        ("activations: loss", "activation_loss_bytes_per_clip"),
        ("transient (loss targets, bwd)", "transient_bytes_per_clip"),
        ("input clips", "input_bytes_per_clip"),
    ):
        lines.append(_row(label, clips * p[key], p[key]))
    recompute = p["recompute_flops"]
    lines += [
        _row("reserve", p["reserve_bytes"]),
        _row("total", p["total_bytes_per_gpu"]) + f"   of {p['gpu_mem_bytes'] / _GIB:.2f}",
        "",
        f"FLOPs per optimizer step: {p['step_flops'] / 1e12:,.1f} TFLOP forward + backward "
        f"({p['step_flops'] / world / 1e12:,.2f} per GPU)"
        + (f", + {recompute / 1e12:,.1f} TFLOP recomputed by with_cp" if recompute else ""),
        "",
        "largest micro-batch that fits (videos per GPU; '-': none):",
        "            " + "".join(f"{'ZeRO-' + str(s):>8}" for s in sorted({c["zero_stage"] for c in p["candidates"]})),
    ]
    for cp in sorted({c["with_cp"] for c in p["candidates"]}):
        row = [c for c in p["candidates"] if c["with_cp"] == cp]
        lines.append(f"  with_cp {off_on[cp]:<3}" + "".join(f"{c['max_micro_batch'] or '-':>8}" for c in row))
    return "\n".join(lines)


def add_plan(subparsers: argparse._SubParsersAction) -> None:
    """Register ``plan``."""
    p = subparsers.add_parser(
        "plan",
        help="ZeRO stage, activation checkpointing, micro-batch and accumulation that fit the GPUs",
        description="Plan a pretraining run's memory: the lowest ZeRO stage and, only if needed, activation "
        "checkpointing that fit the largest micro-batch dividing each GPU's share of the effective batch, with the "
        "memory breakdown per GPU (model states as DeepSpeed's estimators, activations from an analytic model "
        "checked against autograd's saved tensors) and the FLOPs of a step. Exits 2 with what to change when "
        "nothing fits or the batch does not split over the GPUs.",
    )
    p.add_argument(
        "--model", required=True, help="registered pretraining model, e.g. pretrain_videomae_base_patch16_224"
    )
    p.add_argument("--gpu-mem", type=float, required=True, metavar="GIB", help="memory per GPU in GiB (80 for 80 GB)")
    p.add_argument("--gpus-per-node", type=int, required=True, metavar="G")
    p.add_argument("--nodes", type=int, default=1, metavar="N")
    p.add_argument(
        "--batch", type=int, required=True, metavar="CLIPS", help="effective batch in clips per optimizer step"
    )
    p.add_argument("--frames", type=int, default=16, help="frames per clip (16)")
    p.add_argument("--input-size", type=int, default=224, help="clip height = width (224)")
    p.add_argument("--mask-type", choices=["tube", "random"], default="tube")
    p.add_argument("--mask-ratio", type=float, default=0.9, help="encoder mask ratio (0.9)")
    p.add_argument(
        "--decoder-mask-ratio", type=_decoder_ratio, default=0.5, help="running-cell ratio (0.5); 0: no decoder mask"
    )
    p.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default="bf16")
    p.add_argument("--num-sample", type=int, default=4, help="clips per decoded video (4, the V2 recipe)")
    p.add_argument("--reserve-gib", type=float, default=None, help="memory kept free (default max(2, 10%% of GPU))")
    p.add_argument("--zero-stage", choices=["auto", "0", "1", "2", "3"], default="auto", help="force a stage (auto)")
    p.add_argument("--with-cp", choices=["auto", "on", "off"], default="auto", help="force checkpointing (auto)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(handler=_run_plan)
