"""Which pretraining method pays on the demo set? A short pretraining of each, then the same linear probe.

For every method entry of :data:`ENTRIES` whose packaged recipe exists (``videomae/recipes/pretrain/NAME.yaml``;
the others are skipped with the reason), in a scratch folder holding ``videomae demo-data``:

1. pretrain with ``deepspeed --num_gpus 2 launch/pretrain.py --config RECIPE output_dir=... train.max_steps=N``
   (2 CPU processes with one thread each: both cores busy; the recipes read ``demo_data/...``, so the run starts in
   the scratch folder), timing steps/s from the moment the first step is logged to the last;
2. linear-probe the export's frozen features with the code of ``videomae probe`` (L-BFGS logistic regression on
   standardised features: the class token where the encoder has one, else the mean of the patch tokens), and
   the same probe of a randomly initialised encoder of the same shape (``random:<export>``, seed 0).

Every method is probed on the same labelled video set (the demo ``train.csv`` -> ``val.csv``: 480 -> 600 clips of 6
classes, shape x direction), with the same 8 frames 4 apart of each video's centre clip: the class needs motion, which
a single frame cannot show, so only a set with clips compares image and video encoders on the task. An image encoder
encodes the 8 frames one by one and its tokens are averaged over them (it sees every frame but not their order); a
video encoder takes the clip. When the demo set has an image set too (``train_images.csv``, ``val_images.csv``), every
encoder is also probed on it (video encoders see each image held still), as the image methods' own task.

    python bench/methods_pay.py                     # every default method with a recipe, 300 steps each
    python bench/methods_pay.py --steps 100 --only video_mae
    python bench/methods_pay.py --only video_mae,maeclip_init --reuse   # maeclip_init starts from video_mae's run
    python bench/methods_pay.py --reuse             # probe the runs of an earlier call again, no pretraining

The same cached features are also probed for each cue alone (``bench/demo_cues.py``: the class's shape and
direction, and the nuisance cues every clip is drawn with at random: hue, stripe angle, size), which shows what each
encoder keeps and, for a contrastive method, which shortcut it took.

Prints a table (method, steps, steps/s, probe val top-1, minus random, the cues) and, last, one JSON line:
``{"random": .., "video_mae": .., "image_mae": .., "mocov3_image": .., "mocov3_video": .., "chance": ..}`` (val
top-1 on the video set; ``random`` is the video MAE encoder's random twin, each method's own is in the table and
under ``random_per_method``; a skipped method is ``null``), then ``maeclip_zero_shot``: MAE-CLIP's zero-shot val
top-1 from class-name prompts (the demo recipe's run from scratch, ``maeclip``; ``maeclip_init``, whose vision tower
starts from the ``video_mae`` run's export, runs only when ``--only`` names it, as it costs another 10 minutes; both
under ``maeclip_zero_shot_per_entry``; a second table gives each against chance and the same model before
training, with retrieval recall@1 both ways). To add a method, add an entry.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.clip_cues import clip_cue_scores  # noqa: E402
from bench.demo_cues import CUES, cue_scores  # noqa: E402
from videomae.inference.probe_models import RUN_EXPORT, resolve_probe_model  # noqa: E402
from videomae.inference.probing import ProbeOptions, run_probe  # noqa: E402
from videomae.recipes import RECIPES  # noqa: E402

BIN = Path(sys.executable).parent
VIDEO_SET = ("train.csv", "val.csv")
IMAGE_SET = ("train_images.csv", "val_images.csv")
VAL_CLIPS = 600
"""Val clips (and images) of the bench's demo set: 5x the default 120, so that one probe's top-1 has a standard
error near 0.02 and a gain of 0.10 over the random twin is well outside the noise (about 2 standard errors at 120).
The training clips are the default 480, byte for byte those of ``videomae demo-data``."""
PROBE_FRAMES, PROBE_RATE = 8, 4
"""The clip every encoder is probed on: the video demo recipe's 8 frames, 4 apart."""


