"""MAE-CLIP's model, tokenizer, export and zero-shot / retrieval scoring, on tiny sizes and crafted examples."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from videomae.checkpoint_maeclip import export_maeclip, load_maeclip
from videomae.config import ConfigError, load_config
from videomae.evaluation.retrieval import retrieval_recall
from videomae.evaluation.zero_shot import class_prompts, zero_shot_report
from videomae.models import create_model
from videomae.models.maeclip import MaeClipModel
from videomae.text import CaptionTokenizer, load_tokenizer

TINY_VISION = {"img_size": 32, "patch_size": 8, "all_frames": 4}


def tiny_model(vision: dict = TINY_VISION, **kw) -> MaeClipModel:
    args = dict(embed_dim=16, vocab_size=50, context_length=6, text_width=16, text_depth=1, text_num_heads=2,
                decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, mlm_head=True)  # fmt: skip
    return MaeClipModel("vit_tiny_patch16_224", vision, **{**args, **kw})


def test_packaged_tokenizer_round_trips_offline_and_frames_each_caption():
    tok = load_tokenizer(None, 12)
    text = "A red square drifts UP, then stops; naïve café 🙂"
    ids = tok([text, "", "x " * 40])
    assert ids.shape == (3, 12) and ids.dtype == torch.int64
    wide = load_tokenizer(None, 64)
    assert wide.decode(wide([text])) == [text.lower()]  # byte-level BPE: nothing is lost but the case
    assert ids[1, :3].tolist() == [tok.sot_id, tok.eot_id, tok.pad_id]
    assert ids[2, -1].item() == tok.eot_id and (ids[2] != tok.pad_id).all()  # cut before the end token
    counts = wide.token_counts([text, "", "x " * 40])  # before the cut: what the text needs, <sot> and <eot> too
    assert counts[1] == 2 and counts[2] > 12
    assert counts[0] == int((wide([text]) != wide.pad_id).sum()) < 64
    again = load_tokenizer(None, 12, json_text=tok.to_json())  # as an export stores it
    assert torch.equal(again([text]), ids[:1])


def test_a_vocabulary_without_pad_or_mask_gets_them_appended():
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a": 2, "b": 3, "[UNK]": 4}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = CaptionTokenizer(raw, 5)
    assert (tok.sot_id, tok.eot_id, tok.vocab_size) == (0, 1, 7)  # CLIP's names found; <pad>, <mask> appended
    assert tok(["a b a b"]).tolist() == [[0, 2, 3, 2, 1]]
    assert tok(["b"]).tolist() == [[0, 3, 1, tok.pad_id, tok.pad_id]]


@pytest.mark.parametrize("pooling", ["gap", "map", "max"])
def test_passes_shapes_and_the_vision_tower_is_the_registered_classifier(pooling):
    torch.manual_seed(0)
    model = tiny_model(pooling=pooling).eval()
    videos = torch.randn(2, 3, 4, 32, 32)
    tokens = torch.tensor([[1, 7, 8, 2, 0, 0], [1, 9, 2, 0, 0, 0]])
    mask = torch.zeros(2, 32, dtype=torch.bool)
    mask[:, ::4] = True
    out = model(videos, tokens, mask, mask, tokens)
    assert out["video"].shape == out["text"].shape == (2, 16)
    for key in ("video", "text"):
        torch.testing.assert_close(out[key].norm(dim=-1), torch.ones(2))
    assert out["pixels"].shape == (2, 8, 3 * 2 * 8 * 8) and out["mlm_logits"].shape == (2, 6, 50)
    classifier = create_model("vit_tiny_patch16_224", num_classes=0, **TINY_VISION)
    classifier.load_state_dict(model.vision.state_dict(), strict=True)  # what the probe / fine-tuning loads
    if pooling == "gap":
        pooled = model.pool_tokens(model.vision.forward_tokens(videos))
        torch.testing.assert_close(pooled, classifier.eval().forward_features(videos))


def test_the_text_tower_is_causal_and_never_reads_padding():
    torch.manual_seed(0)
    model = tiny_model().eval()
    a = torch.tensor([[1, 7, 8, 2, 0, 0]])
    b = torch.tensor([[1, 7, 9, 2, 0, 0]])  # differs from position 2 on
    ta, tb = model.text.forward_tokens(a), model.text.forward_tokens(b)
    torch.testing.assert_close(ta[:, :2], tb[:, :2])
    assert not torch.allclose(ta[:, 2:4], tb[:, 2:4])
    bidirectional = tiny_model(text_causal=False).eval()
    assert not torch.allclose(bidirectional.text.forward_tokens(a)[:, :2], bidirectional.text.forward_tokens(b)[:, :2])


def test_whole_model_export_round_trips(tmp_path):
    torch.manual_seed(0)
    model = tiny_model(pooling="map").eval()
    path = export_maeclip(model, tmp_path / "export" / "maeclip.safetensors", {"tokenizer": "{}", "step": 3})
    loaded, info = load_maeclip(tmp_path)  # a run folder names its export
    assert info["step"] == 3 and info["model_config"]["pooling"] == "map"
    tokens = torch.tensor([[1, 7, 2, 0, 0, 0]])
    torch.testing.assert_close(loaded.encode_text(tokens), model.encode_text(tokens))
    assert path.name == "maeclip.safetensors"


class _OneHotClip(torch.nn.Module):
    """A model whose answers are known: a clip's embedding is the one-hot of its brightness (0, 1, 2), a text's the
    one-hot of the colour word it names (red, green, blue)."""

    WORDS = ("red", "green", "blue")

    def __init__(self, tokenizer: CaptionTokenizer) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer = tokenizer

    def encode_video(self, videos: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(videos.mean(dim=(1, 2, 3, 4)).round().long(), 3).float()

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        texts = self.tokenizer.decode(tokens)
        return torch.tensor([[float(w in t) for w in self.WORDS] for t in texts])


def test_zero_shot_and_retrieval_score_a_known_answer():
    tok = load_tokenizer(None, 16)
    labels = [0, 1, 2, 2, 1, 0]
    shows = [0, 1, 2, 0, 0, 0]  # clips 3 and 4 look red but are labelled blue and green: top-1 4/6
    captions = ["a red thing", "a green thing", "a blue thing", "a blue thing", "a red thing", "a red thing"]
    data = [{"video": torch.full((1, 3, 2, 4, 4), float(s)), "label": lab, "index": i, "text": c}
            for i, (s, lab, c) in enumerate(zip(shows, labels, captions))]  # fmt: skip
    names = ["red_thing", "green_thing", "blue_thing"]
    report = zero_shot_report(_OneHotClip(tok), tok, data, names, ["a {}"], batch_size=4)
    assert report["top1"] == pytest.approx(4 / 6) and report["top5"] == 1.0
    assert report["chance"] == pytest.approx(1 / 3) and report["num_clips"] == 6
    # video -> text: clip 3 (red, captioned blue) ranks the three red captions above its own group; the others
    # find a caption of their group first (equal captions are one group)
    assert report["retrieval"]["video_to_text"] == {"R@1": pytest.approx(5 / 6), "R@5": 1.0, "R@10": 1.0}
    assert class_prompts(["square_up"], ["a video of a {}."]) == [["a video of a square up."]]


def test_retrieval_recall_by_hand():
    video = torch.eye(3)
    text = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # captions 0 and 1 swapped
    r = retrieval_recall(video, text)
    assert r["video_to_text"] == {"R@1": pytest.approx(1 / 3), "R@5": 1.0, "R@10": 1.0}
    assert r["text_to_video"]["R@1"] == pytest.approx(1 / 3)
    grouped = retrieval_recall(video, text, ["same", "same", "other"])  # 0 and 1 share a caption: both found
    assert grouped["video_to_text"]["R@1"] == 1.0


@pytest.mark.parametrize("name", ["maeclip_demo", "maeclip_vit_b16_image", "maeclip_vit_b16_video"])
def test_recipes_load_and_pass_the_preflight_model_checks(name):
    from videomae.launching.config_checks import model_findings
    from videomae.recipes import resolve

    cfg = load_config(resolve(name, ["pretrain"]))
    assert cfg.method == "maeclip" and cfg.data.num_sample == 1  # one clip per video: no false negatives
    findings = model_findings(cfg)
    assert all(f.ok for f in findings), findings
    with torch.device("meta"):
        from videomae.methods.maeclip import build_maeclip_model

        model = build_maeclip_model(cfg, load_tokenizer(None, cfg.text.context_length))
    assert model.vision.model_config["all_frames"] == cfg.data.num_frames
    assert (model.decoder is not None, model.mlm_head is not None) == (cfg.loss.mae > 0, cfg.loss.mlm > 0)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("loss.mae=-0.5", r"^loss.mae: .*a weight >= 0"),
        ("mask.ratio=1.0", r"^mask.ratio: .*\[0, 1\)"),
        ("zero_shot.templates=[a photo]", r"^zero_shot.templates\[0\]: .*one '\{\}'"),
        ("text.width=9", r"^text.width: .*multiple of text.num_heads"),
        ("model.pooling=cls", r"^model.pooling"),
        ("loss.clip=0", None),
    ],
)
def test_config_refuses_bad_values_by_key(override, message):
    recipe = "videomae/recipes/pretrain/maeclip_demo.yaml"
    if message is None:  # a zero weight alone is fine: MAE + MLM without the contrastive term
        assert load_config(recipe, [override]).loss.clip == 0
        return
    with pytest.raises(ConfigError, match=message):
        load_config(recipe, [override])


def test_an_image_tower_with_flip_masking_and_the_mae_loss():
    from videomae.masking import random_mask
    from videomae.objectives import MaskedPixelLoss

    torch.manual_seed(0)
    image = {"img_size": 32, "patch_size": 8, "all_frames": 1, "tubelet_size": 1}
    model = tiny_model(image, mlm_head=False)
    images = torch.randn(3, 3, 1, 32, 32)  # one-frame clips
    flip, hidden = random_mask(3, model.grid_size, 0.5), random_mask(3, model.grid_size, 0.75)
    out = model(images, torch.tensor([[1, 5, 2, 0, 0, 0]] * 3), flip, hidden)
    assert model.grid_size == (1, 4, 4) and out["pixels"].shape == (3, 12, 3 * 8 * 8)
    assert not torch.allclose(out["video"], model.encode_video(images))  # FLIP: the pass saw half the patches
    assert 0.5 < MaskedPixelLoss(8, 1)(out["pixels"], images, hidden).item() < 2.0  # ~1 for an untrained decoder
