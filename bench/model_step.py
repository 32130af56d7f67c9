"""Pretraining step speed: our VideoMAE against transformers' VideoMAEForPreTraining, timed in the same run.

Times forward + backward (+ optimizer-free: gradients only) of one pretraining step for a chosen size, batch,
precision and device, and prints clips/s, peak memory, achieved TFLOP/s and, with ``--peak-tflops``, model
FLOPs utilisation. FLOPs are counted on the tokens each part actually processes (``videomae.models.flops``).

Rows:
    transformers  VideoMAEForPreTraining, same widths/depths, decoder predicts every hidden token (baseline).
    ours-v1       our model, same work as the baseline (decoder predicts every hidden token).
    ours-dual     our model with the running-cell decoder mask (VideoMAE V2 dual masking).

Example:
    python bench/model_step.py --size small --batch 2 --frames 16 --img 224 --device cpu
    python bench/model_step.py --size giant --batch 8 --precision bf16 --device cuda --peak-tflops 989
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import VideoMAEConfig, VideoMAEForPreTraining

from videomae.engine.throughput import peak_flops
from videomae.masking import running_cell_mask, tube_mask
from videomae.models import create_model
from videomae.models.flops import pretrain_flops
from videomae.objectives import MaskedPixelLoss

MODEL_NAMES = {
    "tiny": "pretrain_videomae_tiny_patch16_224",
    "small": "pretrain_videomae_small_patch16_224",
    "base": "pretrain_videomae_base_patch16_224",
    "large": "pretrain_videomae_large_patch16_224",
    "huge": "pretrain_videomae_huge_patch16_224",
    "giant": "pretrain_videomae_giant_patch14_224",
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Timing:
    name: str
    seconds_per_step: float
    peak_memory_gib: float | None
    flops_per_step: int


def transformers_baseline(config: dict) -> VideoMAEForPreTraining:
    """transformers' VideoMAE with our model's widths, depths and heads (decoder MLP ratio as ours)."""
    hf_config = VideoMAEConfig(
        image_size=config["img_size"],
        patch_size=config["patch_size"],
        num_frames=config["all_frames"],
        tubelet_size=config["tubelet_size"],
        hidden_size=config["encoder_embed_dim"],
        num_hidden_layers=config["encoder_depth"],
        num_attention_heads=config["encoder_num_heads"],
        intermediate_size=int(config["encoder_embed_dim"] * config["mlp_ratio"]),
        decoder_hidden_size=config["decoder_embed_dim"],
        decoder_num_hidden_layers=config["decoder_depth"],
        decoder_num_attention_heads=config["decoder_num_heads"],
        decoder_intermediate_size=int(config["decoder_embed_dim"] * config["mlp_ratio"]),
        use_mean_pooling=False,
        norm_pix_loss=True,
        attn_implementation="sdpa",
    )
    return VideoMAEForPreTraining(hf_config)


def time_interleaved(
    steps: dict[str, Callable[[], torch.Tensor]], device: torch.device, warmup: int, rounds: int
) -> dict[str, tuple[float, float | None]]:
    """Median seconds per call of each step and its peak accelerator memory (GiB).

    The steps take turns within every round, so a change in machine load (other jobs on a shared CPU) falls on
    all of them alike and their ratio stays meaningful.
    """
    durations: dict[str, list[float]] = {name: [] for name in steps}
    peaks: dict[str, float | None] = dict.fromkeys(steps)
    for round_index in range(warmup + rounds):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
                peaks[name] = torch.cuda.max_memory_allocated() / 2**30
            if round_index >= warmup:
                durations[name].append(time.perf_counter() - start)
    return {name: (statistics.median(durations[name]), peaks[name]) for name in steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(MODEL_NAMES), default="small")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--img", type=int, default=224)
    parser.add_argument("--precision", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--mask-ratio", type=float, default=0.9)
    parser.add_argument("--decoder-ratio", type=float, default=0.5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--with-cp", action="store_true", help="activation checkpointing in our model")
    parser.add_argument("--no-baseline", action="store_true", help="skip transformers (e.g. ViT-g memory)")
    parser.add_argument(
        "--peak-tflops", type=float, default=None,
        help="device peak for MFU, e.g. 989 (H100 bf16); default: the data-sheet peak of a known GPU in bf16/fp16",
    )  # fmt: skip
    parser.add_argument("--markdown", action="store_true", help="print a markdown table (for bench/RESULTS.md)")
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = DTYPES[args.precision]
    torch.manual_seed(0)
    ours = create_model(MODEL_NAMES[args.size], img_size=args.img, all_frames=args.frames, with_cp=args.with_cp)
    ours = ours.to(device)
    config = ours.model_config
    grid = ours.grid_size
    num_tokens = grid[0] * grid[1] * grid[2]
    generator = torch.Generator(device=device).manual_seed(0)
    videos = torch.randn(args.batch, 3, args.frames, args.img, args.img, device=device, generator=generator)
    mask = tube_mask(args.batch, grid, args.mask_ratio, generator=generator, device=device)
    decode_mask = running_cell_mask(args.batch, grid, args.decoder_ratio, generator=generator, device=device)
    num_visible = num_tokens - int(mask[0].sum())
    loss_fn = MaskedPixelLoss(ours.patch_size, ours.tubelet_size)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()

    def our_step(dual: bool) -> Callable[[], torch.Tensor]:
        def step() -> torch.Tensor:
            ours.zero_grad(set_to_none=True)
            with autocast:
                pred = ours(videos, mask, decode_mask if dual else None)
                loss = loss_fn(pred, videos, mask, decode_mask if dual else None)
            loss.backward()
            return loss

        return step

    steps: dict[str, Callable[[], torch.Tensor]] = {}
    flops: dict[str, int] = {}
    num_hidden = num_tokens - num_visible
    num_kept = num_tokens - int(decode_mask[0].sum())
    if not args.no_baseline:
        baseline = transformers_baseline(config).to(device)
        pixel_values = videos.transpose(1, 2).contiguous()  # transformers takes (B, T, C, H, W)

        def baseline_step() -> torch.Tensor:
            baseline.zero_grad(set_to_none=True)
            with autocast:
                loss = baseline(pixel_values=pixel_values, bool_masked_pos=mask).loss
            loss.backward()
            return loss

        steps["transformers"] = baseline_step
        flops["transformers"] = pretrain_flops(config, num_visible, num_hidden).train_step * args.batch
    for name, dual, decoded in (("ours-v1", False, num_hidden), ("ours-dual", True, num_kept)):
        steps[name] = our_step(dual)
        flops[name] = pretrain_flops(config, num_visible, decoded).train_step * args.batch
    results = time_interleaved(steps, device, args.warmup, args.steps)
    timings = [Timing(name, *results[name], flops[name]) for name in steps]
    if args.peak_tflops is None:
        peak = peak_flops(device, args.precision)
        args.peak_tflops = None if peak is None else peak / 1e12

    cpu_name = f"cpu ({torch.get_num_threads()} threads)"
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name
    print(
        f"# size={args.size} batch={args.batch} frames={args.frames} img={args.img} precision={args.precision} "
        f"device={device_name} tokens={num_tokens} visible={num_visible} with_cp={args.with_cp} "
        f"torch={torch.__version__}"
    )
    base = timings[0].seconds_per_step
    columns = ["model", "s/step", "clips/s", "TFLOP/s", "MFU", "peak GiB", "speed-up"]
    rows = []
    for timing in timings:
        tflops = timing.flops_per_step / timing.seconds_per_step / 1e12
        rows.append([
            timing.name,
            f"{timing.seconds_per_step:.3f}",
            f"{args.batch / timing.seconds_per_step:.2f}",
            f"{tflops:.3f}",
            f"{tflops / args.peak_tflops:.1%}" if args.peak_tflops else "-",
            f"{timing.peak_memory_gib:.2f}" if timing.peak_memory_gib is not None else "-",
            f"{base / timing.seconds_per_step:.2f}x",
        ])  # fmt: skip
    if args.markdown:
        print("| " + " | ".join(columns) + " |")
        print("|" + " --- |" * len(columns))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [13, 8, 8, 8, 6, 9, 9]
    print(" ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(columns, widths))))
    for row in rows:
        print(" ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(row, widths))))


if __name__ == "__main__":
    main()
