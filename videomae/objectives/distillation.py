"""Knowledge distillation of a small video ViT from a larger teacher's logits and, optionally, its features.

What VideoMAE V2 did: its released ViT-S and ViT-B (``vit_{s,b}_k710_dl_from_giant``) were distilled on
Kinetics-710 from the fine-tuned ViT-g (``vit_g_hybrid_pt_1200e_k710_ft``), starting from post-pretrained
students, by matching the teacher's logits; the maintainers say the distilled models were evaluated straight
after logit distillation, the hyper-parameters are in the paper's supplementary material, and the distillation
code was never published (OpenGVLab/VideoMAEv2 issues 13 and 61).

What this module does: the classic soft-target loss (Hinton et al. 2015): ``T^2 * KL(p_teacher || p_student)``
with both distributions softened by temperature ``T`` (the ``T^2`` keeps gradient sizes independent of ``T``),
optionally mixed with the hard-label cross-entropy (``alpha`` weighs the distillation term and ``1 - alpha`` the
label term, as ``distill.alpha`` in the config; 1 = pure distillation as the released students), plus an optional
feature term: the student's features go through a learnable ``Linear`` to the teacher's width and are matched with
MSE, smooth-L1 or cosine distance. The projector has parameters: give this module's parameters to the optimizer
together with the student's. :meth:`DistillationLoss.terms` gives the unweighted terms (for logging),
:meth:`DistillationLoss.weighted` their weighted values, whose sum is the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FEATURE_LOSSES", "DistillationLoss"]

FEATURE_LOSSES = ("none", "mse", "smooth_l1", "cosine")


class DistillationLoss(nn.Module):
    """Soft-target logit distillation, optional hard-label cross-entropy and optional feature matching.

    ``loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y) + feature_weight * F``

    Args:
        temperature: softening temperature ``T`` (> 0).
        alpha: weight of the distillation term in ``[0, 1]``; the hard-label cross-entropy gets ``1 - alpha`` (1
            needs no labels).
        feature_loss: ``"none"``, ``"mse"``, ``"smooth_l1"`` or ``"cosine"`` (1 - cosine similarity per token).
        feature_weight: weight of the feature term.
        student_dim: student feature width (needed with a feature loss).
        teacher_dim: teacher feature width; a ``Linear(student_dim, teacher_dim)`` projector is learned (also when
            the widths are equal, so the student's own features are not forced to equal the teacher's).
        label_smoothing: label smoothing of the hard-label term (integer labels only).
    """

    def __init__(
        self,
        temperature: float = 1.0,
        alpha: float = 1.0,
        feature_loss: str = "none",
        feature_weight: float = 1.0,
        student_dim: int | None = None,
        teacher_dim: int | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha (weight of the distillation term) must be in [0, 1], got {alpha}")
        if feature_loss not in FEATURE_LOSSES:
            raise ValueError(f"feature_loss {feature_loss!r} is not one of {FEATURE_LOSSES}")
        if feature_loss != "none" and (student_dim is None or teacher_dim is None):
            raise ValueError(f"feature_loss={feature_loss!r} needs student_dim and teacher_dim")
        self.temperature = temperature
        self.alpha = alpha
        self.feature_loss = feature_loss
        self.feature_weight = feature_weight
        self.label_smoothing = label_smoothing
        self.projector = nn.Linear(student_dim, teacher_dim) if feature_loss != "none" else None

    def kd_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """``T^2 * KL(softmax(t/T) || softmax(s/T))``, averaged over the batch; no gradient reaches the teacher."""
        t = self.temperature
        log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
        log_p_teacher = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
        return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * t * t

    def hard_loss(self, student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against class ids ``[B]`` or soft targets ``[B, C]`` (e.g. after Mixup)."""
        if labels.is_floating_point():
            return torch.sum(-labels * F.log_softmax(student_logits.float(), dim=-1), dim=-1).mean()
        return F.cross_entropy(student_logits.float(), labels, label_smoothing=self.label_smoothing)

    def feature_term(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        """Distance between projected student features and teacher features (``[B, D]`` or tokens ``[B, N, D]``)."""
        if self.projector is None:
            raise ValueError("this DistillationLoss was built with feature_loss='none'")
        if student_features.shape[:-1] != teacher_features.shape[:-1]:
            raise ValueError(f"student features {tuple(student_features.shape)} and teacher features "
                             f"{tuple(teacher_features.shape)} differ in batch / token count")  # fmt: skip
        # In the projector's own dtype: inside a bf16/fp16 DeepSpeed engine its weights are cast to that precision.
        projected = self.projector(student_features.to(self.projector.weight.dtype)).float()  # (B, [N,] D_teacher)
        target = teacher_features.detach().float()
        if self.feature_loss == "mse":
            return F.mse_loss(projected, target)
        if self.feature_loss == "smooth_l1":
            return F.smooth_l1_loss(projected, target)
        return (1.0 - F.cosine_similarity(projected, target, dim=-1)).mean()

    @property
    def weights(self) -> dict[str, float]:
        """Weight of each term in the loss: ``kd`` alpha, ``hard`` 1 - alpha, ``feature`` feature_weight."""
        return {"kd": self.alpha, "hard": 1.0 - self.alpha, "feature": self.feature_weight}

    def terms(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        labels: torch.Tensor | None = None,
        student_features: torch.Tensor | None = None,
        teacher_features: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The unweighted terms (for logging): ``kd`` always, ``hard`` whenever ``labels`` are given (also with
        alpha 1), ``feature`` when built with a feature loss (both feature tensors are then required)."""
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(f"student logits {tuple(student_logits.shape)} != teacher logits "
                             f"{tuple(teacher_logits.shape)}; map the teacher's classes first")  # fmt: skip
        out = {"kd": self.kd_loss(student_logits, teacher_logits)}
        if labels is not None:
            out["hard"] = self.hard_loss(student_logits, labels)
        if self.projector is not None:
            if student_features is None or teacher_features is None:
                raise ValueError(f"feature_loss={self.feature_loss!r} needs student_features and teacher_features")
            out["feature"] = self.feature_term(student_features, teacher_features)
        return out

    def weighted(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """:meth:`terms` times their :attr:`weights`, whose sum is the loss; ``hard`` only when alpha < 1."""
        if self.alpha < 1 and "hard" not in terms:
            raise ValueError(f"alpha={self.alpha} needs labels for the hard-label term (weight 1 - alpha)")
        return {k: self.weights[k] * v for k, v in terms.items() if k != "hard" or self.alpha < 1}

    def components(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        labels: torch.Tensor | None = None,
        student_features: torch.Tensor | None = None,
        teacher_features: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The weighted terms (``kd``, and ``hard`` / ``feature`` when used), whose sum is the loss."""
        labels = labels if self.alpha < 1 else None  # the hard-label term is not computed at weight 0
        return self.weighted(self.terms(student_logits, teacher_logits, labels, student_features, teacher_features))

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        labels: torch.Tensor | None = None,
        student_features: torch.Tensor | None = None,
        teacher_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Total loss (scalar); see :meth:`components` for the terms."""
        terms = self.components(student_logits, teacher_logits, labels, student_features, teacher_features)
        return torch.stack(list(terms.values())).sum()
