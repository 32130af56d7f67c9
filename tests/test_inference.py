"""Using a trained model: predictions and clip features against direct forwards on the same frames, decode once."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from helpers import EXPORT_LABELS, TINY_GRID, csv_manifest

from videomae.checkpoint import CheckpointError
from videomae.data import readers
from videomae.data.decoding import probe_video, read_frames
from videomae.data.sampling import sample_test_indices
from videomae.data.transforms import EvalTransform
from videomae.inference import extract_features, load_inference_model, predict_videos, sliding_clips
from videomae.inference.features import feature_file_name
from videomae.models import create_model


def direct_probs(model: torch.nn.Module, path, segments: int, crops: int, rate: int) -> torch.Tensor:
    """Mean softmax over the views, read and transformed view by view with the low-level functions."""
    n = probe_video(path).num_frames
    views = [
        EvalTransform(32, num_crops=crops)(read_frames(path, idx)) for idx in sample_test_indices(n, 4, rate, segments)
    ]
    with torch.no_grad():
        return model(torch.cat(views)).softmax(dim=-1).mean(dim=0)


def test_predict_equals_a_direct_forward_on_the_same_views(exports, media):
    model = load_inference_model(exports["classifier"])
    assert (
        model.is_classifier and model.label_names == EXPORT_LABELS and (model.num_frames, model.input_size) == (4, 32)
    )
    paths = [media["h264"], media["frames"], media["mpeg4_avi"]]
    predictions = predict_videos(model, paths, num_segments=2, num_crops=3, sampling_rate=2, batch_size=2)
    assert [p.path for p in predictions] == [str(p) for p in paths]
    for prediction, path in zip(predictions, paths):
        expected = direct_probs(model.model, path, segments=2, crops=3, rate=2)
        assert prediction.valid and prediction.num_views == 6
        torch.testing.assert_close(prediction.probs, expected, atol=1e-6, rtol=1e-5)
        top = prediction.top_k(3)
        assert [c for c, _ in top] == expected.topk(3).indices.tolist()
        assert [p for _, p in top] == pytest.approx(expected.topk(3).values.tolist(), abs=1e-6)
    assert not torch.allclose(predictions[0].probs, predictions[1].probs, atol=1e-3)  # the videos really differ


def test_predict_reports_an_unreadable_video_and_keeps_the_order(exports, media):
    model = load_inference_model(exports["classifier"])
    first, second = predict_videos(model, [media["junk"], media["h264"]], num_segments=1)
    assert not first.valid and first.top_k(5) == [] and first.path == str(media["junk"])
    assert second.valid and second.index == 1
    torch.testing.assert_close(second.probs, direct_probs(model.model, media["h264"], 1, 1, 4), atol=1e-6, rtol=1e-5)


def test_sliding_clips_by_hand():
    assert sliding_clips(20, 4, 2, 5) == [[0, 2, 4, 6], [5, 7, 9, 11], [10, 12, 14, 16]]  # span 7, last start 13
    assert sliding_clips(7, 4, 2, 3) == [[0, 2, 4, 6]]
    assert sliding_clips(5, 4, 2, 3) == [[0, 2, 4, 4]]  # shorter than one clip: the last frame repeats
    with pytest.raises(ValueError, match="stride=0"):
        sliding_clips(10, 4, 1, 0)


def test_feature_file_names_keep_the_path():
    a = feature_file_name(0, "/data/k400/abseiling/clip.mp4", "/data/k400")
    b = feature_file_name(1, "/data/k400/zumba/clip.mp4", "/data/k400")
    assert (a, b) == ("000000_abseiling_clip.npy", "000001_zumba_clip.npy")
    assert feature_file_name(12, "/elsewhere/x y.avi") == "000012_elsewhere_x_y.npy"


@pytest.mark.parametrize(("kind", "pool"), [("classifier", "mean"), ("pretrain", "mean"), ("classifier", "tokens")])
def test_extract_features_writes_every_clip_equal_to_a_direct_forward(exports, media, tmp_path, kind, pool):
    # frames per video: h264 64, frames folder 40, short 6; clip span (4 - 1) * 2 + 1 = 7, stride 8
    rows = [(media["h264"], "a"), (media["short"], "b"), (media["junk"], "a"), (media["frames"], "b")]
    manifest = csv_manifest(tmp_path / "m.csv", rows)
    model = load_inference_model(exports[kind])
    out = tmp_path / "features"
    files = extract_features(model, manifest, out, sampling_rate=2, stride=8, batch_size=3, pool=pool)
    assert [f.num_clips for f in files] == [8, 1, 0, 5]
    assert files[2].error and not files[2].file
    with open(out / "features.csv", newline="") as f:
        index = list(csv.DictReader(f))
    assert [(r["index"], r["path"], r["num_clips"]) for r in index] == [
        (str(i), str(p), str(n)) for i, ((p, _), n) in enumerate(zip(rows, [8, 1, 0, 5]))
    ]
    net = model.model
    for entry, n in zip(files, (64, 6, 0, 40)):
        if not entry.file:
            continue
        saved = np.load(out / entry.file)
        clips = sliding_clips(n, 4, 2, 8)
        videos = torch.cat([EvalTransform(32)(read_frames(entry.path, idx)) for idx in clips])  # (clips, C, T, S, S)
        with torch.no_grad():
            encoder = net.encoder if kind == "pretrain" else net
            if pool == "tokens":
                expected = encoder.forward_tokens(videos)
            elif kind == "classifier":
                expected = net.forward_features(videos)  # fc_norm of the token mean
            else:
                expected = encoder.forward_tokens(videos).mean(dim=1)
        assert saved.dtype == np.float32 and saved.shape == tuple(expected.shape)
        np.testing.assert_allclose(saved, expected.numpy(), atol=2e-5, rtol=1e-4)
    assert (out / "features.json").is_file()


def test_each_video_is_decoded_once(exports, media, tmp_path, monkeypatch):
    calls: list[str] = []
    for cls in (readers.DecordReader, readers.PyAVReader, readers.FrameFolderReader):
        original = cls.read

        def counted(self, indices, _original=original, _name=cls.__name__):
            calls.append(_name)
            return _original(self, indices)

        monkeypatch.setattr(cls, "read", counted)
    manifest = csv_manifest(tmp_path / "m.csv", [(media["h264"], "a"), (media["frames"], "b"), (media["mpeg4_avi"],)])
    features = load_inference_model(exports["pretrain"])
    extract_features(features, manifest, tmp_path / "f", sampling_rate=1, stride=2, batch_size=4)  # overlapping
    assert len(calls) == 3
    calls.clear()
    classifier = load_inference_model(exports["classifier"])
    predict_videos(classifier, [media["h264"], media["frames"]], num_segments=3, num_crops=3)
    assert len(calls) == 2


def test_other_checkpoints_need_a_model_name(exports, tmp_path):
    state = {"model": create_model("vit_tiny_patch16_224", **TINY_GRID, num_classes=5).state_dict()}
    torch.save(state, tmp_path / "release.pth")
    with pytest.raises(CheckpointError, match="--model NAME"):
        load_inference_model(tmp_path / "release.pth")
    model = load_inference_model(tmp_path / "release.pth", model_name="vit_tiny_patch16_224",
                                 overrides=dict(TINY_GRID, num_classes=5))  # fmt: skip
    assert model.is_classifier and model.label_names is None
    with pytest.raises(CheckpointError, match=r"leaves 4 tensors of vit_tiny_patch16_224 unfilled \(fc_norm"):
        load_inference_model(exports["pretrain"], model_name="vit_tiny_patch16_224", overrides=TINY_GRID)
    encoder = load_inference_model(exports["pretrain"], model_name="vit_tiny_patch16_224", overrides=TINY_GRID,
                                   allow_missing=("head.", "fc_norm."))  # fmt: skip
    assert any("fc_norm.weight: not in the checkpoint" in note for note in encoder.notes)
    with pytest.raises(CheckpointError, match="does not take"):
        load_inference_model(tmp_path / "release.pth", model_name="vit_tiny_patch16_224", overrides={"depthh": 3})
