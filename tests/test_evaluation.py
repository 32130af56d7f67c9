"""Multi-view evaluation: per-video averaging, 2-rank gather with an uneven count, metrics, PNG and CSV."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from helpers import free_port
from PIL import Image

from videomae.engine.dist import all_gather_objects
from videomae.evaluation.metrics import classification_metrics, confusion_matrix
from videomae.evaluation.multiview import MultiViewAccumulator, views_from_repeats
from videomae.evaluation.reports import save_confusion_png, save_predictions_csv

# 5 videos x 2 views x 6 classes. Labels and the hand-derived outcome of the view-averaged scores:
#   video 0 (label 0): view 0 sure of 0, view 1 mildly 5 -> predicts 0, right
#   video 1 (label 1): both views 1                       -> right
#   video 2 (label 2): views say 0 and 2, 0 stronger      -> predicts 0, label second: wrong at top-1, in top-5
#   video 3 (label 3): 3 and 4, 3 stronger                -> right
#   video 4 (label 1): both views 2, class 1 lowest       -> wrong, and outside the top-5
LABELS = [0, 1, 2, 3, 1]
LOGITS = torch.full((5, 2, 6), 0.0)
LOGITS[0, 0, 0], LOGITS[0, 1, 5] = 5.0, 1.0
LOGITS[1, :, 1] = 3.0
LOGITS[2, 0, 0], LOGITS[2, 1, 2] = 4.0, 2.0
LOGITS[3, 0, 3], LOGITS[3, 1, 4] = 4.0, 1.0
LOGITS[4, :, 2], LOGITS[4, :, 1] = 3.0, -2.0
TOP1, TOP5 = 3 / 5, 4 / 5
MEAN_CLASS = (1.0 + 0.5 + 0.0 + 1.0) / 4  # classes 0..3 have videos: recalls 1/1, 1/2, 0/1, 1/1


def _hand_scores() -> torch.Tensor:
    """Mean over views of the softmax, written out with math.exp."""
    out = torch.zeros(5, 6)
    for v in range(5):
        for view in range(2):
            exps = [math.exp(float(x)) for x in LOGITS[v, view]]
            for c in range(6):
                out[v, c] += exps[c] / sum(exps) / 2
    return out


def _batch(videos: list[int]) -> dict[str, torch.Tensor]:
    """A collate_clips-style batch: each video's 2 views as consecutive rows, index and label repeated."""
    return {
        "logits": torch.cat([LOGITS[v] for v in videos]),  # (2 * len(videos), 6)
        "label": torch.tensor([LABELS[v] for v in videos for _ in range(2)]),
        "index": torch.tensor([v for v in videos for _ in range(2)]),
    }


def _rank_batches(rank: int, world: int = 2, batch_size: int = 2) -> list[list[int]]:
    """What a padding distributed sampler gives: [0..4] padded to 6 with video 0 again, then strided by rank."""
    order = [0, 1, 2, 3, 4, 0]
    mine = order[rank::world]
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]


def _check(predictions, metrics) -> None:
    assert predictions.indices.tolist() == [0, 1, 2, 3, 4]
    assert predictions.num_views.tolist() == [2] * 5, "padded duplicates of video 0 must not count twice"
    assert predictions.labels.tolist() == LABELS
    torch.testing.assert_close(predictions.scores, _hand_scores(), rtol=0, atol=1e-6)
    assert (metrics.top1, metrics.top5, metrics.mean_class_accuracy) == pytest.approx((TOP1, TOP5, MEAN_CLASS))
    assert metrics.num_videos == 5


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch_dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        acc = MultiViewAccumulator(num_views=2, gather=all_gather_objects)
        for videos in _rank_batches(rank):
            batch = _batch(videos)
            acc.update(batch["logits"], batch["label"], batch["index"])
        predictions = acc.compute(expected_videos=5)
        metrics = classification_metrics(predictions.scores, predictions.labels)
        torch.save({"predictions": predictions.__dict__, "metrics": metrics.as_dict()}, Path(out_dir) / f"{rank}.pt")
    finally:
        torch_dist.destroy_process_group()


def test_two_rank_gather_with_uneven_count(tmp_path) -> None:
    assert _rank_batches(0) == [[0, 2], [4]] and _rank_batches(1) == [[1, 3], [0]]
    # spawn, not fork: a fork after earlier tests ran multi-threaded torch ops can deadlock in the children
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        result = torch.load(tmp_path / f"{rank}.pt")
        p = result["predictions"]
        assert p["indices"].tolist() == [0, 1, 2, 3, 4] and p["num_views"].tolist() == [2] * 5
        torch.testing.assert_close(p["scores"], _hand_scores(), rtol=0, atol=1e-6)
        m = result["metrics"]
        assert (m["top1"], m["top5"], m["mean_class_accuracy"], m["num_videos"]) == pytest.approx(
            (TOP1, TOP5, MEAN_CLASS, 5)
        )