@dataclass
class Bench:
    """The scratch folder and the settings every entry shares."""

    work: Path
    steps: int
    launcher: str
    seed: int
    reuse: bool = False
    overrides: tuple[str, ...] = ()
    """``key=value`` overrides of every run (ablations), after the entry's own."""

    @property
    def demo(self) -> Path:
        return self.work / "demo_data"


def linear_probe(bench: Bench, checkpoint: str, out: Path, manifests: tuple[str, str]) -> dict[str, float] | None:
    """Val top-1 of the linear probe of ``checkpoint`` on a demo train/val pair (``top1``), and of the same features
    per cue (:mod:`demo_cues`; no direction on the image set, whose images show none); ``None`` when the set is
    absent."""
    train, val = (bench.demo / m for m in manifests)
    if not (train.is_file() and val.is_file()):
        return None
    image_model = resolve_probe_model(checkpoint, seed=bench.seed).shape().num_frames == 1
    report = run_probe(
        checkpoint, train, val, out=out, data_root=bench.demo, cache=bench.work / "features",
        num_frames=PROBE_FRAMES if image_model else None, sampling_rate=PROBE_RATE,
        options=ProbeOptions(kind="linear", seed=bench.seed, workers=1),
    )  # fmt: skip
    cues = tuple(c for c in CUES if manifests == VIDEO_SET or c != "direction")
    return {"top1": report["results"][0]["val_top1"], **cue_scores(report, bench.demo, manifests, cues)}


def probe_scores(bench: Bench, entry: MethodEntry, export: Path) -> dict[str, float | None]:
    """The default score of an entry: linear probes of its export and of its random twin, on both sets."""
    out = bench.work / "probes" / entry.key
    scores = {}
    for name, manifests in (("video", VIDEO_SET), ("image", IMAGE_SET)):
        for suffix, checkpoint in (("", str(export)), ("_random", f"random:{export}")):
            found = linear_probe(bench, checkpoint, out / f"{name}{suffix}", manifests) or {}
            scores |= {f"{name}{suffix}" if k == "top1" else f"{name}_{k}{suffix}": v for k, v in found.items()}
            scores.setdefault(f"{name}{suffix}", None)
    return scores


@dataclass(frozen=True)
class MethodEntry:
    """One method of the bench.

    Attributes:
        key: its name in the JSON line.
        title: its name in the table.
        recipe: packaged pretraining recipe (``videomae/recipes/pretrain/<recipe>.yaml``).
        overrides: extra ``key=value`` overrides of the run.
        needs: demo files the recipe reads; when one is missing (a demo set from before the image set), the run
            uses ``fallback`` overrides instead.
        fallback: overrides that replace the missing files.
        score: ``(bench, entry, export) -> scores``; ``video`` is its JSON figure, ``video_random`` its baseline.
    """

    key: str
    title: str
    recipe: str
    overrides: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    fallback: tuple[str, ...] = ()
    score: Callable[[Bench, MethodEntry, Path], dict[str, float | None]] = field(default=probe_scores)
    init_from: str | None = None
    """Key of the entry whose export starts this run's vision tower (``init=``): it must have run first."""
    default: bool = True
    """Run without ``--only``; false: only when ``--only`` names it (keeps the default bench under 30 minutes)."""


def maeclip_scores(bench: Bench, entry: MethodEntry, export: Path) -> dict[str, float | None]:
    """The linear probes of the MAE-CLIP vision tower (its ``export/model.safetensors``), plus the run's own
    zero-shot report (``zero_shot.json`` of the method's ``finish``: val top-1 from class-name prompts, against chance
    and the same model before training, and retrieval recall@1 both ways), and what its towers tell apart
    (:mod:`clip_cues`)."""
    report = json.loads((export.parent.parent / "zero_shot.json").read_text())
    trained, init = report["trained"], report.get("init", {})
    retrieval = trained["retrieval"]
    return probe_scores(bench, entry, export) | {
        "zero_shot": trained["top1"], "zero_shot_init": init.get("top1"), "zero_shot_chance": trained["chance"],
        "v2t_r1": retrieval["video_to_text"]["R@1"], "t2v_r1": retrieval["text_to_video"]["R@1"],
        **clip_cue_scores(export.parent.parent, bench.demo / "val.csv", bench.demo),
    }  # fmt: skip


