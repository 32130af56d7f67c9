"""The supervised run (post-pretraining, fine-tuning): a classifier, its recipe and evaluation on the shared run.

Per step: mixup/cutmix on the clips, cross-entropy (soft targets, label smoothing) through the DeepSpeed engine with
layer-wise lr decay, then the EMA update; with ``distill.teacher``, the loss also distils a frozen teacher's logits
(and optionally its pooled features) on the same clips (:mod:`videomae.engine.distill`; ``loss_kd``, ``loss_label``
in ``metrics.jsonl``). Every ``train.eval_every`` steps and at the last step the validation set is scored with one
centre view per video (``val_top1``... in ``metrics.jsonl``, ``ema_val_*`` for the EMA). At the end the test set (or
the validation set) is scored with ``test_num_segment x test_num_crop`` views into ``eval/`` (``eval/ema/`` for the
EMA), and the weights are exported with their class names.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Any

import torch
from timm.utils import ModelEmaV3
from torch import nn

from videomae.checkpoint import export_weights
from videomae.config import ConfigError, FinetuneConfig, classifier_kwargs, config_to_dict
from videomae.engine import checkpointing as ckpt
from videomae.engine import dist
from videomae.engine.deepspeed_setup import whole_parameters
from videomae.engine.distill import (
    TERM_METRICS,
    DistillStudent,
    Teacher,
    build_distill_loss,
    load_teacher,
    student_of,
)
from videomae.engine.finetune_data import build_eval_dataset, build_labelled_dataset, fixed_class_names
from videomae.engine.finetune_init import init_classifier
from videomae.engine.finetune_recipe import (
    build_criterion,
    build_mixup,
    classifier_forward_flops,
    classifier_train_flops,
    current_fp32_state,
    mix_clips,
)
from videomae.engine.layer_decay import param_groups_layer_decay
from videomae.engine.loop import MicroStep, backward_step, compute_dtype
from videomae.engine.rng_state import generator_seed
from videomae.engine.run import RunSummary, TrainingRun
from videomae.engine.validation import EvalResult, score_dataset, write_eval_outputs
from videomae.hf_folder import classifier_trunk
from videomae.models import create_model

__all__ = ["FinetuneRun", "evaluate_only", "run_finetuning"]

log = logging.getLogger(__name__)


class FinetuneRun(TrainingRun):
    """Everything one rank needs for a supervised run; :meth:`train` runs it, :meth:`test` scores the test set.

    Args:
        cfg: the resolved config.
        eval_only: build no training set; the weights come from the run's checkpoint, ``init`` or the run's export.
    """

    stage = "finetune"

    def __init__(self, cfg: FinetuneConfig, eval_only: bool = False) -> None:
        self.eval_only = eval_only
        self.init_report = None
        self.weights: str | None = None  # what the model holds: init, a resumed checkpoint, the final step
        self.teacher: Teacher | None = None
        self.teacher_dim: int | None = None
        super().__init__(cfg)

    # ------------------------------------------------------------------------------------------------ building

    def build_train_dataset(self) -> Any:
        """The training set; also fixes the class list (``data.labels``, else the training manifests' merged names,
        else, evaluating only, the evaluation manifests'), builds the evaluation sets with it and loads the
        distillation teacher, whose classes must be these."""
        d, out = self.cfg.data, self.out
        names = fixed_class_names(d)
        train_set = self.val_set = self.test_set = None
        if d.manifests and (not self.eval_only or names is None):
            train_set = build_labelled_dataset(d, out, self.cfg.seed, names)
            names = train_set.label_names
        elif not self.eval_only:
            raise ConfigError("data.manifests: empty; give at least one labelled manifest, e.g. data.manifests=[a.csv]")
        if d.val_manifests:
            self.val_set = build_eval_dataset("data.val_manifests", d.val_manifests, d, names, (1, 1), out)
            names = names if train_set is not None else self.val_set.label_names  # evaluating only: its names
        if d.test_manifests or d.val_manifests:
            key = "data.test_manifests" if d.test_manifests else "data.val_manifests"
            views = (d.test_num_segment, d.test_num_crop)
            self.test_set = build_eval_dataset(key, d.test_manifests or d.val_manifests, d, names, views, out)
            names = names if train_set is not None else self.test_set.label_names
        self.class_names = names
        sets = [s for s in (train_set, self.val_set, self.test_set) if s is not None]
        self.num_classes = len(names) if names is not None else max((s.num_classes for s in sets), default=0)
        if self.num_classes < 1:
            raise ConfigError("data.labels: no class list: give data.labels or labelled manifests")
        k = self.cfg.distill
        if k.teacher is not None and not (self.eval_only and k.feature_weight == 0):
            teacher = load_teacher(k, d, self.class_names, self.num_classes)
            self.teacher_dim = teacher.width
            self.teacher = None if self.eval_only else teacher  # evaluating, it only sizes the feature projector
        return None if self.eval_only else train_set

    def build_classifier(self) -> nn.Module:
        """The classifier with fresh weights; initialising from a transformers folder, its trunk is the folder's
        (``config.json``), with the run's head, pooling, regularisation and ``model.overrides``."""
        name, kwargs = self.cfg.model.name, classifier_kwargs(self.cfg.model, self.num_classes)
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

    def load_init(self, model: nn.Module) -> None:
        source = self.cfg.init
        exported = self.out / "export" / "model.safetensors"
        if source is None and self.eval_only and exported.is_file():
            source = str(exported)
        if source is None:
            return
        self.weights = str(source)
        with whole_parameters(model):  # ZeRO-3: gathered only when there is something to load
            self.init_report = init_classifier(student_of(model), source, self.cfg.init_label_map, self.class_names)
        log.info("initialising from %s: %s", source, self.init_report)

    def before_engine(self, model: nn.Module) -> None:
        self.ema = None
        if self.cfg.train.ema:
            # Created from the fp32 weights, before DeepSpeed casts the module to the training precision.
            model.to(self.device)
            self.ema = ModelEmaV3(student_of(model), decay=self.cfg.train.ema_decay, dtype=torch.float32)

    def param_groups(self, model: nn.Module) -> list[dict]:
        t = self.cfg.train
        return param_groups_layer_decay(model, t.weight_decay, t.layer_decay)

    def setup(self, model: nn.Module) -> None:
        t = self.cfg.train
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(generator_seed(self.cfg.seed, self.env.rank))
        self.mixup = build_mixup(t, self.num_classes)
        self.criterion = build_criterion(t)
        self.flops_per_clip = classifier_train_flops(student_of(model).model_config)
        if self.teacher is not None:
            self.teacher.to(self.device, compute_dtype(self.engine))  # the run's precision
            self.flops_per_clip += classifier_forward_flops(self.teacher.model.model_config)
        self.best_top1: float | None = None

    # ------------------------------------------------------------------------------------------------ training

    def micro_step(self, batch: dict, poison: bool) -> MicroStep:
        videos = batch["video"].to(self.device, non_blocking=True)  # (B*S, C, T, H, W)
        targets = batch["label"].to(self.device, non_blocking=True)  # (B*S,)
        if self.mixup is not None:
            videos, targets = mix_clips(self.mixup, videos, targets)  # targets (B*S, classes)
        videos = videos.to(compute_dtype(self.engine))
        if self.teacher is None:
            logits = self.engine(videos)  # (B*S, classes)
            return backward_step(self.engine, self.criterion(logits.float(), targets), poison)
        teacher_logits, teacher_features = self.teacher(videos)  # (B*S, classes), (B*S, D_teacher)
        terms = self.engine(videos, teacher_logits, teacher_features, targets)  # unweighted, incl. the label term
        loss = sum(self.engine.module.loss.weighted(terms).values())
        result = backward_step(self.engine, loss, poison)
        values = torch.stack([v.detach() for v in terms.values()]).tolist()
        result.metrics = {TERM_METRICS[k]: v for k, v in zip(terms, values)}
        return result

    def on_step_end(self, step: int) -> dict[str, Any]:
        if self.ema is not None:
            self.ema.update(student_of(self.engine.module), step=step)
        every = self.cfg.train.eval_every
        if self.val_set is None or not ((every > 0 and step % every == 0) or step == self.total_steps):
            return {}
        results = self.evaluate(self.val_set)
        metrics = {k: v for name, r in results.items() for k, v in r.scalars(f"{name}val_").items()}
        top1 = metrics.get("val_top1")
        if self.cfg.train.save_best and top1 is not None and (self.best_top1 is None or top1 > self.best_top1):
            self.best_top1 = top1
            self._export_current(self.out / "export" / "best.safetensors", {"val_top1": top1})
        log.info("step %d: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return metrics

    def on_finish(self, summary: RunSummary) -> None:
        self.weights = str(self.root / ckpt.tag_for(self.state["step"]))
        if self.ema is not None and dist.is_main():
            export_weights(self.ema.module, self.out / "export" / "ema.safetensors", self.export_metadata())
        self.test()

    def client_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"best_val_top1": self.best_top1, "label_names": self.class_names}
        if self.ema is not None:
            state["ema"] = self.ema.module.state_dict()
        return state

    def load_client_state(self, client: dict[str, Any]) -> None:
        self.weights = str(self.resume_from.path)
        self.best_top1 = client.get("best_val_top1")
        if self.ema is not None:
            if "ema" not in client:
                raise ConfigError("train.ema: true, but the checkpoint holds no EMA weights (a run started without)")
            self.ema.module.load_state_dict(client["ema"])

    def export_metadata(self) -> dict[str, Any]:
        return {
            "step": self.state["step"],
            "label_names": self.class_names,
            "finetune_config": config_to_dict(self.cfg),
        }

    def _export_current(self, path: Path, extra: dict[str, Any]) -> None:
        """Export the weights as they are now (collective under ZeRO; rank 0 writes)."""
        state = current_fp32_state(self.engine)
        if state is not None:
            export_weights(self.export_model(state), path, {**self.export_metadata(), **extra})
        dist.barrier()

    # ------------------------------------------------------------------------------------------------ evaluation

    def evaluate(self, dataset: Any) -> dict[str, EvalResult]:
        """Score ``dataset`` with the trained weights (``""``) and the EMA weights (``"ema_"``), on every rank."""
        forwards = {"": self._engine_forward}
        if self.ema is not None:
            forwards["ema_"] = self._ema_forward
        d = self.cfg.data
        self.engine.eval()
        try:
            return {
                name: score_dataset(
                    forward,
                    dataset,
                    rank=self.env.rank,
                    world_size=self.env.world_size,
                    batch_size=d.eval_batch_size or self.cfg.train.batch_size,
                    num_workers=d.num_workers,
                    device=self.device,
                    lockstep=self.cfg.deepspeed.zero_stage == 3,
                )
                for name, forward in forwards.items()
            }
        finally:
            self.engine.train()

    def _engine_forward(self, videos: torch.Tensor) -> torch.Tensor:
        return self.engine(videos.to(compute_dtype(self.engine))).float()

    def _ema_forward(self, videos: torch.Tensor) -> torch.Tensor:
        dtype = compute_dtype(self.engine)
        autocast = torch.autocast(self.device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
        with autocast:
            return self.ema.module(videos).float()

    def test(self) -> dict[str, Any] | None:
        """Multi-view test of the test set (or the validation set) into ``eval/``; the summary (None: no set)."""
        if self.test_set is None:
            log.info("no data.test_manifests or data.val_manifests: final evaluation skipped")
            return None
        results = self.evaluate(self.test_set)
        split = "test" if self.cfg.data.test_manifests else "val"
        summary: dict[str, Any] = {}
        if dist.is_main():
            paths = [row.path for row in self.test_set.rows]
            for name, result in results.items():
                folder = self.out / "eval" / name.rstrip("_")
                info = {"split": split, "step": self.state["step"], "weights": self.weights if not name else "ema"}
                summary[name.rstrip("_") or "model"] = write_eval_outputs(result, folder, self.class_names, paths, info)
            views = (self.test_set.test_num_segment, self.test_set.test_num_crop)
            log.info("final %s evaluation (%d x %d views): %s", split, *views, summary)
        dist.barrier()
        return summary


def run_finetuning(cfg: FinetuneConfig) -> RunSummary:
    """Fine-tune (or post-pretrain) a classifier on DeepSpeed as configured; every rank calls this.

    Raises:
        ConfigError: a setting that only shows up against the data or the device.
        NonFiniteError: ``train.max_nonfinite_steps`` consecutive non-finite steps.
    """
    return FinetuneRun(cfg).train()


def evaluate_only(cfg: FinetuneConfig) -> dict[str, Any] | None:
    """Score the run's newest checkpoint, else ``init``, else the run's ``export/model.safetensors`` on the test
    set (or validation set) into ``eval/``, without training; every rank calls this.

    Raises:
        ConfigError: nothing to evaluate (no checkpoint, no ``init``, no export) or no evaluation set.
    """
    if not (cfg.data.test_manifests or cfg.data.val_manifests):
        raise ConfigError("data.test_manifests: empty (and no data.val_manifests): nothing to evaluate on")
    run = FinetuneRun(cfg, eval_only=True)
    if run.resume_from is None and run.init_report is None:
        raise ConfigError(
            f"init: nothing to evaluate: no checkpoint in {cfg.output_dir}/checkpoints, no init and no "
            f"{cfg.output_dir}/export/model.safetensors"
        )
    run.resume()
    return run.test()
