"""Does self-supervised pretraining pay on the demo set? Fine-tune a tiny ViT three ways with the same budget.

Runs the stages declared in ``bench/pretrain_pays.yaml`` through ``launch/stages.py`` (DeepSpeed, 2 CPU processes):
pretrain (VideoMAE V2 dual masking, unlabelled clips) -> post-pretrain (supervised, labelled hybrid) and three
fine-tunes with one recipe and the same number of steps: from scratch, from the pretrained encoder, from the
post-pretrained model; each is scored on ``demo_data/val.csv`` with multi-view testing. Then a linear probe
(L-BFGS logistic regression on mean-pooled frozen tokens of the centre clip) compares the pretrained encoder with
a randomly initialised one of the same shape.

    python bench/pretrain_pays.py                 # ~27 min on 2 CPU cores; reruns skip finished stages
    python bench/pretrain_pays.py --force         # rerun every stage
    python bench/pretrain_pays.py --seed 1        # the same declaration with another seed, in <output_root>_seed1

Prints a table of val top-1 and, as its last line, the same figures as one JSON object:
``{"scratch": acc, "pretrained": acc, "post_pretrained": acc, "probe_pretrained": acc, "probe_random": acc}``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from videomae.checkpoint import load_exported
from videomae.data import HybridVideoDataset, SourceSpec, collate_clips
from videomae.data.demo import DATA_VERSION, DemoConfig, write_demo_dataset
from videomae.evaluation.probes import extract_features, fit_linear_probe
from videomae.models import create_model
from videomae.stages import load_recipe

ROOT = Path(__file__).resolve().parent.parent
STAGES = ROOT / "bench" / "pretrain_pays.yaml"
FINETUNES = ("scratch", "pretrained", "post_pretrained")
EXTRA_SEED = 1
"""Seed of the second labelled demo set that joins the post-pretraining hybrid (the demo set itself uses 0)."""


def ensure_demo(folder: Path, config: DemoConfig) -> None:
    """Write the demo set into ``folder`` unless the same version and parameters are already there."""
    info_path = folder / "demo.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        if info.get("version") == DATA_VERSION and info.get("config", {}).get("seed") == config.seed:
            return
    print(f"== writing demo data to {folder}", flush=True)
    write_demo_dataset(folder, config)


def probe_loader(data_root: Path, manifest: str, model_cfg: dict) -> DataLoader:
    """Centre clip of every video of a manifest, at the model's input size and frame count."""
    dataset = HybridVideoDataset(
        [SourceSpec(str(data_root / manifest), data_root=str(data_root))],
        num_frames=model_cfg["all_frames"], sampling_rate=model_cfg["sampling_rate"],
        input_size=model_cfg["img_size"], train=False,
    )  # fmt: skip
    return DataLoader(dataset, batch_size=32, collate_fn=collate_clips, num_workers=1)


def linear_probe(encoder: torch.nn.Module, loaders: dict[str, DataLoader]) -> float:
    """Val top-1 of a logistic regression on the frozen encoder's mean-pooled tokens."""
    train_tokens, train_labels = extract_features(encoder, loaders["train"], tokens=True)
    val_tokens, val_labels = extract_features(encoder, loaders["val"], tokens=True)
    return fit_linear_probe(train_tokens.mean(1), train_labels, val_tokens.mean(1), val_labels).accuracy


def probes(pretrain_export: Path, data_root: Path, sampling_rate: int, seed: int) -> dict[str, float]:
    """Linear-probe accuracy of the pretrained encoder and of a random one built the same way."""
    pretrained, info = load_exported(pretrain_export)
    config = dict(info["model_config"])
    torch.manual_seed(seed)
    random_model = create_model(config.pop("name"), **config).eval()
    model_cfg = {**info["model_config"], "sampling_rate": sampling_rate}
    loaders = {split: probe_loader(data_root, f"{split}.csv", model_cfg) for split in ("train", "val")}
    return {"probe_pretrained": linear_probe(pretrained, loaders), "probe_random": linear_probe(random_model, loaders)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rerun stages that are already done")
    parser.add_argument("--seed", type=int, default=0, help="seed of every stage and of the random probe encoder "
                        "(other than 0: the runs go to <output_root>_seed<N>)")  # fmt: skip
    args = parser.parse_args()
    overrides = [f"seed={args.seed}"]
    output_root = None if args.seed == 0 else f"{load_recipe(STAGES).output_root}_seed{args.seed}"

    start = time.perf_counter()
    ensure_demo(ROOT / "demo_data", DemoConfig())
    ensure_demo(ROOT / "demo_data_extra", DemoConfig(seed=EXTRA_SEED, num_val=0))
    command = [sys.executable, "launch/stages.py", "--stages", str(STAGES), *overrides]
    command += ["--output-root", output_root] if output_root else []
    command += ["--force"] if args.force else []
    print("== " + " ".join(command), flush=True)
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        print("pretrain_pays: a stage failed (see its log above)", file=sys.stderr)
        return 1

    recipe = load_recipe(STAGES, overrides=overrides, output_root=output_root)
    stages = {stage.name: stage for stage in recipe.stages}
    results = {}
    for name in FINETUNES:
        metrics = json.loads((Path(stages[name].output_dir) / "eval" / "metrics.json").read_text())
        results[name] = metrics["top1"]
    pretrain = stages["pretrain"]
    results.update(probes(pretrain.export, ROOT / "demo_data", pretrain.cfg.data.sampling_rate, args.seed))

    fine_tune = stages["scratch"].cfg
    print(f"\nDemo set, seed {args.seed}, val top-1 ({len(FINETUNES)} fine-tunes x {fine_tune.train.max_steps} steps, "
          f"{fine_tune.data.test_num_segment} x {fine_tune.data.test_num_crop} views; chance 1/6 = 0.167; "
          f"{(time.perf_counter() - start) / 60:.1f} min)")  # fmt: skip
    print(f"{'fine-tune from':<28}{'val top-1':>10}")
    for name in FINETUNES:
        print(f"{name:<28}{results[name]:>10.3f}")
    print(f"{'linear probe, pretrained':<28}{results['probe_pretrained']:>10.3f}")
    print(f"{'linear probe, random init':<28}{results['probe_random']:>10.3f}")
    print(json.dumps({key: round(value, 4) for key, value in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
