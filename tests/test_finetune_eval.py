"""Multi-view evaluation of a classifier on real demo clips: shards without padding, per-video averaging checked
against a view-by-view recomputation, 2 ranks (gloo) equal to 1, and the files of a test read back."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from helpers import free_port
from PIL import Image

from videomae.config import ManifestSource, load_finetune_config
from videomae.data.demo import CLASS_NAMES, DemoConfig, write_demo_dataset
from videomae.methods.finetune_data import build_eval_dataset, eval_batches, eval_shard
from videomae.methods.validation import score_dataset, write_eval_outputs

NUM_VAL = 7  # odd: two ranks get 4 and 3 videos


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo_eval")
    write_demo_dataset(out, DemoConfig(num_train=6, num_val=NUM_VAL, frames=16), workers=1)
    return out


def _dataset(demo: Path, out: Path, views: tuple[int, int] = (2, 3)):
    cfg = load_finetune_config(None, ["train.max_steps=1", f"data.data_root={demo}", "data.input_size=32",
                                      "data.num_frames=4", "data.short_side_size=48"])  # fmt: skip
    sources = [ManifestSource(str(demo / "val.csv"))]
    return build_eval_dataset("data.val_manifests", sources, cfg.data, list(CLASS_NAMES), views, out)


def _forward(videos: torch.Tensor) -> torch.Tensor:
    """A fixed function of the pixels: per-channel means and the first/last frame difference -> 6 logits."""
    weight = torch.linspace(-3, 3, 6 * 6).reshape(6, 6)
    feats = torch.cat([videos.mean(dim=(2, 3, 4)), (videos[:, :, -1] - videos[:, :, 0]).mean(dim=(2, 3))], dim=1)
    return feats @ weight.T * 10  # (N, 6)


def test_shards_cover_every_video_once_without_padding():
    for videos, world in [(7, 2), (5, 4), (3, 4), (8, 2)]:
        shards = [eval_shard(videos, r, world) for r in range(world)]
        assert sorted(i for shard in shards for i in shard) == list(range(videos))
        batches = eval_batches(videos, world, batch_size=2)
        assert batches == max(-(-len(s) // 2) for s in shards)


def test_views_are_averaged_per_video_and_files_match_a_recomputation(demo, tmp_path):
    dataset = _dataset(demo, tmp_path)
    result = score_dataset(_forward, dataset, rank=0, world_size=1, batch_size=3, num_workers=0,
                           device=torch.device("cpu"))  # fmt: skip
    assert result.num_views == 6 and result.unreadable == 0
    assert result.predictions.indices.tolist() == list(range(NUM_VAL))
    assert result.predictions.num_views.tolist() == [6] * NUM_VAL
    for i in range(NUM_VAL):  # the reference: each video's 6 views scored one by one, softmax, mean
        sample = dataset[i]
        assert sample["video"].shape == (6, 3, 4, 32, 32)
        expected = _forward(sample["video"]).softmax(dim=-1).mean(dim=0)
        torch.testing.assert_close(result.predictions.scores[i], expected, rtol=1e-5, atol=1e-6)
        assert result.predictions.labels[i] == sample["label"]

    info = {"split": "val", "step": 7, "weights": "test"}
    summary = write_eval_outputs(result, tmp_path / "eval", list(CLASS_NAMES), [r.path for r in dataset.rows], info)
    written = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert written == summary and written["step"] == 7 and written["num_views"] == 6
    with open(tmp_path / "eval/predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["index"]) for r in rows] == list(range(NUM_VAL))
    assert [r["path"] for r in rows] == [r.path for r in dataset.rows]
    labels = [int(r["label"]) for r in rows]
    top5 = [[int(r[f"pred_{k}"]) for k in range(1, 6)] for r in rows]
    assert [r["label_name"] for r in rows] == [CLASS_NAMES[y] for y in labels]
    assert all(int(r["correct"]) == (p[0] == y) for r, p, y in zip(rows, top5, labels))
    top1 = sum(p[0] == y for p, y in zip(top5, labels)) / NUM_VAL
    recall = {}
    for c in set(labels):
        members = [p[0] for p, y in zip(top5, labels) if y == c]
        recall[c] = sum(p == c for p in members) / len(members)
    assert written["top1"] == pytest.approx(top1)
    assert written["top5"] == pytest.approx(sum(y in p for p, y in zip(top5, labels)) / NUM_VAL)
    assert written["mean_class_accuracy"] == pytest.approx(sum(recall.values()) / len(recall))
    # The fixed forward is neither hopeless nor perfect, so the checks above bite (top-5 of 6 classes may be 1).
    assert 0 < written["top1"] < 1 and 0 < written["mean_class_accuracy"] < 1, written
    picture = Image.open(tmp_path / "eval/confusion.png")
    assert picture.size[0] > 6 * 20 and picture.mode == "RGB"


def _rank(rank: int, port: int, demo: str, out: str) -> None:
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        dataset = _dataset(Path(demo), Path(out), views=(2, 1))
        calls = []

        def forward(videos: torch.Tensor) -> torch.Tensor:
            calls.append(len(videos))
            return _forward(videos)

        result = score_dataset(forward, dataset, rank=rank, world_size=2, batch_size=3, num_workers=0,
                               device=torch.device("cpu"), lockstep=True)  # fmt: skip
        torch.save({"scores": result.predictions.scores, "indices": result.predictions.indices, "calls": calls},
                   Path(out) / f"rank{rank}.pt")  # fmt: skip
    finally:
        torch_dist.destroy_process_group()


def test_two_ranks_score_each_video_once_and_agree_with_one(demo, tmp_path):
    # spawn, not fork: a fork after earlier tests ran multi-threaded torch ops can deadlock in the children
    mp.spawn(_rank, args=(free_port(), str(demo), str(tmp_path)), nprocs=2, join=True)
    single = score_dataset(_forward, _dataset(demo, tmp_path, views=(2, 1)), rank=0, world_size=1, batch_size=3,
                           num_workers=0, device=torch.device("cpu"))  # fmt: skip
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for got in ranks:  # every rank holds every video's scores after the gather
        assert got["indices"].tolist() == list(range(NUM_VAL))
        torch.testing.assert_close(got["scores"], single.predictions.scores)
    # Rank 0 scores videos 0, 2, 4, 6 (batches of 3 + 1), rank 1 videos 1, 3, 5 (one batch of 3), then repeats it
    # once so both run 2 forward passes (lockstep); 2 views per video.
    assert ranks[0]["calls"] == [6, 2] and ranks[1]["calls"] == [6, 6]