FRAMES_AS_IMAGES = ("data.manifests=[demo_data/train_unlabeled.csv]",)
"""Image methods on a demo set without images: one frame of each training clip (a random one per step)."""
ENTRIES = (
    MethodEntry("video_mae", "video MAE (VideoMAE V2)", "demo"),
    MethodEntry(
        "image_mae", "image MAE", "mae_image_demo", needs=("train_images_unlabeled.csv",), fallback=FRAMES_AS_IMAGES
    ),
    MethodEntry(
        "mocov3_image",
        "MoCo v3, images",
        "mocov3_demo",
        needs=("train_images_unlabeled.csv",),
        fallback=FRAMES_AS_IMAGES,
    ),
    MethodEntry("mocov3_video", "MoCo v3, clips", "mocov3_video_demo"),
    MethodEntry("maeclip", "MAE-CLIP, from scratch", "maeclip_demo", score=maeclip_scores),
    MethodEntry(
        "maeclip_init",
        "MAE-CLIP, from video MAE",
        "maeclip_demo",
        score=maeclip_scores,
        init_from="video_mae",
        default=False,
    ),
)
MAECLIP_HEADLINE = ("maeclip", "maeclip_init")
"""The entry whose zero-shot top-1 is the JSON line's ``maeclip_zero_shot``: the demo recipe's own run when it ran."""


def ensure_demo(bench: Bench) -> None:
    """``videomae demo-data`` into the scratch folder, once."""
    if (bench.demo / "demo.json").is_file():
        return
    print(f"== writing the demo data to {bench.demo}", flush=True)
    command = [sys.executable, "-m", "videomae", "demo-data", str(bench.demo), "--num-val", str(VAL_CLIPS), "--quiet"]
    subprocess.run(command, check=True, env=_env())


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    return env


def _logged_steps(metrics: Path) -> list[int]:
    if not metrics.is_file():
        return []
    steps = []
    for line in metrics.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line being written
            continue
        if record.get("loss") is not None:
            steps.append(int(record["step"]))
    return steps


