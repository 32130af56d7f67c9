"""Typed, strict configuration: dataclasses per section, YAML files, dotted command-line overrides.

A run is configured by one YAML file and optional ``key=value`` overrides, later ones winning::

    deepspeed launch/pretrain.py --config demo train.max_steps=10 deepspeed.zero_stage=3
    deepspeed launch/finetune.py --config demo train.eval_every=50

Override values are parsed as YAML (``data.manifests=[a.csv,b.csv]`` is a list, ``train.lr=1e-3`` a float).
Unknown keys, wrong types and out-of-range values are refused with a :class:`ConfigError` naming the full
dotted key and what is allowed, before any process group, model or data loader is created.

Modules: ``loading`` (YAML, overrides, dict <-> dataclass), ``sections`` (what every stage shares, and the
learning-rate rule), ``pretrain`` (:class:`PretrainConfig`), ``finetune`` (:class:`FinetuneConfig`).
"""

from videomae.config.finetune import (
    DistillConfig,
    FinetuneConfig,
    FinetuneDataConfig,
    FinetuneModelConfig,
    FinetuneTrainConfig,
    classifier_kwargs,
    load_finetune_config,
    validate_finetune,
)
from videomae.config.loading import (
    ConfigError,
    apply_overrides,
    build_config,
    config_to_dict,
    load_config_file,
    parse_override,
    save_config,
)
from videomae.config.pretrain import (
    LossConfig,
    MaskConfig,
    ModelConfig,
    PretrainConfig,
    PretrainTrainConfig,
    config_from_dict,
    load_config,
    validate,
)
from videomae.config.sections import (
    DataConfig,
    DeepSpeedConfig,
    LoggingConfig,
    ManifestSource,
    RunConfig,
    TrainConfig,
)

__all__ = [
    "ConfigError",
    "DataConfig",
    "DeepSpeedConfig",
    "DistillConfig",
    "FinetuneConfig",
    "FinetuneDataConfig",
    "FinetuneModelConfig",
    "FinetuneTrainConfig",
    "LoggingConfig",
    "LossConfig",
    "ManifestSource",
    "MaskConfig",
    "ModelConfig",
    "PretrainConfig",
    "PretrainTrainConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "build_config",
    "classifier_kwargs",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "load_config_file",
    "load_finetune_config",
    "parse_override",
    "save_config",
    "validate",
    "validate_finetune",
]
