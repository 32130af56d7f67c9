"""Knowledge distillation in the supervised run: the frozen teacher, and the student module DeepSpeed trains.

The teacher is any classifier :func:`~videomae.inference.load_inference_model` reads (our export, rebuilt from its
metadata, or a registered model filled from another checkpoint). It runs frozen, in eval mode and the run's
precision, under ``torch.no_grad``, on the same (mixed) clips as the student. It lives outside the DeepSpeed engine:
never optimised, partitioned or checkpointed. Its classes must be the data's, matched by name; its logits are
reordered to the data's class order.

The student classifier and the :class:`~videomae.objectives.DistillationLoss` (whose feature projector has
parameters) form one :class:`DistillStudent`, the engine's module, so the projector is trained and checkpointed
with the student. The export holds the student alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from videomae.checkpoint import CheckpointError, match_class_names
from videomae.config import ConfigError, DataConfig, DistillConfig, FinetuneTrainConfig
from videomae.data.manifest import ManifestError, read_label_map
from videomae.inference.loading import load_inference_model
from videomae.objectives import DistillationLoss

__all__ = [
    "TERM_METRICS",
    "DistillStudent",
    "Teacher",
    "build_distill_loss",
    "load_teacher",
    "student_of",
    "teacher_class_order",
]

TERM_METRICS = {"kd": "loss_kd", "hard": "loss_label", "feature": "loss_feature"}
"""``metrics.jsonl`` name of each (unweighted) :meth:`DistillationLoss.terms` entry."""


class Teacher:
    """A frozen classifier giving logits (in the data's class order) and pooled features for the student.

    Args:
        model: the teacher classifier (eval mode, no gradients).
        source: where its weights came from.
        class_order: for each of the data's classes, the teacher's logit index; None: the same order.
    """

    def __init__(self, model: nn.Module, source: str, class_order: torch.Tensor | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.source = source
        self.class_order = class_order

    @property
    def width(self) -> int:
        """Width of the teacher's pooled features."""
        return int(self.model.model_config["embed_dim"])

    def to(self, device: torch.device, dtype: torch.dtype) -> Teacher:
        """Move the teacher to ``device`` and cast its weights to the run's compute ``dtype``."""
        self.model.to(device=device, dtype=dtype)
        if self.class_order is not None:
            self.class_order = self.class_order.to(device)
        return self

    @torch.no_grad()
    def __call__(self, videos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[B, K]`` in the data's class order and pooled features ``[B, D_t]`` (float32) of clips
        ``[B, C, T, H, W]`` (cast to the teacher's dtype)."""
        dtype = next(self.model.parameters()).dtype
        features = self.model.forward_features(videos.to(dtype))  # (B, D_t)
        logits = self.model.forward_head(features)  # (B, K_teacher)
        if self.class_order is not None:
            logits = logits[:, self.class_order]  # (B, K)
        return logits.float(), features.float()


def _show(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(map(repr, names[:limit]))
    return f"[{shown}{' ...' if len(names) > limit else ''}] ({len(names)})"


def teacher_class_order(
    teacher_names: Sequence[str] | None,
    data_names: Sequence[str] | None,
    teacher_classes: int,
    data_classes: int,
) -> torch.Tensor | None:
    """Index of the teacher's logit for each of the data's classes, matched by normalised class name.

    Without names on either side, the head sizes must agree and the order is taken as it is.

    Returns:
        A ``LongTensor[data_classes]``, or None when the teacher's order is the data's.

    Raises:
        ConfigError: the class lists differ (naming what only each side has), or only one side names its classes.
    """
    if teacher_names is not None and len(teacher_names) != teacher_classes:
        raise ConfigError(
            f"distill.teacher_labels: {len(teacher_names)} class names for a teacher head of {teacher_classes} classes"
        )
    if teacher_names is None and data_names is None:
        if teacher_classes != data_classes:
            raise ConfigError(f"distill.teacher: a {teacher_classes}-class teacher for {data_classes} data classes")
        return None
    if teacher_names is None:
        raise ConfigError(
            "distill.teacher_labels: the teacher's checkpoint does not name its classes, which are matched to the "
            "data's by name; give a labels.txt of its head rows"
        )
    if data_names is None:
        raise ConfigError(
            "data.labels: the data's labels are bare integers, but the teacher's classes are matched by name; give "
            "data.labels or class-name labels in the manifests"
        )
    try:
        rows = match_class_names(teacher_names, data_names)
    except CheckpointError as err:
        raise ConfigError(f"distill.teacher: {err}") from None
    only_data = [name for name, row in zip(data_names, rows) if row is None]
    matched = {row for row in rows if row is not None}
    only_teacher = [name for i, name in enumerate(teacher_names) if i not in matched]
    if only_data or only_teacher:
        raise ConfigError(
            f"distill.teacher: the teacher's {len(teacher_names)} classes and the data's {len(data_names)} must be "
            f"the same (by name); only the teacher's: {_show(only_teacher)}; only the data's: {_show(only_data)}"
        )
    return None if rows == list(range(len(rows))) else torch.tensor(rows)


def load_teacher(cfg: DistillConfig, data: DataConfig, class_names: Sequence[str] | None, num_classes: int) -> Teacher:
    """Load the configured teacher (on the CPU, fp32) and check it fits the data's clips and classes.

    Raises:
        ConfigError: a missing or unreadable teacher, one without a classification head, another clip size, or
            other classes than the data's.
    """
    if not Path(cfg.teacher).exists():
        raise ConfigError(f"distill.teacher: {cfg.teacher} does not exist")
    try:
        loaded = load_inference_model(cfg.teacher, model_name=cfg.teacher_model, overrides=cfg.teacher_overrides)
    except CheckpointError as err:
        raise ConfigError(f"distill.teacher: {err}") from None
    if not loaded.is_classifier:
        raise ConfigError(f"distill.teacher: {cfg.teacher} holds a {type(loaded.model).__name__} without a "
                          "classification head; the teacher must be a fine-tuned classifier")  # fmt: skip
    if (loaded.num_frames, loaded.input_size) != (data.num_frames, data.input_size):
        raise ConfigError(
            f"distill.teacher: the teacher takes {loaded.num_frames}-frame clips of {loaded.input_size} px, the data "
            f"gives {data.num_frames} x {data.input_size} px (data.num_frames, data.input_size)"
        )
    names = loaded.label_names
    if cfg.teacher_labels is not None:
        try:
            names = read_label_map(cfg.teacher_labels)
        except (OSError, ManifestError) as err:
            raise ConfigError(f"distill.teacher_labels: {err}") from None
    order = teacher_class_order(names, class_names, loaded.model.num_classes, num_classes)
    return Teacher(loaded.model, str(cfg.teacher), order)


def build_distill_loss(
    cfg: DistillConfig, train: FinetuneTrainConfig, student_dim: int, teacher_dim: int | None
) -> DistillationLoss:
    """The distillation loss as configured, its label term the run's (soft targets with mixup, else smoothing)."""
    features = cfg.feature_weight > 0
    return DistillationLoss(
        temperature=cfg.temperature,
        alpha=cfg.alpha,
        feature_loss=cfg.feature_loss if features else "none",
        feature_weight=cfg.feature_weight,
        student_dim=student_dim if features else None,
        teacher_dim=teacher_dim if features else None,
        label_smoothing=0.0 if train.mixing else train.smoothing,  # with mixing, smoothing is inside the targets
    )


class DistillStudent(nn.Module):
    """The student classifier and its distillation loss as one module (state keys ``student.*``, ``loss.*``).

    Layer-wise lr decay sees the student's layers; the projector trains at the head's rate.
    """

    def __init__(self, student: nn.Module, loss: DistillationLoss) -> None:
        super().__init__()
        self.student = student
        self.loss = loss

    def forward(
        self,
        videos: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
        teacher_features: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Class logits ``[B, K]`` of ``videos`` (evaluation); given the teacher's outputs on the same clips, the
        unweighted loss terms (:meth:`DistillationLoss.terms`; ``hard`` with ``targets``)."""
        if teacher_logits is None:
            return self.student(videos)
        features = self.student.forward_features(videos)  # (B, D_s)
        logits = self.student.forward_head(features)  # (B, K)
        return self.loss.terms(logits, teacher_logits, targets, features, teacher_features)

    def get_num_layers(self) -> int:
        """The student's number of blocks."""
        return self.student.get_num_layers()

    def layer_id(self, name: str) -> int:
        """Layer index for layer-wise lr decay: the student's own; the projector's is the head's."""
        if name.startswith("student."):
            return self.student.layer_id(name.removeprefix("student."))
        return self.get_num_layers() + 1

    def no_weight_decay(self) -> set[str]:
        """The student's parameters without weight decay, by their name here."""
        return {f"student.{name}" for name in self.student.no_weight_decay()}

    @staticmethod
    def student_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The student's entries of this module's state dict, under the student's own key names."""
        return {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}


def student_of(module: nn.Module) -> nn.Module:
    """The classifier inside a :class:`DistillStudent`, or ``module`` itself."""
    return module.student if isinstance(module, DistillStudent) else module