def pretrain(bench: Bench, entry: MethodEntry) -> tuple[Path, float]:
    """Run the entry's recipe for ``bench.steps`` steps from scratch -> ``(export, steps/s)``.

    steps/s is measured between the first and the last logged training step (the metrics file is watched), so the
    start-up, the first step's warm-up and the final export are not in it. With ``bench.reuse``, a run this bench
    finished before with the same steps is kept (its recorded steps/s reported again).
    """
    run = bench.work / "runs" / entry.key
    record = run / "methods_pay.json"
    if bench.reuse and record.is_file() and (run / RUN_EXPORT).is_file():
        done = json.loads(record.read_text())
        same = (done.get("steps"), done.get("recipe"), done.get("init"), done.get("overrides", [])) == (
            bench.steps, entry.recipe, entry.init_from, list(bench.overrides)
        )  # fmt: skip
        if same:
            print(f"== {entry.key}: reusing {run} ({bench.steps} steps)", flush=True)
            return run / RUN_EXPORT, done["steps_per_s"]
    shutil.rmtree(run, ignore_errors=True)
    launcher = {"deepspeed": [str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", str(_free_port())],
                "python": [sys.executable]}[bench.launcher]  # fmt: skip
    missing = [name for name in entry.needs if not (bench.demo / name).is_file()]
    if missing:
        print(f"== {entry.key}: the demo set has no {', '.join(missing)}; {' '.join(entry.fallback)}", flush=True)
    init = [f"init={bench.work / 'runs' / entry.init_from / RUN_EXPORT}"] if entry.init_from else []
    command = [*launcher, str(ROOT / "launch" / "pretrain.py"), "--config", entry.recipe, f"output_dir={run}",
               f"train.max_steps={bench.steps}", f"seed={bench.seed}", *entry.overrides, *bench.overrides, *init,
               *(entry.fallback if missing else ())]  # fmt: skip
    print("== " + " ".join(command), flush=True)
    proc = subprocess.Popen(command, cwd=bench.work, env=_env())
    first = last = None
    while proc.poll() is None:
        time.sleep(0.25)
        steps = _logged_steps(run / "metrics.jsonl")
        if steps and first is None:
            first = (steps[0], time.perf_counter())
        if steps and steps[-1] != (last or (None,))[0]:
            last = (steps[-1], time.perf_counter())
    if proc.returncode != 0:
        raise RuntimeError(f"{entry.recipe}: the pretraining failed (exit {proc.returncode}; its log is above)")
    rate = (last[0] - first[0]) / (last[1] - first[1]) if first and last and last[1] > first[1] else float("nan")
    record.write_text(
        json.dumps({"recipe": entry.recipe, "init": entry.init_from, "steps": bench.steps,
                    "overrides": list(bench.overrides), "steps_per_s": rate}) + "\n"
    )  # fmt: skip
    return run / RUN_EXPORT, rate


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/videomae_methods_pay", help="scratch folder (demo data, runs)")
    parser.add_argument("--steps", type=int, default=300, help="pretraining steps of every method (default 300)")
    parser.add_argument(
        "--only",
        type=lambda v: v.split(","),
        default=None,
        metavar="KEY[,KEY]",
        help="these entries only (an entry started from another needs that one's run)",
    )
    parser.add_argument("--launcher", choices=("deepspeed", "python"), default="deepspeed",
                        help="deepspeed: 2 processes (default); python: one")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the runs and of the random encoders")
    parser.add_argument("--reuse", action="store_true", help="keep runs this bench finished with the same steps "
                        "(probe them again without pretraining)")  # fmt: skip
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="config override of every run, after the entry's own (repeatable; ablations)")  # fmt: skip
    args = parser.parse_args()
    bench = Bench(Path(args.work).resolve(), args.steps, args.launcher, args.seed, args.reuse, tuple(args.override))
    bench.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ensure_demo(bench)
    rows: dict[str, dict[str, Any]] = {}
    for entry in ENTRIES:
        if entry.key not in (args.only or [e.key for e in ENTRIES if e.default]):
            continue
        if not (RECIPES / "pretrain" / f"{entry.recipe}.yaml").is_file():
            print(f"== {entry.key}: skipped, no recipe videomae/recipes/pretrain/{entry.recipe}.yaml yet", flush=True)
            rows[entry.key] = {"skipped": f"no recipe {entry.recipe}"}
            continue
        if entry.init_from and not (bench.work / "runs" / entry.init_from / RUN_EXPORT).is_file():
            print(f"== {entry.key}: skipped, no {entry.init_from} run to start from (run it first)", flush=True)
            rows[entry.key] = {"skipped": f"no {entry.init_from} run"}
            continue
        began = time.perf_counter()
        export, rate = pretrain(bench, entry)
        scores = entry.score(bench, entry, export)
        rows[entry.key] = {"steps_per_s": rate, "minutes": (time.perf_counter() - began) / 60, **scores}
        print(f"== {entry.key}: {rows[entry.key]}", flush=True)
    print_table(bench, rows, (time.perf_counter() - start) / 60)
    return 0


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _gain(row: dict[str, Any], key: str) -> float | None:
    value, random = row.get(key), row.get(f"{key}_random")
    return None if value is None or random is None else value - random