def test_single_process_with_duplicate_in_one_batch() -> None:
    acc = MultiViewAccumulator(num_views=2)
    for videos in ([0, 1, 0], [2, 3], [4, 1]):
        batch = _batch(videos)
        acc.update(batch["logits"], batch["label"], batch["index"])
    predictions = acc.compute(expected_videos=5)
    _check(predictions, classification_metrics(predictions.scores, predictions.labels))


def test_views_from_repeats_and_errors() -> None:
    assert views_from_repeats(torch.tensor([7, 7, 3, 3, 7, 7]), 2).tolist() == [0, 1, 0, 1, 0, 1]
    with pytest.raises(ValueError, match="not multiples of num_views=2"):
        views_from_repeats(torch.tensor([1, 1, 2]), 2)
    acc = MultiViewAccumulator(num_views=2)
    batch = _batch([0, 1])
    acc.update(batch["logits"], batch["label"], batch["index"])
    with pytest.raises(ValueError, match=r"missing \[2, 3, 4\]"):
        acc.compute(expected_videos=5)
    acc.update(LOGITS[0], torch.tensor([3, 3]), torch.tensor([9, 9]), views=torch.tensor([0, 1]))
    acc.update(LOGITS[0, :1], torch.tensor([4]), torch.tensor([9]), views=torch.tensor([1]))
    with pytest.raises(ValueError, match=r"videos \[9\] carry different labels in different rows"):
        acc.compute()


def test_metrics_against_hand_count() -> None:
    scores = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7], [0.5, 0.1, 0.4], [0.3, 0.3, 0.4]])
    labels = torch.tensor([0, 2, 2, 2, -1])  # the unlabelled row is skipped
    m = classification_metrics(scores, labels, topk=2)
    # top-1: rows 0 and 2 right -> 2/4; top-2: row 1 (2 is second) and row 3 (2 is second) too -> 4/4
    assert (m.top1, m.top5) == (0.5, 1.0)
    # class 0: 1/1, class 2: 1/3 -> mean 2/3 (class 1 has no video and is not averaged)
    assert m.mean_class_accuracy == pytest.approx(2 / 3)
    assert m.confusion.tolist() == [[1, 0, 0], [0, 0, 0], [1, 1, 1]]
    assert confusion_matrix(torch.tensor([1, 1]), torch.tensor([0, 1]), 2).tolist() == [[0, 0], [1, 1]]


@pytest.mark.parametrize(("num_classes", "names"), [(4, ["walk", "run", "jump", "swim"]), (300, None)])
def test_confusion_png_is_readable(tmp_path, num_classes, names) -> None:
    counts = np.zeros((num_classes, num_classes), np.int64)
    counts[np.arange(num_classes), np.arange(num_classes)] = 9
    counts[0, 1] = 9  # class 0: half right
    path = save_confusion_png(torch.from_numpy(counts), tmp_path / "cm.png", class_names=names)
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[0] >= 2 * num_classes and image.shape[1] >= 2 * num_classes
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 5, "not blank"

    def pixels(rgb: tuple[int, int, int]) -> int:
        return int((image == np.array(rgb, np.uint8)).all(axis=2).sum())

    if names:  # cells of 32 px: 3 diagonal cells at recall 1.0 (yellow), 2 cells of row 0 at 0.5 (teal)
        assert pixels((253, 231, 37)) > 3 * 32 * 32 * 0.8
        assert pixels((33, 145, 140)) > 2 * 32 * 32 * 0.8
        assert (image[:, :30] < 100).all(axis=2).sum() > 20, "class names drawn left of the matrix"
    else:
        assert pixels((253, 231, 37)) >= (num_classes - 1) * 4


def test_predictions_csv_round_trip(tmp_path) -> None:
    acc = MultiViewAccumulator(num_views=2)
    batch = _batch([0, 1, 2, 3, 4])
    acc.update(batch["logits"], batch["label"], batch["index"])
    predictions = acc.compute()
    names = ["a", "b", "c", "d", "e", "f"]
    paths = [f"videos/clip_{i}.mp4" for i in range(5)]
    path = save_predictions_csv(predictions, tmp_path / "pred.csv", paths=paths, class_names=names, top_k=3)
    rows = list(csv.DictReader(path.open()))
    assert [r["index"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert rows[2]["path"] == "videos/clip_2.mp4" and rows[2]["label_name"] == "c"
    assert (rows[2]["pred_1"], rows[2]["name_1"], rows[2]["pred_2"]) == ("0", "a", "2")
    assert [r["correct"] for r in rows] == ["1", "1", "0", "1", "0"]
    assert float(rows[1]["score_1"]) == pytest.approx(float(_hand_scores()[1, 1]), abs=1e-6)
    assert list(rows[0]) == ["index", "path", "label", "label_name", "num_views", "correct",
                             "pred_1", "name_1", "score_1", "pred_2", "name_2", "score_2", "pred_3", "name_3",
                             "score_3"]  # fmt: skip
