"""Activation memory of a pretraining step: the ``videomae plan`` model against measurement, as a markdown table.

For each model and ``with_cp`` setting, on the chosen device:

* saved: bytes per clip autograd keeps for backward after forward + loss (``saved_tensors_hooks``, distinct
  storages, parameters and buffers left out) against ``activation_bytes``;
* peak: the live-tensor peak per clip over forward + backward above weights, gradients and the input batch
  (a dispatch mode that follows every storage) against ``activation_bytes + transient_bytes``.

Example:
    python bench/activation_memory.py --models tiny small base --clips 2
"""

from __future__ import annotations

import argparse
import time

from videomae.planning import PlanRequest, activation_bytes
from videomae.planning.measure import measure_activation_bytes, measure_peak_bytes
from videomae.planning.memory import element_bytes, transient_bytes
from videomae.planning.planner import model_facts, token_counts

MODELS = {
    "tiny": "pretrain_videomae_tiny_patch16_224",
    "small": "pretrain_videomae_small_patch16_224",
    "base": "pretrain_videomae_base_patch16_224",
    "large": "pretrain_videomae_large_patch16_224",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["tiny", "small", "base"])
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-peak", action="store_true", help="only the saved-tensor comparison")
    args = parser.parse_args()

    mib = 2**20
    print(f"# {args.frames}x{args.input_size} clips, {args.clips} per batch, {args.precision}, device {args.device}")
    print("| model | with_cp | saved measured MiB/clip | saved model | error | peak measured | peak model | error |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.models:
        name = MODELS[size]
        request = PlanRequest(name, 80, 1, 1, 4, frames=args.frames, input_size=args.input_size)
        config, _, _ = model_facts(name, args.frames, args.input_size)
        tokens = token_counts(config, request)
        elem = element_bytes(args.precision)
        for with_cp in (False, True):
            start = time.perf_counter()
            setting = dict(frames=args.frames, input_size=args.input_size, precision=args.precision,
                           with_cp=with_cp, device=args.device, clips=args.clips)  # fmt: skip
            saved = measure_activation_bytes(name, **setting)
            model_saved = activation_bytes(config, tokens, elem, with_cp).total
            row = (
                f"| {size} | {with_cp} | {saved / mib:.2f} | {model_saved / mib:.2f} | {model_saved / saved - 1:+.2%} |"
            )
            if args.no_peak:
                row += " - | - | - |"
            else:
                peak = measure_peak_bytes(name, **setting)
                model_peak = model_saved + transient_bytes(config, tokens, elem, with_cp)
                row += f" {peak / mib:.2f} | {model_peak / mib:.2f} | {model_peak / peak - 1:+.2%} |"
            print(row + f"  <!-- {time.perf_counter() - start:.1f} s -->")


if __name__ == "__main__":
    main()