def print_cue_table(rows: dict[str, dict[str, Any]], titles: dict[str, str]) -> None:
    """Per method and set, the val top-1 of the probe of each cue alone (:mod:`demo_cues`), its random twin's after."""
    print("\nWhat the features keep: val top-1 of a linear probe per cue (random twin in brackets); chance: shape "
          "0.33, direction 0.50, hue 0.17, stripes 0.25, size 0.33")  # fmt: skip
    print(f"{'method':<26}{'set':<7}" + "".join(f"{cue:>16}" for cue in CUES))
    for key, row in rows.items():
        for name in ("video", "image"):
            if row.get(name) is None:
                continue
            cells = [f"{_fmt(row.get(f'{name}_{c}'))} ({_fmt(row.get(f'{name}_{c}_random'))})" for c in CUES]
            print(f"{titles[key]:<26}{name:<7}" + "".join(f"{cell:>16}" for cell in cells))


def print_table(bench: Bench, rows: dict[str, dict[str, Any]], minutes: float) -> None:
    """The table, then the JSON line (last)."""
    titles = {e.key: e.title for e in ENTRIES}
    print(f"\nDemo set, linear probe val top-1 (video set: {PROBE_FRAMES} frames x 64 px, 6 classes, chance 0.167; "
          f"{bench.steps} steps per method, launcher {bench.launcher}; {minutes:.1f} min)")  # fmt: skip
    header = f"{'method':<26}{'steps':>6}{'steps/s':>9}{'probe':>8}{'random':>8}{'- random':>10}"
    print(header + f"{'image set':>10}{'(random)':>9}{'- random':>10}")
    for key, row in rows.items():
        if "skipped" in row:
            print(f"{titles[key]:<26}  skipped: {row['skipped']}")
            continue
        print(f"{titles[key]:<26}{bench.steps:>6}{row['steps_per_s']:>9.2f}{_fmt(row['video']):>8}"
              f"{_fmt(row['video_random']):>8}{_fmt(_gain(row, 'video'), '+.3f'):>10}{_fmt(row.get('image')):>10}"
              f"{_fmt(row.get('image_random')):>9}{_fmt(_gain(row, 'image'), '+.3f'):>10}")  # fmt: skip
    scored = {k: r for k, r in rows.items() if "skipped" not in r}
    print_cue_table(scored, titles)
    clip_rows = {k: r for k, r in scored.items() if "zero_shot" in r}
    if clip_rows:
        print(
            "\nZero-shot on the demo val set (class-name prompts), retrieval recall@1 (val captions), the zero-shot "
            "predictions scored per half of the class, and what the text tower tells apart (bench/clip_cues.py)"
        )
        print(f"{'method':<26}{'top-1':>7}{'before':>8}{'chance':>8}{'video->text':>13}{'text->video':>13}"
              f"{'shape':>7}{'direction':>10}   text similarity: colour / shape / direction")  # fmt: skip
        for key, row in clip_rows.items():
            text = " / ".join(f"{row[f'text_{cue}']:.2f}" for cue in ("colour", "shape", "direction"))
            print(f"{titles[key]:<26}{row['zero_shot']:>7.3f}{_fmt(row['zero_shot_init']):>8}"
                  f"{row['zero_shot_chance']:>8.3f}{row['v2t_r1']:>13.3f}{row['t2v_r1']:>13.3f}"
                  f"{row['zs_shape']:>7.3f}{row['zs_direction']:>10.3f}   {text}")  # fmt: skip
    line = {"random": scored.get("video_mae", {}).get("video_random")}
    line |= {e.key: scored.get(e.key, {}).get("video") for e in ENTRIES}
    line["chance"] = 1 / 6
    line["random_per_method"] = {k: r["video_random"] for k, r in scored.items()}
    zero_shot = {k: scored[k]["zero_shot"] for k in MAECLIP_HEADLINE if k in scored}
    line["maeclip_zero_shot"] = next(iter(zero_shot.values()), None)
    line["maeclip_zero_shot_per_entry"] = zero_shot
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in line.items()}))


if __name__ == "__main__":
    sys.exit(main())
