"""MAE-CLIP's objectives against hand computations: the symmetric InfoNCE, the clamped logit scale, BERT's caption
masking and the masked-language loss; and the cross-rank gather on 2 gloo processes against the global batch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from helpers import free_port

from videomae.engine import dist
from videomae.models.maeclip import MaeClipModel
from videomae.objectives.clip_losses import IGNORE_INDEX, info_nce, mask_caption_tokens, mlm_loss


def _ce(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(v) for v in logits))


def test_info_nce_is_the_mean_of_both_directions_cross_entropies_by_hand():
    video = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    text = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    scale = torch.tensor(10.0)
    sim = [[0.8, 0.0], [0.6 * 0.8 + 0.8 * 0.6, 0.8]]  # video i . text j
    v2t = [_ce([10 * s for s in sim[i]], i) for i in range(2)]
    t2v = [_ce([10 * sim[j][i] for j in range(2)], i) for i in range(2)]
    expected = (sum(v2t) / 2 + sum(t2v) / 2) / 2
    assert info_nce(video, text, scale).item() == pytest.approx(expected, rel=1e-6)
    # a rank holding row 1 of the same global batch: its rows against every column, targets shifted by the offset
    local = info_nce(video[1:], text[1:], scale, video, text, offset=1)
    assert local.item() == pytest.approx((v2t[1] + t2v[1]) / 2, rel=1e-6)


def test_logit_scale_starts_at_one_over_0_07_and_is_clamped_at_100():
    sizes = dict(embed_dim=8, vocab_size=16, context_length=4, text_width=8, text_depth=1, text_num_heads=2)
    model = MaeClipModel("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "all_frames": 2}, **sizes)
    assert model.scale().item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(250.0))
    scale = model.scale()
    assert scale.item() == pytest.approx(100.0, rel=1e-6)
    scale.backward()
    assert model.logit_scale.grad.item() == 0.0  # past the clamp the temperature no longer moves


def test_caption_masking_counts_follow_bert():
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, 1000, (400, 50))
    tokens[:, 0], tokens[:, 30], tokens[:, 31:] = 1, 2, 0  # <sot> ... <eot> <pad>...
    inputs, targets = mask_caption_tokens(tokens, [0, 1, 2, 3], 3, 1000, generator, prob=0.15)
    special = tokens < 4
    chosen = targets != IGNORE_INDEX
    assert not (chosen & special).any() and torch.equal(inputs[special], tokens[special])
    assert torch.equal(targets[chosen], tokens[chosen]) and torch.equal(inputs[~chosen], tokens[~chosen])
    share = chosen.sum().item() / (~special).sum().item()  # 400 x 29 = 11,600 candidates
    assert share == pytest.approx(0.15, abs=0.01)
    masked = (inputs[chosen] == 3).float().mean().item()
    kept = (inputs[chosen] == tokens[chosen]).float().mean().item()
    assert masked == pytest.approx(0.8, abs=0.03) and kept == pytest.approx(0.1 + 0.1 / 1000, abs=0.02)
    again = mask_caption_tokens(tokens, [0, 1, 2, 3], 3, 1000, torch.Generator().manual_seed(0), prob=0.15)
    assert torch.equal(again[0], inputs)  # reproducible from the generator


def test_mlm_loss_averages_the_chosen_tokens_by_hand():
    logits = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 3.0, 0.0], [1.0, 1.0, 1.0]]])
    targets = torch.tensor([[IGNORE_INDEX, 1, 2]])
    expected = (_ce([0.0, 3.0, 0.0], 1) + _ce([1.0, 1.0, 1.0], 2)) / 2
    assert mlm_loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    assert mlm_loss(logits, torch.full_like(targets, IGNORE_INDEX)).item() == 0.0


GLOBAL_VIDEO = F.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), dim=-1)
GLOBAL_TEXT = F.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(2)), dim=-1)


def _rank_loss(rank: int, port: int, out: str) -> None:
    env = dist.DistEnv(rank=rank, world_size=2, local_rank=rank, local_world_size=2, master_port=port)
    dist.init_distributed(env, backend="gloo")
    try:
        video = GLOBAL_VIDEO[3 * rank : 3 * rank + 3].clone().requires_grad_()
        text = GLOBAL_TEXT[3 * rank : 3 * rank + 3].clone().requires_grad_()
        video_all, text_all = dist.gather_rows_with_grad(video), dist.gather_rows_with_grad(text)
        loss = info_nce(video, text, torch.tensor(5.0), video_all, text_all, offset=3 * rank)
        loss.backward()
    finally:
        dist.destroy()
    torch.save({"loss": loss.detach(), "video": video.grad, "text": text.grad}, Path(out) / f"rank{rank}.pt")


@pytest.mark.slow  # two spawned processes: ~13 s
def test_gather_on_two_gloo_ranks_gives_the_global_batch_loss_and_gradients(tmp_path):
    mp.spawn(_rank_loss, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    video, text = GLOBAL_VIDEO.clone().requires_grad_(), GLOBAL_TEXT.clone().requires_grad_()
    loss = info_nce(video, text, torch.tensor(5.0))
    loss.backward()
    # the ranks' mean loss is the global batch's (what the trainer logs)
    assert (ranks[0]["loss"] + ranks[1]["loss"]).item() / 2 == pytest.approx(loss.item(), rel=1e-6)
    # each rank's rows get the gradient of the sum of both ranks' losses = 2 x the global loss; DeepSpeed's mean
    # over the 2 ranks then gives the global batch's gradient
    for r in range(2):
        rows = slice(3 * r, 3 * r + 3)
        torch.testing.assert_close(ranks[r]["video"], 2 * video.grad[rows], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(ranks[r]["text"], 2 * text.grad[rows], rtol=1e-5, atol=1e-7)
