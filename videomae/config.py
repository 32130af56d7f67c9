"""Typed, strict configuration: dataclasses per section, YAML files, dotted command-line overrides.

A run is configured by one YAML file and optional ``key=value`` overrides, later ones winning::

    deepspeed launch/pretrain.py --config launch/configs/pretrain/demo.yaml train.max_steps=10 deepspeed.zero_stage=3

Override values are parsed as YAML (``data.manifests=[a.csv,b.csv]`` is a list, ``train.lr=1e-3`` a float).
Unknown keys, wrong types and out-of-range values are refused with a :class:`ConfigError` naming the full
dotted key and what is allowed, before any process group, model or data loader is created.

Learning-rate rule (see :meth:`TrainConfig.absolute_lr`)::

    lr = train.lr * effective_batch / 256
    effective_batch = train.batch_size * world_size * train.grad_accum * data.num_sample   (lr_scale_by: clips)

Each video read by the loader yields ``data.num_sample`` augmented clips, and every clip is one sample for the
optimizer, so our effective batch counts clips. The VideoMAE V2 release scales by
``batch_size * world_size`` only (no ``num_sample``); ``train.lr_scale_by: videos`` reproduces its numbers
exactly with the release's base lr, which is what the shipped ``vit_*_hybrid.yaml`` recipes do.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "ConfigError",
    "DataConfig",
    "DeepSpeedConfig",
    "LossConfig",
    "ManifestSource",
    "MaskConfig",
    "ModelConfig",
    "PretrainConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
]


class _Loader(yaml.SafeLoader):
    """YAML loader that also reads ``1e-3`` as a float (YAML 1.1, PyYAML's default, wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range; the message names the dotted key."""


@dataclass
class ManifestSource:
    """One manifest of a (possibly hybrid) training set."""

    path: str
    """Manifest file (CSV with header, or the original space-separated list format)."""
    data_root: str | None = None
    """Prefix joined to relative paths of this manifest; ``None`` uses ``data.data_root``."""
    weight: float = 1.0
    """Relative sampling weight against the other manifests."""
    repeat: float | None = None
    """Draw this many times the manifest's size per epoch instead of weighting it (fractions allowed)."""
    num_frames: int | None = None
    """Frames per clip for this source; ``None`` uses ``data.num_frames``."""
    sampling_rate: int | None = None
    """Temporal stride for this source; ``None`` uses ``data.sampling_rate``."""
    frame_template: str | None = None
    """File name template of frame folders, e.g. ``img_{:05d}.jpg``; ``None`` uses the reader's default."""


@dataclass
class DataConfig:
    """Training data: manifests and clip sampling."""

    manifests: list[ManifestSource] = field(default_factory=list)
    """Manifests to mix; each entry is a path or a mapping with the fields of :class:`ManifestSource`."""
    data_root: str | None = None
    """Prefix joined to relative paths in every manifest that sets no ``data_root`` of its own."""
    input_size: int = 224
    """Side of the square crop fed to the model, in pixels."""
    num_frames: int = 16
    """Frames per clip."""
    sampling_rate: int = 4
    """Temporal stride between sampled frames."""
    num_sample: int = 4
    """Augmented clips drawn from each decoded video (repeated augmentation); they all enter the batch."""
    num_workers: int = 8
    """Data-loader worker processes per rank (0 reads in the training process)."""
    decode_backend: Literal["auto", "decord", "pyav"] = "auto"
    """Video decoder: ``auto`` = decord, except MPEG-4 Part 2 files (decord's random access returns wrong frames on
    them) and files decord fails on, which go to PyAV; ``pyav`` was the faster one on our benchmarks
    (bench/RESULTS.md)."""
    hflip_prob: float = 0.0
    """Probability of a horizontal flip per clip; 0 as in VideoMAE pretraining (keep it 0 for direction-sensitive
    data such as Something-Something)."""
    max_consecutive_failures: int = 20
    """Undecodable samples in a row (per worker) before the run stops; each one is logged, replaced and counted."""
    decode_timeout_s: float = 60.0
    """Seconds one clip may take to decode before it counts as bad (0: no limit)."""


@dataclass
class ModelConfig:
    """Which model to build; names and overrides follow the VideoMAE V2 release."""

    name: str = "pretrain_videomae_base_patch16_224"
    """Registered model name (``videomae.models.list_models()``)."""
    decoder_depth: int | None = None
    """Decoder blocks; ``None`` keeps the registered default."""
    drop_path_rate: float | None = None
    """Stochastic depth rate of the encoder; ``None`` keeps the registered default."""
    with_cp: bool = False
    """Activation (gradient) checkpointing in every block: less memory, ~30% more compute."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Further constructor arguments passed to ``create_model`` (``img_size``, ``all_frames``, ``encoder_depth``...)."""

    def create_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``videomae.models.create_model`` besides the name."""
        kwargs: dict[str, Any] = {"with_cp": self.with_cp}
        if self.decoder_depth is not None:
            kwargs["decoder_depth"] = self.decoder_depth
        if self.drop_path_rate is not None:
            kwargs["drop_path_rate"] = self.drop_path_rate
        kwargs.update(self.overrides)
        return kwargs


@dataclass
class MaskConfig:
    """Encoder and decoder masking (VideoMAE V2 dual masking)."""

    type: Literal["tube", "random"] = "tube"
    """Encoder mask: ``tube`` (one spatial mask repeated over time) or ``random`` (per token)."""
    ratio: float = 0.9
    """Fraction of tokens hidden from the encoder."""
    decoder_type: Literal["run_cell", "none"] = "run_cell"
    """Decoder mask: ``run_cell`` (running cell, VideoMAE V2) or ``none`` (decode every hidden token)."""
    decoder_ratio: float = 0.5
    """Fraction of tokens dropped by the decoder (running cell supports 0.5 and 0.75 and 0.25 patterns)."""


@dataclass
class LossConfig:
    """The masked-pixel reconstruction loss."""

    normalize_target: bool = True
    """Regress per-patch normalised pixels (mean/std over each token's pixels per channel), as VideoMAE does."""


@dataclass
class TrainConfig:
    """Optimisation and the training loop."""

    batch_size: int = 8
    """Videos per process per micro-step; each yields ``data.num_sample`` clips."""
    max_steps: int | None = None
    """Optimizer steps to run; exactly one of ``max_steps`` and ``epochs`` is set."""
    epochs: int | None = None
    """Passes over the (weighted) training set; converted to steps with the sampler's length."""
    grad_accum: int = 1
    """Micro-steps accumulated per optimizer step."""
    lr: float = 1.5e-4
    """Base learning rate per 256 samples: ``lr_abs = lr * effective_batch / 256`` (see ``lr_scale_by``)."""
    lr_scale_by: Literal["clips", "videos"] = "clips"
    """Effective batch for lr scaling: ``clips`` = batch_size*world*grad_accum*num_sample (our rule);
    ``videos`` leaves out num_sample, as the VideoMAE V2 release does."""
    min_lr: float = 1e-5
    """Absolute learning rate at the end of the cosine schedule (not scaled)."""
    warmup_steps: int | None = None
    """Linear warm-up steps from 0 to the peak lr."""
    warmup_epochs: float | None = None
    """Warm-up in epochs (converted to steps); used when ``warmup_steps`` is None."""
    weight_decay: float = 0.05
    """AdamW weight decay at the start (not applied to norms, biases, position tables and tokens)."""
    weight_decay_end: float | None = None
    """Weight decay at the end of a cosine wd schedule; ``None`` keeps it constant."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon."""
    clip_grad: float | None = None
    """Clip the global gradient norm to this value; ``None`` disables clipping."""
    save_every: int = 1000
    """Write a checkpoint every this many optimizer steps (and always at the end)."""
    keep_last: int = 3
    """Complete checkpoints to keep; older ones are deleted after a new one is committed."""
    log_every: int = 10
    """Log metrics (JSONL, TensorBoard) every this many steps."""
    picture_every: int = 0
    """Save a reconstruction PNG every this many steps (0: never)."""
    picture_clips: int = 2
    """Clips shown in each reconstruction picture."""
    max_nonfinite_steps: int = 5
    """Stop after this many consecutive steps with a non-finite loss or gradient (each is skipped)."""
    compile: bool = False
    """Wrap the model in ``torch.compile``."""
    inject_nan_at: list[int] = field(default_factory=list)
    """Testing hook: make the loss NaN once at each of these (1-based, as logged) steps; the step is retried."""

    def effective_batch(self, world_size: int, num_sample: int) -> int:
        """Samples per optimizer step used for lr scaling (see ``lr_scale_by``)."""
        clips_per_video = num_sample if self.lr_scale_by == "clips" else 1
        return self.batch_size * world_size * self.grad_accum * clips_per_video

    def absolute_lr(self, world_size: int, num_sample: int) -> float:
        """Peak learning rate: ``lr * effective_batch / 256``."""
        return self.lr * self.effective_batch(world_size, num_sample) / 256


@dataclass
class DeepSpeedConfig:
    """DeepSpeed engine options; the DeepSpeed JSON is generated from these, never edited by hand."""

    zero_stage: Literal[0, 1, 2, 3] = 0
    """ZeRO stage: 0 data parallel, 1 optimizer states, 2 + gradients, 3 + parameters partitioned."""
    offload_optimizer: bool = False
    """ZeRO-Offload of optimizer states to CPU memory (stages 1-3)."""
    offload_param: bool = False
    """Offload parameters to CPU memory (stage 3 only)."""
    overlap_comm: bool = True
    """Overlap gradient reduction with the backward pass."""
    reduce_bucket_size: int = 50_000_000
    """Elements per gradient-reduction bucket."""
    allgather_bucket_size: int = 50_000_000
    """Elements per all-gather bucket (stages 1-2)."""
    initial_scale_power: int = 16
    """fp16 only: the dynamic loss scale starts at 2**initial_scale_power."""
    loss_scale_window: int = 1000
    """fp16 only: steps without overflow before the loss scale is raised."""
    min_loss_scale: float = 1.0
    """fp16 only: smallest dynamic loss scale."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Merged last into the generated DeepSpeed config (escape hatch for options not listed here)."""


@dataclass
class PretrainConfig:
    """A pretraining run."""

    output_dir: str = "runs/pretrain"
    """Run folder: resolved config, metrics, TensorBoard events, checkpoints, pictures, bad-sample list."""
    seed: int = 0
    """Seed of every random generator (per rank offsets are added where streams must differ)."""
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"
    """Training precision; fp16 uses dynamic loss scaling."""
    init: str | None = None
    """Weights to start from (our safetensors export or an original checkpoint); used only for a fresh run.
    Auto-resume refuses a run folder whose checkpoints were started from different ``init`` weights."""
    resume: str = "auto"
    """``auto``: newest complete checkpoint in ``output_dir``; ``never``: start fresh; else a checkpoint folder."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)


# ----------------------------------------------------------------------------------------------------------------
# dict <-> dataclass with type checks


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return f"mapping ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it (mappings to dataclasses, ints to floats)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _convert(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: got {value!r}, expected {_type_name(tp)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed and type(value) in {type(a) for a in allowed}:
            return value
        raise ConfigError(f"{key}: got {value!r}, allowed values: {', '.join(repr(a) for a in allowed)}")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: got {value!r}, expected a list ({_type_name(tp)})")
        (item_type,) = typing.get_args(tp)
        return [_convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: got {value!r}, expected a mapping")
        return dict(value)
    if tp is ManifestSource and isinstance(value, str):
        return ManifestSource(path=value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: got {value!r}, expected a mapping with keys {_field_names(tp)}")
        return _build(tp, value, key)
    if tp is type(None):
        if value is None:
            return None
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: got {value!r} ({type(value).__name__}), expected {_type_name(tp)}")


def _field_names(cls: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls))


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"{prefix}{'.' if prefix else ''}{key}: unknown key; allowed keys: {_field_names(cls)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, hints[name], f"{prefix}{'.' if prefix else ''}{name}")
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field (no default) is missing
        raise ConfigError(f"{prefix or cls.__name__}: {err}; keys: {_field_names(cls)}") from err


def config_from_dict(data: dict[str, Any]) -> PretrainConfig:
    """Build and validate a :class:`PretrainConfig` from nested mappings.

    Raises:
        ConfigError: unknown key, wrong type or value out of range; the message starts with the dotted key.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(data).__name__}")
    cfg = _build(PretrainConfig, data, "")
    validate(cfg)
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (YAML/JSON-safe) of a config dataclass."""
    return dataclasses.asdict(cfg)


# ----------------------------------------------------------------------------------------------------------------
# value checks beyond types


def _require(ok: bool, key: str, allowed: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}: got {value!r}, allowed: {allowed}")


def validate(cfg: PretrainConfig) -> None:
    """Range checks that types alone cannot express.

    Raises:
        ConfigError: naming the dotted key and the allowed values.
    """
    d, t, m, ds = cfg.data, cfg.train, cfg.mask, cfg.deepspeed
    for key, value in [
        ("data.input_size", d.input_size),
        ("data.num_frames", d.num_frames),
        ("data.sampling_rate", d.sampling_rate),
        ("data.num_sample", d.num_sample),
        ("data.max_consecutive_failures", d.max_consecutive_failures),
        ("train.batch_size", t.batch_size),
        ("train.grad_accum", t.grad_accum),
        ("train.save_every", t.save_every),
        ("train.keep_last", t.keep_last),
        ("train.log_every", t.log_every),
        ("train.max_nonfinite_steps", t.max_nonfinite_steps),
        ("train.picture_clips", t.picture_clips),
    ]:
        _require(value >= 1, key, "an integer >= 1", value)
    _require(d.num_workers >= 0, "data.num_workers", "an integer >= 0", d.num_workers)
    _require(d.decode_timeout_s >= 0, "data.decode_timeout_s", "a number >= 0", d.decode_timeout_s)
    for i, src in enumerate(d.manifests):
        _require(src.weight > 0, f"data.manifests[{i}].weight", "a number > 0", src.weight)
        if src.repeat is not None:
            _require(src.repeat > 0, f"data.manifests[{i}].repeat", "a number > 0 or null", src.repeat)
    _require(0.0 < m.ratio < 1.0, "mask.ratio", "a number in (0, 1)", m.ratio)
    if m.decoder_type == "run_cell":
        ratio_ok = m.decoder_ratio in (0.25, 0.5, 0.75)
        _require(ratio_ok, "mask.decoder_ratio", "0.25, 0.5 or 0.75 (run_cell)", m.decoder_ratio)
    _require(0.0 <= d.hflip_prob <= 1.0, "data.hflip_prob", "a probability in [0, 1]", d.hflip_prob)
    _require(
        (t.max_steps is None) != (t.epochs is None),
        "train.max_steps",
        "exactly one of train.max_steps and train.epochs set (the other null)",
        (t.max_steps, t.epochs),
    )
    if t.max_steps is not None:
        _require(t.max_steps >= 1, "train.max_steps", "an integer >= 1", t.max_steps)
    if t.epochs is not None:
        _require(t.epochs >= 1, "train.epochs", "an integer >= 1", t.epochs)
    _require(t.lr > 0, "train.lr", "a number > 0", t.lr)
    _require(t.min_lr >= 0, "train.min_lr", "a number >= 0", t.min_lr)
    _require(t.weight_decay >= 0, "train.weight_decay", "a number >= 0", t.weight_decay)
    _require(len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas), "train.betas", "two numbers in [0, 1)", t.betas)
    if t.clip_grad is not None:
        _require(t.clip_grad > 0, "train.clip_grad", "a number > 0 or null", t.clip_grad)
    if t.warmup_steps is not None:
        _require(t.warmup_steps >= 0, "train.warmup_steps", "an integer >= 0 or null", t.warmup_steps)
    if ds.offload_param:
        _require(ds.zero_stage == 3, "deepspeed.offload_param", "true only with deepspeed.zero_stage=3", True)
    if ds.offload_optimizer:
        _require(ds.zero_stage >= 1, "deepspeed.offload_optimizer", "true only with deepspeed.zero_stage>=1", True)


# ----------------------------------------------------------------------------------------------------------------
# YAML and overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into the key path and the YAML-parsed value.

    Raises:
        ConfigError: when ``=`` or the key is missing, or the value is not valid YAML.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected dotted.key=value, e.g. train.max_steps=10")
    try:
        value = _yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"{key}: value {raw!r} is not valid YAML ({err})") from err
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted ``key=value`` overrides applied in order.

    Nested mappings are created on the way; unknown keys are reported later by :func:`config_from_dict`.
    """
    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(path[: i + 1])}: is a value, not a section; cannot set {'.'.join(path)}")
            node = child
        node[path[-1]] = value
    return out


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> PretrainConfig:
    """Load a YAML config file (or the defaults when ``path`` is None) and apply dotted overrides.

    Raises:
        ConfigError: file unreadable or invalid, unknown key, bad type or value (the message names the key).
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"config file {path}: {err.strerror}") from err
        try:
            data = _yaml_load(text) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path}: invalid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path}: expected a mapping at the top level")
    try:
        return config_from_dict(apply_overrides(data, list(overrides)))
    except ConfigError as err:
        where = f" (in {path} or the overrides)" if path is not None else ""
        raise ConfigError(f"{err}{where}") from None


def save_config(cfg: PretrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable again with :func:`load_config`)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
