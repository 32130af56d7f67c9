"""The supervised stage's config (post-pretraining, fine-tuning, evaluation) on top of the shared sections.

Used by ``deepspeed launch/finetune.py --config <name> [key=value ...]``. Defaults
follow the VideoMAE / VideoMAE V2 release's ``run_class_finetuning.py`` (layer decay 0.75, smoothing 0.1, mixup
0.8, cutmix 1.0, two repeated samples, betas 0.9/0.999); the release scales its lr by videos, not clips (set
``train.lr_scale_by: videos`` to reuse its base lr, as the shipped recipes do). The ``distill`` section adds
knowledge distillation from a frozen teacher classifier (off by default).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from videomae.config.batch_plan import batch_plan
from videomae.config.loading import ConfigError, load_config_file, require
from videomae.config.sections import (
    DataConfig,
    DeepSpeedConfig,
    LoggingConfig,
    ManifestSource,
    RunConfig,
    TrainConfig,
    validate_data,
    validate_deepspeed,
    validate_logging,
    validate_manifests,
    validate_train,
)

__all__ = [
    "DistillConfig",
    "FinetuneConfig",
    "FinetuneDataConfig",
    "FinetuneModelConfig",
    "FinetuneTrainConfig",
    "classifier_kwargs",
    "load_finetune_config",
    "validate_distill",
    "validate_finetune",
]

# timm's RandAugment config strings: "rand" then dash-separated options (m9, n2, mstd0.5, mmax10, inc1, p0.5, w0).
_RAND_AUGMENT = re.compile(r"^rand(-(m|n|mstd|mmax|inc|p|w)[0-9.]+)*$")


@dataclass
class FinetuneDataConfig(DataConfig):
    """Labelled data: training manifests (labels merged by class name), validation and test sets, augmentation."""

    num_sample: int = 2
    """Augmented clips drawn from each decoded training video (repeated augmentation, the release's default 2)."""
    hflip_prob: float = 0.5
    """Probability of a horizontal flip per training clip (set 0 for direction-sensitive labels, e.g. SSv2)."""
    val_manifests: list[ManifestSource] = field(default_factory=list)
    """Validation set, scored during training (one centre view per video) and at the end; empty: no validation."""
    test_manifests: list[ManifestSource] = field(default_factory=list)
    """Test set for the final multi-view evaluation; empty: the validation set is used."""
    labels: str | None = None
    """labels.txt fixing the class list and order (line i = class i); ``None``: the sorted class names merged over
    the training manifests (integer labels are used as they are when no manifest names its classes)."""
    eval_batch_size: int | None = None
    """Videos per process per evaluation batch (each brings all its views); ``None``: ``train.batch_size``."""
    short_side_size: int | None = None
    """Evaluation: frames are resized to this short side before cropping; ``None``: ``input_size``."""
    test_num_segment: int = 5
    """Final evaluation: clips per video, spread over its length."""
    test_num_crop: int = 3
    """Final evaluation: spatial crops per clip along the long side (1 = centre)."""
    rand_augment: str | None = None
    """RandAugment policy as a timm config string, e.g. ``rand-m7-n4-mstd0.5-inc1`` (the release's); ``None``: off."""
    reprob: float = 0.0
    """Random-erasing probability per training clip (the release uses 0.25); 0: off."""


@dataclass
class FinetuneModelConfig:
    """The classifier; ``num_classes`` comes from the data's class list."""

    name: str = "vit_base_patch16_224"
    """Registered classification model (``videomae.models.list_models("vit_")``)."""
    drop_path_rate: float | None = None
    """Stochastic depth, rising linearly over the blocks to this rate; ``None`` keeps the registered default."""
    with_cp: bool = False
    """Activation (gradient) checkpointing in every block: less memory, ~30% more compute."""
    use_mean_pooling: bool = True
    """Mean over tokens then ``fc_norm`` (the release's default); ``False``: final norm then the first token."""
    fc_drop_rate: float = 0.0
    """Dropout before the head."""
    init_scale: float | None = None
    """The fresh head's initial weights are multiplied by this; ``None`` keeps the model's default (0.001, the
    release's)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Further constructor arguments (``img_size``, ``all_frames``, ``embed_dim``, ``depth``, ``num_heads``...)."""


@dataclass
class FinetuneTrainConfig(TrainConfig):
    """The supervised training loop: the shared fields plus the fine-tuning recipe and evaluation schedule."""

    lr: float = 1e-3
    """Base learning rate per 256 samples of ``lr_batch`` (:mod:`videomae.config.batch_plan`)."""
    min_lr: float = 1e-6
    """Absolute learning rate at the end of the cosine schedule (the release scales its 1e-6 by batch / 256)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    layer_decay: float = 0.75
    """Layer-wise lr decay: block i of L trains at ``lr * layer_decay ** (L + 1 - (i + 1))``; 1.0: off."""
    smoothing: float = 0.1
    """Label smoothing (inside the mixed targets when mixup/cutmix are on)."""
    mixup: float = 0.8
    """Mixup alpha; 0: off."""
    cutmix: float = 1.0
    """CutMix alpha; 0: off."""
    mixup_prob: float = 1.0
    """Probability of applying mixup or cutmix to a batch."""
    mixup_switch_prob: float = 0.5
    """Probability of cutmix instead of mixup when both are on."""
    mixup_mode: Literal["batch", "pair", "elem"] = "batch"
    """One mixing draw per batch, per pair of clips or per clip."""
    ema: bool = False
    """Keep an exponential moving average of the weights (timm ``ModelEmaV3``), checkpointed, evaluated, exported."""
    ema_decay: float = 0.9999
    """EMA decay per optimizer step."""
    eval_every: int = 0
    """Score the validation set every this many steps (one centre view per video); 0: only at the end."""
    save_best: bool = False
    """Export the weights with the best validation top-1 so far as ``export/best.safetensors``."""

    @property
    def mixing(self) -> bool:
        """Mixup or cutmix is on (soft targets)."""
        return self.mixup > 0 or self.cutmix > 0


@dataclass
class DistillConfig:
    """Knowledge distillation from a frozen teacher classifier; off while ``teacher`` is null.

    ``loss = alpha * T^2 * KL(teacher || student) + (1 - alpha) * label loss + feature_weight * feature loss``, with
    the label loss of the plain run (mixup/cutmix soft targets, label smoothing). The teacher sees the same (mixed)
    clips, runs in eval mode and the run's precision, and is never trained or checkpointed; its classes must be the
    data's, matched by name.
    """

    teacher: str | None = None
    """Teacher weights: our export (rebuilt from its metadata), or, with ``teacher_model``, any checkpoint
    ``load_pretrained`` reads (original releases, transformers folders); null: no distillation."""
    teacher_model: str | None = None
    """Registered classifier to build for a checkpoint that does not carry its model config (our exports do)."""
    teacher_overrides: dict[str, Any] = field(default_factory=dict)
    """Constructor arguments of ``teacher_model`` (``num_classes``, ``img_size``, ``all_frames``...)."""
    teacher_labels: str | None = None
    """labels.txt naming the teacher's head rows, for a checkpoint that does not name its classes (the release's
    .pth files); our exports and transformers configs carry their class names."""
    alpha: float = 1.0
    """Weight of the distillation term in [0, 1]; the label term gets ``1 - alpha`` (1: logits only, as the
    released VideoMAE V2 students)."""
    temperature: float = 1.0
    """Softening temperature ``T`` of both distributions (the ``T^2`` factor keeps gradient sizes comparable)."""
    feature_weight: float = 0.0
    """Weight of the feature term: the student's pooled feature, through a learned linear projection to the
    teacher's width (trained and checkpointed with the student), matched to the teacher's; 0: logits only."""
    feature_loss: Literal["mse", "smooth_l1", "cosine"] = "mse"
    """Distance of the feature term."""


@dataclass
class FinetuneConfig(RunConfig):
    """A supervised run: post-pretraining on a labelled hybrid, fine-tuning, or evaluation only."""

    output_dir: str = "runs/finetune"
    """Run folder: resolved config, metrics, TensorBoard events, checkpoints, ``eval/`` results, ``export/``."""
    init_label_map: str = "auto"
    """How ``init``'s classifier head is used: ``auto`` = remapped by class name when the checkpoint names its
    classes (our exports, transformers configs) and shares some with the data, else a fresh head; ``fresh`` =
    always a fresh head; ``keep`` = loaded as it is (same classes, same order); or a labels.txt naming the
    checkpoint's head rows (e.g. the release's Kinetics-710 label map), remapped by name."""
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    model: FinetuneModelConfig = field(default_factory=FinetuneModelConfig)
    train: FinetuneTrainConfig = field(default_factory=FinetuneTrainConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def validate(self) -> None:
        """Range checks that types alone cannot express (see :func:`validate_finetune`)."""
        validate_finetune(self)

    def for_evaluation(self) -> FinetuneConfig:
        """The config of an ``--eval-only`` run: with ``init``, those weights are scored, so a training run in the
        same ``output_dir`` is never resumed (``resume=never``)."""
        return dataclasses.replace(self, resume="never") if self.init is not None else self


def validate_finetune(cfg: FinetuneConfig) -> None:
    """Range checks of a fine-tuning config that types alone cannot express.

    Raises:
        ConfigError: naming the dotted key and the allowed values.
    """
    d, t, m = cfg.data, cfg.train, cfg.model
    validate_data(d)
    validate_train(t)
    validate_deepspeed(cfg.deepspeed, cfg.train.compile)
    validate_logging(cfg.logging)
    validate_manifests("data.val_manifests", d.val_manifests)
    validate_manifests("data.test_manifests", d.test_manifests)
    for key, value in [("data.test_num_segment", d.test_num_segment), ("data.test_num_crop", d.test_num_crop)]:
        require(value >= 1, key, "an integer >= 1", value)
    if d.eval_batch_size is not None:
        require(d.eval_batch_size >= 1, "data.eval_batch_size", "an integer >= 1 or null", d.eval_batch_size)
    if d.short_side_size is not None:
        ok = d.short_side_size >= d.input_size
        require(
            ok, "data.short_side_size", f"null or an integer >= data.input_size ({d.input_size})", d.short_side_size
        )
    require(0.0 <= d.reprob <= 1.0, "data.reprob", "a probability in [0, 1]", d.reprob)
    if d.rand_augment is not None:
        ok = bool(_RAND_AUGMENT.match(d.rand_augment))
        require(
            ok, "data.rand_augment", "null or a timm RandAugment string like rand-m7-n4-mstd0.5-inc1", d.rand_augment
        )
    require(not m.name.startswith("pretrain_"), "model.name", "a classification model (vit_*)", m.name)
    if m.drop_path_rate is not None:
        require(0.0 <= m.drop_path_rate < 1.0, "model.drop_path_rate", "null or a number in [0, 1)", m.drop_path_rate)
    require(0.0 <= m.fc_drop_rate < 1.0, "model.fc_drop_rate", "a number in [0, 1)", m.fc_drop_rate)
    require(0.0 < t.layer_decay <= 1.0, "train.layer_decay", "a number in (0, 1] (1.0: no decay)", t.layer_decay)
    require(0.0 <= t.smoothing < 1.0, "train.smoothing", "a number in [0, 1)", t.smoothing)
    require(t.mixup >= 0.0, "train.mixup", "a number >= 0 (0: off)", t.mixup)
    require(t.cutmix >= 0.0, "train.cutmix", "a number >= 0 (0: off)", t.cutmix)
    require(0.0 <= t.mixup_prob <= 1.0, "train.mixup_prob", "a probability in [0, 1]", t.mixup_prob)
    require(
        0.0 <= t.mixup_switch_prob <= 1.0, "train.mixup_switch_prob", "a probability in [0, 1]", t.mixup_switch_prob
    )
    if t.mixing:
        clips = batch_plan(cfg, world_size=1).clips_per_micro_step
        even = "an even number of clips per micro-batch (train.batch_size x data.num_sample) with mixup/cutmix"
        require(clips % 2 == 0, "train.batch_size", even, clips)
    require(0.0 < t.ema_decay < 1.0, "train.ema_decay", "a number in (0, 1)", t.ema_decay)
    if t.ema:
        # The average is taken over the module's parameters, which ZeRO-3 partitions across ranks.
        require(cfg.deepspeed.zero_stage < 3, "train.ema", "true only with deepspeed.zero_stage 0, 1 or 2", True)
    require(t.eval_every >= 0, "train.eval_every", "an integer >= 0 (0: only at the end)", t.eval_every)
    if t.eval_every > 0:
        require(bool(d.val_manifests), "train.eval_every", "0 unless data.val_manifests is set", t.eval_every)
    if t.save_best:
        require(bool(d.val_manifests), "train.save_best", "false unless data.val_manifests is set", True)
    validate_distill(cfg.distill)


def validate_distill(k: DistillConfig) -> None:
    """Range checks of the ``distill`` section.

    Raises:
        ConfigError: naming the dotted key and the allowed values.
    """
    require(0.0 <= k.alpha <= 1.0, "distill.alpha", "a number in [0, 1] (weight of the distillation term)", k.alpha)
    require(k.temperature > 0.0, "distill.temperature", "a number > 0", k.temperature)
    require(k.feature_weight >= 0.0, "distill.feature_weight", "a number >= 0 (0: logits only)", k.feature_weight)
    if k.teacher_model is not None:
        ok = not k.teacher_model.startswith("pretrain_")
        require(ok, "distill.teacher_model", "null or a classification model (vit_*)", k.teacher_model)
    if k.teacher_overrides:
        ok = k.teacher_model is not None
        allowed = "{} unless distill.teacher_model is set (an export carries its own model config)"
        require(ok, "distill.teacher_overrides", allowed, k.teacher_overrides)
    if k.teacher is not None:
        ok = k.alpha > 0 or k.feature_weight > 0
        allowed = "a number in (0, 1] when distill.feature_weight is 0 (else the teacher is unused)"
        require(ok, "distill.alpha", allowed, k.alpha)


def classifier_kwargs(model: FinetuneModelConfig, num_classes: int) -> dict[str, Any]:
    """Keyword arguments for ``videomae.models.create_model`` besides the name, for ``num_classes`` data classes.

    Raises:
        ConfigError: ``model.overrides.num_classes`` contradicts the data's class count.
    """
    given = model.overrides.get("num_classes")
    if given is not None and given != num_classes:
        raise ConfigError(
            f"model.overrides.num_classes: got {given!r}, but the data has {num_classes} classes (the class list "
            "comes from data.labels or the training manifests); drop the override"
        )
    kwargs: dict[str, Any] = {
        "num_classes": num_classes,
        "with_cp": model.with_cp,
        "use_mean_pooling": model.use_mean_pooling,
        "fc_drop_rate": model.fc_drop_rate,
    }
    if model.drop_path_rate is not None:
        kwargs["drop_path_rate"] = model.drop_path_rate
    if model.init_scale is not None:
        kwargs["init_scale"] = model.init_scale
    kwargs.update(model.overrides)
    return kwargs


def load_finetune_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> FinetuneConfig:
    """Load a fine-tuning YAML file (or the defaults when ``path`` is None) and apply dotted overrides.

    Raises:
        ConfigError: file unreadable or invalid, unknown key, bad type or value (the message names the key).
    """
    return load_config_file(FinetuneConfig, path, overrides)
