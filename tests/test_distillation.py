"""Distillation loss: value against a hand computation, gradients only to the student, loss falls with training."""

from __future__ import annotations

import math

import pytest
import torch

from videomae.models import create_model
from videomae.objectives import DistillationLoss

TINY = dict(img_size=32, patch_size=8, all_frames=4)
STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
TEACHER = [[2.0, 1.0, 0.0], [1.0, 1.0, 4.0]]
LABELS = [1, 2]


def _softmax(row: list[float], t: float) -> list[float]:
    exps = [math.exp(x / t) for x in row]
    return [e / sum(exps) for e in exps]


def _hand_kd(t: float) -> float:
    total = 0.0
    for s, q in zip(STUDENT, TEACHER):
        p_s, p_t = _softmax(s, t), _softmax(q, t)
        total += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    return total / len(STUDENT) * t * t


def _hand_ce() -> float:
    return sum(-math.log(_softmax(s, 1.0)[y]) for s, y in zip(STUDENT, LABELS)) / len(STUDENT)


@pytest.mark.parametrize(("temperature", "alpha"), [(1.0, 1.0), (4.0, 1.0), (2.0, 0.7)])
def test_value_against_hand_computation(temperature: float, alpha: float) -> None:
    loss_fn = DistillationLoss(temperature=temperature, alpha=alpha)
    loss = loss_fn(torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS))
    expected = alpha * _hand_kd(temperature) + (1 - alpha) * _hand_ce()  # alpha: the distillation term's weight
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_soft_targets_and_feature_terms_by_hand() -> None:
    # soft (Mixup) targets: CE = -sum(y * log p)
    soft = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8]])
    loss_fn = DistillationLoss(alpha=0.0)  # the label term alone
    expected = -sum(
        w * math.log(_softmax(s, 1.0)[c]) for s, row in zip(STUDENT, soft.tolist()) for c, w in enumerate(row) if w
    ) / 2  # fmt: skip
    assert loss_fn(torch.tensor(STUDENT), torch.tensor(TEACHER), soft).item() == pytest.approx(expected, rel=1e-5)
    # features: projector set to a known map, cosine and MSE by hand
    for kind in ("mse", "cosine"):
        loss_fn = DistillationLoss(feature_loss=kind, feature_weight=2.0, student_dim=2, teacher_dim=3)
        with torch.no_grad():
            loss_fn.projector.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
            loss_fn.projector.bias.zero_()
        student, teacher = torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 0.0, 3.0]])  # projected: [1, 2, 3]
        terms = loss_fn.components(torch.zeros(1, 3), torch.zeros(1, 3), None, student, teacher)
        hand = (0 + 4 + 0) / 3 if kind == "mse" else 1 - (1 + 0 + 9) / (math.sqrt(14) * math.sqrt(10))
        assert terms["feature"].item() == pytest.approx(2.0 * hand, rel=1e-5)
        assert terms["kd"].item() == pytest.approx(0.0, abs=1e-7)


def test_gradients_reach_only_the_student() -> None:
    student = torch.tensor(STUDENT, requires_grad=True)
    teacher = torch.tensor(TEACHER, requires_grad=True)
    s_feat, t_feat = torch.randn(2, 4, requires_grad=True), torch.randn(2, 6, requires_grad=True)
    loss_fn = DistillationLoss(temperature=2.0, alpha=0.5, feature_loss="smooth_l1", student_dim=4, teacher_dim=6)
    loss_fn(student, teacher, torch.tensor(LABELS), s_feat, t_feat).backward()
    assert teacher.grad is None and t_feat.grad is None
    assert student.grad.abs().sum() > 0 and s_feat.grad.abs().sum() > 0
    assert loss_fn.projector.weight.grad.abs().sum() > 0


def test_tiny_student_learns_from_fixed_teacher() -> None:
    """A few SGD steps of a tiny ViT student (width 32) towards a frozen, wider teacher (width 64)."""
    torch.manual_seed(0)
    teacher = create_model("vit_tiny_patch16_224", num_classes=4, init_scale=1.0, **TINY).eval()
    student = create_model("vit_tiny_patch16_224", num_classes=4, embed_dim=32, **TINY)
    for p in teacher.parameters():
        p.requires_grad_(False)
    loss_fn = DistillationLoss(temperature=2.0, feature_loss="cosine", student_dim=32, teacher_dim=64)
    optimizer = torch.optim.AdamW([*student.parameters(), *loss_fn.parameters()], lr=3e-3)
    videos = torch.randn(8, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        t_feat = teacher.forward_features(videos)
        t_logits = teacher.forward_head(t_feat)
    losses = []
    for _ in range(15):
        s_feat = student.forward_features(videos)
        terms = loss_fn.components(student.forward_head(s_feat), t_logits, None, s_feat, t_feat)
        loss = sum(terms.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append({k: v.item() for k, v in terms.items()})
    assert losses[-1]["kd"] < 0.5 * losses[0]["kd"]
    assert losses[-1]["feature"] < 0.5 * losses[0]["feature"]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="temperature must be > 0"):
        DistillationLoss(temperature=0)
    with pytest.raises(ValueError, match="needs student_dim and teacher_dim"):
        DistillationLoss(feature_loss="mse")
    with pytest.raises(ValueError, match="is not one of"):
        DistillationLoss(feature_loss="l3")
    with pytest.raises(ValueError, match="needs labels"):
        DistillationLoss(alpha=0.5)(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="map the teacher's classes first"):
        DistillationLoss()(torch.zeros(2, 3), torch.zeros(2, 5))
