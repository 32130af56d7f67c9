"""The supervised method (post-pretraining, fine-tuning, distillation): a classifier, its recipe and evaluation.

Per step: mixup/cutmix on the clips, cross-entropy (soft targets, label smoothing) through the DeepSpeed engine with
layer-wise lr decay, then the EMA update; with ``distill.teacher``, the loss also distils a frozen teacher's logits
(and optionally its pooled features) on the same clips (:mod:`videomae.methods.distill`; ``loss_kd``, ``loss_label``
in ``metrics.jsonl``). Every ``train.eval_every`` steps and at the last step the validation set is scored with one
centre view per video (``val_top1``... in ``metrics.jsonl``, ``ema_val_*`` for the EMA). At the end the test set (or
the validation set) is scored with ``test_num_segment x test_num_crop`` views into ``eval/`` (``eval/ema/`` for the
EMA), and the weights are exported with their class names.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from timm.data import Mixup
from timm.utils import ModelEmaV3
from torch import nn

from videomae.checkpoint import export_weights
from videomae.config import ConfigError, FinetuneConfig, classifier_kwargs, config_to_dict
from videomae.engine import checkpointing as ckpt
from videomae.engine import dist
from videomae.engine.deepspeed_setup import whole_parameters
from videomae.engine.layer_decay import param_groups_layer_decay
from videomae.engine.method import LossOutput, Method, StepContext
from videomae.engine.session import Session, start_session
from videomae.engine.trainer import RunSummary, Trainer, build_trainer
from videomae.hf_folder import classifier_trunk
from videomae.methods.distill import (
    TERM_METRICS,
    DistillStudent,
    Teacher,
    build_distill_loss,
    load_teacher,
    student_of,
)
from videomae.methods.finetune_data import LabelledSets, build_labelled_sets
from videomae.methods.finetune_init import init_classifier
from videomae.methods.finetune_recipe import (
    build_criterion,
    build_mixup,
    classifier_forward_flops,
    classifier_train_flops,
    current_fp32_state,
    mix_clips,
)
from videomae.methods.validation import engine_forward, evaluate, module_forward, write_eval_outputs
from videomae.models import create_model

__all__ = ["FinetuneMethod", "build_finetune_method", "build_finetune_trainer", "evaluate_only", "run_finetuning"]

log = logging.getLogger(__name__)


class FinetuneMethod(Method):
    """A classifier trained on labelled clips (post-pretraining, fine-tuning, distillation), scored on the
    validation set during training and on the test set at the end.

    Args:
        cfg: the resolved config.
        session: the run's session (where the weights come from when it resumes).
        sets: the labelled sets and their class list.
        teacher: the frozen distillation teacher (None: no distillation).
        teacher_dim: width of the teacher's features, which sizes the feature projector (also when evaluating).
    """

    name = "finetune"

    def __init__(
        self,
        cfg: FinetuneConfig,
        session: Session,
        sets: LabelledSets,
        teacher: Teacher | None = None,
        teacher_dim: int | None = None,
    ) -> None:
        self.cfg, self.session, self.sets = cfg, session, sets
        self.train_set = sets.train
        self.teacher, self.teacher_dim = teacher, teacher_dim
        self.init_report: Any = None
        self.weights: str | None = None  # what the model holds: init, a resumed checkpoint, the final step
        self.ema: ModelEmaV3 | None = None
        self.ctx: StepContext | None = None
        self.mixup: Mixup | None = None
        self.criterion: nn.Module | None = None
        self.best_top1: float | None = None

    # ------------------------------------------------------------------------------------------------ building

    def build_classifier(self) -> nn.Module:
        """The classifier with fresh weights; initialising from a transformers folder, its trunk is the folder's
        (``config.json``), with the run's head, pooling, regularisation and ``model.overrides``."""
        name, kwargs = self.cfg.model.name, classifier_kwargs(self.cfg.model, self.sets.num_classes)
        if self.init_trunk is not None:
            name, kwargs = self.init_trunk[0], self.init_trunk[1] | kwargs
        return create_model(name, **kwargs)

    @functools.cached_property
    def init_trunk(self) -> tuple[str, dict[str, Any]] | None:
        """``init``'s trunk when it is a transformers folder (read once; the run builds its classifier twice)."""
        return classifier_trunk(self.cfg.init)

    def build_model(self) -> nn.Module:
        """The classifier, or, distilling, the classifier and its distillation loss as one :class:`DistillStudent`."""
        student = self.build_classifier()
        if self.cfg.distill.teacher is None:
            return student
        loss = build_distill_loss(self.cfg.distill, self.cfg.train, student.model_config["embed_dim"], self.teacher_dim)
        return DistillStudent(student, loss)

    def export_model(self, state: dict[str, torch.Tensor]) -> nn.Module:
        """The classifier alone (a distillation projector is left out)."""
        model = self.build_classifier()
        model.load_state_dict(DistillStudent.student_state(state) if self.cfg.distill.teacher is not None else state)
        return model

    def prepare_model(self, model: nn.Module, fresh: bool) -> None:
        """Load ``init`` (evaluating without one: the run's export) on a fresh run, then start the EMA from the
        fp32 weights, before DeepSpeed casts the module to the training precision."""
        if fresh:
            self._load_init(model)
        if self.cfg.train.ema:
            model.to(self.session.device)
            self.ema = ModelEmaV3(student_of(model), decay=self.cfg.train.ema_decay, dtype=torch.float32)

    def _load_init(self, model: nn.Module) -> None:
        source = self.cfg.init
        exported = self.session.output_dir / "export" / "model.safetensors"
        if source is None and self.train_set is None and exported.is_file():
            source = str(exported)
        if source is None:
            return
        self.weights = str(source)
        with whole_parameters(model):  # ZeRO-3: gathered only when there is something to load
            self.init_report = init_classifier(student_of(model), source, self.cfg.init_label_map, self.class_names)
        log.info("initialising from %s: %s", source, self.init_report)

    @property
    def class_names(self) -> list[str] | None:
        return self.sets.class_names

    def param_groups(self, model: nn.Module) -> list[dict]:
        t = self.cfg.train
        return param_groups_layer_decay(model, t.weight_decay, t.layer_decay)

    def flops_per_clip(self, model: nn.Module) -> int:
        flops = classifier_train_flops(student_of(model).model_config)
        if self.teacher is not None:
            flops += classifier_forward_flops(self.teacher.model.model_config)
        return flops

    def start(self, ctx: StepContext) -> None:
        self.ctx = ctx
        self.mixup = build_mixup(self.cfg.train, self.sets.num_classes)
        self.criterion = build_criterion(self.cfg.train)
        if self.teacher is not None:
            self.teacher.to(ctx.device, ctx.compute_dtype)  # the run's precision

    # ------------------------------------------------------------------------------------------------ training

    def loss(self, batch: dict[str, Any]) -> LossOutput:
        engine, device = self.ctx.engine, self.ctx.device
        videos = batch["video"].to(device, non_blocking=True)  # (B*S, C, T, H, W)
        targets = batch["label"].to(device, non_blocking=True)  # (B*S,)
        if self.mixup is not None:
            videos, targets = mix_clips(self.mixup, videos, targets)  # targets (B*S, classes)
        videos = videos.to(self.ctx.compute_dtype)
        if self.teacher is None:
            logits = engine(videos)  # (B*S, classes)
            return LossOutput(self.criterion(logits.float(), targets))
        teacher_logits, teacher_features = self.teacher(videos)  # (B*S, classes), (B*S, D_teacher)
        terms = engine(videos, teacher_logits, teacher_features, targets)  # unweighted, incl. the label term
        loss = sum(engine.module.loss.weighted(terms).values())
        return LossOutput(loss, {TERM_METRICS[k]: v.detach() for k, v in terms.items()})

    def after_step(self, step: int) -> dict[str, float]:
        """The EMA update; every ``train.eval_every`` steps and at the last, the validation scores (and the best
        export with ``train.save_best``)."""
        if self.ema is not None:
            self.ema.update(student_of(self.ctx.engine.module), step=step)
        every, val_set = self.cfg.train.eval_every, self.sets.val
        if val_set is None or not ((every > 0 and step % every == 0) or step == self.ctx.total_steps):
            return {}
        results = evaluate(self.ctx, self._forwards(), val_set, self.cfg)
        metrics = {k: v for name, r in results.items() for k, v in r.scalars(f"{name}val_").items()}
        top1 = metrics.get("val_top1")
        if self.cfg.train.save_best and top1 is not None and (self.best_top1 is None or top1 > self.best_top1):
            self.best_top1 = top1
            self._export_current(self.session.output_dir / "export" / "best.safetensors", step, {"val_top1": top1})
        log.info("step %d: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return metrics

    def finish(self, summary: RunSummary) -> None:
        """Export the EMA weights and score the test set with every view."""
        self.weights = str(self.session.checkpoint_root / ckpt.tag_for(summary.step))
        if self.ema is not None and dist.is_main():
            path = self.session.output_dir / "export" / "ema.safetensors"
            export_weights(self.ema.module, path, self.export_metadata(summary.step))
        self.test(summary.step)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"best_val_top1": self.best_top1, "label_names": self.class_names}
        if self.ema is not None:
            state["ema"] = self.ema.module.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights = str(self.session.resume_from.path)
        self.best_top1 = state.get("best_val_top1")
        if self.ema is not None:
            if "ema" not in state:
                raise ConfigError("train.ema: true, but the checkpoint holds no EMA weights (a run started without)")
            self.ema.module.load_state_dict(state["ema"])

    def export_metadata(self, step: int) -> dict[str, Any]:
        return {"step": step, "label_names": self.class_names, "finetune_config": config_to_dict(self.cfg)}

    def _export_current(self, path: Path, step: int, extra: dict[str, Any]) -> None:
        """Export the weights as they are now (collective under ZeRO; rank 0 writes)."""
        state = current_fp32_state(self.ctx.engine)
        if state is not None:
            export_weights(self.export_model(state), path, {**self.export_metadata(step), **extra})
        dist.barrier()

    # ------------------------------------------------------------------------------------------------ evaluation

    def _forwards(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        """The weights to score by result prefix: the trained ones (``""``) and the EMA's (``"ema_"``)."""
        forwards = {"": functools.partial(engine_forward, self.ctx)}
        if self.ema is not None:
            forwards["ema_"] = functools.partial(module_forward, self.ctx, self.ema.module)
        return forwards

    def test(self, step: int, folder: str = "eval") -> dict[str, Any] | None:
        """Multi-view test of the test set (or the validation set) into ``<output_dir>/<folder>/``; the summary
        (None: no set)."""
        test_set = self.sets.test
        if test_set is None:
            log.info("no data.test_manifests or data.val_manifests: final evaluation skipped")
            return None
        results = evaluate(self.ctx, self._forwards(), test_set, self.cfg)
        split = "test" if self.cfg.data.test_manifests else "val"
        summary: dict[str, Any] = {}
        if dist.is_main():
            paths = [row.path for row in test_set.rows]
            for name, result in results.items():
                into = self.session.output_dir / folder / name.rstrip("_")
                info = {"split": split, "step": step, "weights": self.weights if not name else "ema"}
                summary[name.rstrip("_") or "model"] = write_eval_outputs(result, into, self.class_names, paths, info)
            views = (test_set.test_num_segment, test_set.test_num_crop)
            log.info("final %s evaluation (%d x %d views): %s", split, *views, summary)
        dist.barrier()
        return summary


def build_finetune_method(cfg: FinetuneConfig, session: Session, eval_only: bool = False) -> FinetuneMethod:
    """The supervised method with its sets (no training set with ``eval_only``) and its distillation teacher, whose
    classes must be the data's (``session``: the run's process group is up)."""
    sets = build_labelled_sets(cfg.data, session.output_dir, cfg.seed, eval_only)
    teacher, teacher_dim, k = None, None, cfg.distill
    if k.teacher is not None and not (eval_only and k.feature_weight == 0):
        teacher = load_teacher(k, cfg.data, sets.class_names, sets.num_classes)
        teacher_dim = teacher.width
        teacher = None if eval_only else teacher  # evaluating, it only sizes the feature projector
    return FinetuneMethod(cfg, session, sets, teacher, teacher_dim)


def build_finetune_trainer(cfg: FinetuneConfig, eval_only: bool = False) -> Trainer:
    """A supervised run built on this rank (process group, sets, model, DeepSpeed engine), ready to
    :meth:`~Trainer.fit` (``eval_only``: no training set)."""
    session = start_session(cfg)
    return build_trainer(session, build_finetune_method(cfg, session, eval_only))


def run_finetuning(cfg: FinetuneConfig) -> RunSummary:
    """Fine-tune (or post-pretrain) a classifier on DeepSpeed as configured; every rank calls this.

    Raises:
        ConfigError: a setting that only shows up against the data or the device.
        NonFiniteError: ``train.max_nonfinite_steps`` consecutive non-finite steps.
    """
    return build_finetune_trainer(cfg).fit()


EVAL_ONLY_FOLDER = "eval_only"
"""Where ``--eval-only`` writes, beside (never over) the training run's own ``eval/``."""


def evaluate_only(cfg: FinetuneConfig) -> dict[str, Any] | None:
    """Score ``init`` when given, else the run's newest checkpoint, else the run's ``export/model.safetensors``, on
    the test set (or validation set) into ``<output_dir>/eval_only/``, without training or writing checkpoints;
    every rank calls this. With ``init``, a training run in the same ``output_dir`` is left alone (not resumed).

    Raises:
        ConfigError: nothing to evaluate (no checkpoint, no ``init``, no export) or no evaluation set.
    """
    if not (cfg.data.test_manifests or cfg.data.val_manifests):
        raise ConfigError("data.test_manifests: empty (and no data.val_manifests): nothing to evaluate on")
    trainer = build_finetune_trainer(cfg.for_evaluation(), eval_only=True)
    if trainer.session.resume_from is None and trainer.method.init_report is None:
        raise ConfigError(
            f"init: nothing to evaluate: no checkpoint in {cfg.output_dir}/checkpoints, no init and no "
            f"{cfg.output_dir}/export/model.safetensors"
        )
    trainer.resume()
    return trainer.method.test(trainer.state["step"], EVAL_ONLY_FOLDER)
