"""Config sections every stage shares: manifests, data, the training loop, DeepSpeed, and the run's top level.

The batch and learning-rate arithmetic (clips per step, ``lr_scale_by``, the peak lr) is
:mod:`videomae.config.batch_plan`.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from videomae.config.loading import ConfigError, require

__all__ = [
    "DataConfig",
    "DeepSpeedConfig",
    "LoggingConfig",
    "ManifestSource",
    "RunConfig",
    "TrainConfig",
    "validate_data",
    "validate_deepspeed",
    "validate_logging",
    "validate_manifests",
    "validate_run_sections",
    "validate_train",
]


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
    short_video: Literal["reject", "shrink_stride", "loop", "pad"] = "shrink_stride"
    """A video shorter than its clip (``(num_frames - 1) * sampling_rate + 1`` frames): ``shrink_stride`` shrinks
    the stride until it fits (fewer than ``num_frames`` frames: a bad sample); ``loop`` keeps the stride and repeats
    the frames that fit from the first; ``pad`` repeats the last of them; ``reject`` makes it a bad sample (replaced
    in training). Each clip that needed the policy is counted; its row is written once to ``short_videos.csv``
    (rejected ones to ``bad_samples.csv``)."""

    @classmethod
    def from_shorthand(cls, path: str) -> ManifestSource:
        """A plain string in a manifest list is the manifest's path."""
        return cls(path=path)


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
    """Video decoder: ``auto`` = PyAV (frame-exact on every codec tested and the faster one in our benchmarks,
    bench/RESULTS.md); ``decord`` stays selectable, but its random access returns wrong frames on MPEG-4 Part 2
    with B-frames and open-GOP HEVC (the per-codec table: tests/test_decoding_table.py)."""
    hflip_prob: float = 0.0
    """Probability of a horizontal flip per clip; 0 as in VideoMAE pretraining (keep it 0 for direction-sensitive
    data such as Something-Something)."""
    views_from: Literal["same_window", "separate_windows"] = "same_window"
    """With ``num_sample > 1``: ``same_window`` = every clip of a video augments one decoded time window (VideoMAE's
    repeated sampling); ``separate_windows`` = each clip has its own random window (views at different times, as
    MoCo v3 on video wants), drawn from the same per-sample random source."""
    crop: Literal["multiscale", "random_resized"] = "multiscale"
    """Training crop: ``multiscale`` = VideoMAE's multi-scale crop (sides 1, 0.875, 0.75 or 0.66 of the short side
    at 13 fixed places); ``random_resized`` = torchvision's RandomResizedCrop box (area share ``crop_scale``,
    aspect ratio ``crop_ratio``), as MAE and MoCo v3 crop images. One box per clip, resized to ``input_size``."""
    crop_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])
    """``random_resized`` only: range of the crop's area as a share of the frame's (MAE pretraining: 0.2-1; MoCo v3
    and supervised training: 0.08-1)."""
    crop_ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    """``random_resized`` only: range of the crop's width / height, drawn log-uniformly."""
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    """Antialiased resize of crops (training) and frames (evaluation); the MAE release resizes its crops bicubically."""
    max_consecutive_failures: int = 20
    """Undecodable samples in a row (per worker) before the run stops; each one is logged, replaced and counted."""
    bad_sample_ceiling: float = 0.5
    """Largest share of failed clip loads over the last ``bad_sample_window`` loads (all ranks together); past it
    every rank stops, naming the first bad manifest rows (1: never stop; 0: stop at the first failure)."""
    bad_sample_window: int = 200
    """Clip loads (all ranks together, replacements included) over which ``bad_sample_ceiling`` is judged, once
    the run has made that many."""
    decode_timeout_s: float = 60.0
    """Seconds one clip may take to decode before it counts as bad (0: no limit)."""


@dataclass
class TrainConfig:
    """Optimisation and the training loop (the fields every stage has)."""

    batch_size: int = 8
    """Videos per process per micro-step; each yields ``data.num_sample`` clips."""
    max_steps: int | None = None
    """Optimizer steps to run; exactly one of ``max_steps`` and ``epochs`` is set."""
    epochs: int | None = None
    """Passes over the (weighted) training set; converted to steps with the sampler's length."""
    grad_accum: int = 1
    """Micro-steps accumulated per optimizer step."""
    lr: float = 1.5e-4
    """Base learning rate per 256 samples of ``lr_batch`` (:mod:`videomae.config.batch_plan`)."""
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
    max_nonfinite_steps: int = 5
    """Stop after this many consecutive steps with a non-finite loss or gradient (each is skipped)."""
    compile: bool = False
    """Wrap the model in ``torch.compile``."""


@dataclass
class DeepSpeedConfig:
    """DeepSpeed engine options; the DeepSpeed JSON is generated from these, never edited by hand."""

    zero_stage: Literal[0, 1, 2, 3] = 0
    """ZeRO stage: 0 data parallel, 1 optimizer states, 2 + gradients, 3 + parameters partitioned."""
    offload_optimizer: bool = False
    """ZeRO-Offload of optimizer states (fp32 masters, Adam moments) to ``offload_device`` (stages 1-3)."""
    offload_param: bool = False
    """Offload parameters to ``offload_device`` (stage 3 only)."""
    offload_device: Literal["cpu", "nvme"] = "cpu"
    """Where ``offload_optimizer`` / ``offload_param`` put their tensors: ``cpu`` memory, or ``nvme``: files under
    ``nvme_path`` (ZeRO-Infinity; stage 3; needs DeepSpeed's ``async_io`` op, i.e. libaio). With ``nvme`` set a
    ``zero_optimization.sub_group_size`` (``deepspeed.extra``) well below the per-rank parameter count, since one
    sub-group's optimizer states are held in memory at a time."""
    nvme_path: str | None = None
    """Folder on a fast local disk for ``offload_device: nvme``; DeepSpeed writes per-rank swap files there."""
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
class LoggingConfig:
    """Where metrics and pictures go besides ``metrics.jsonl`` and TensorBoard, which every run writes."""

    wandb: bool = False
    """Also log to Weights & Biases (``pip install videomae[wandb]``): the scalars of ``metrics.jsonl``, the
    pictures and the resolved config, with its files under ``OUTPUT_DIR/wandb/``. Offline unless ``WANDB_MODE`` is
    set (``wandb sync`` uploads later)."""
    wandb_project: str = "videomae"
    """Weights & Biases project of the run (the run is named after ``output_dir``)."""


@dataclass
class RunConfig:
    """The top-level keys of every stage (each stage adds its sections)."""

    output_dir: str = "runs/run"
    """Run folder: resolved config, metrics, TensorBoard events, checkpoints, exported weights."""
    seed: int = 0
    """Seed of every random generator (per rank offsets are added where streams must differ)."""
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"
    """Training precision; fp16 uses dynamic loss scaling."""
    init: str | None = None
    """Weights to start from (our safetensors export, an original release checkpoint or a transformers folder);
    used only for a fresh run. Auto-resume refuses a run folder whose checkpoints were started from different
    ``init`` weights."""
    resume: str = "auto"
    """``auto``: newest complete checkpoint in ``output_dir``; ``never``: start fresh; else a checkpoint folder."""


# ----------------------------------------------------------------------------------------------------------------
# value checks beyond types, per section (keys are named as every stage spells them)


def validate_data(d: DataConfig) -> None:
    """Range checks of the ``data`` section.

    Raises:
        ConfigError: naming the dotted key and the allowed values.
    """
    for key, value in [
        ("data.input_size", d.input_size),
        ("data.num_frames", d.num_frames),
        ("data.sampling_rate", d.sampling_rate),
        ("data.num_sample", d.num_sample),
        ("data.max_consecutive_failures", d.max_consecutive_failures),
        ("data.bad_sample_window", d.bad_sample_window),
    ]:
        require(value >= 1, key, "an integer >= 1", value)
    require(d.num_workers >= 0, "data.num_workers", "an integer >= 0", d.num_workers)
    # threading's waits take no longer timeout (an OverflowError in the loader otherwise)
    timeout_ok = 0 <= d.decode_timeout_s <= threading.TIMEOUT_MAX
    allowed = f"a number of seconds in [0, {threading.TIMEOUT_MAX:.3g}] (0: no limit)"
    require(timeout_ok, "data.decode_timeout_s", allowed, d.decode_timeout_s)
    validate_manifests("data.manifests", d.manifests)
    require(0.0 <= d.hflip_prob <= 1.0, "data.hflip_prob", "a probability in [0, 1]", d.hflip_prob)
    scale_ok = len(d.crop_scale) == 2 and 0 < d.crop_scale[0] <= d.crop_scale[1] <= 1
    require(scale_ok, "data.crop_scale", "[low, high] with 0 < low <= high <= 1", d.crop_scale)
    ratio_ok = len(d.crop_ratio) == 2 and 0 < d.crop_ratio[0] <= d.crop_ratio[1]
    require(ratio_ok, "data.crop_ratio", "[low, high] with 0 < low <= high", d.crop_ratio)
    require(0.0 <= d.bad_sample_ceiling <= 1.0, "data.bad_sample_ceiling", "a share in [0, 1]", d.bad_sample_ceiling)


def validate_run_sections(cfg: Any) -> None:
    """The sections every training config shares: ``data``, ``train``, ``deepspeed`` (against ``train.compile``)
    and ``logging``.

    Raises:
        ConfigError: naming the dotted key and the allowed values.
    """
    validate_data(cfg.data)
    validate_train(cfg.train)
    validate_deepspeed(cfg.deepspeed, cfg.train.compile)
    validate_logging(cfg.logging)


def validate_manifests(key: str, sources: list[ManifestSource]) -> None:
    """Weights, repeat counts and clip settings of a manifest list called ``key``."""
    for i, src in enumerate(sources):
        require(src.weight > 0, f"{key}[{i}].weight", "a number > 0", src.weight)
        if src.repeat is not None:
            require(src.repeat > 0, f"{key}[{i}].repeat", "a number > 0 or null", src.repeat)
        for name in ("num_frames", "sampling_rate"):
            value = getattr(src, name)
            if value is not None:
                require(value >= 1, f"{key}[{i}].{name}", "an integer >= 1 or null", value)


def validate_train(t: TrainConfig) -> None:
    """Range checks of the ``train`` section fields every stage has.

    Raises:
        ConfigError: naming the dotted key and the allowed values.
    """
    for key, value in [
        ("train.batch_size", t.batch_size),
        ("train.grad_accum", t.grad_accum),
        ("train.save_every", t.save_every),
        ("train.keep_last", t.keep_last),
        ("train.log_every", t.log_every),
        ("train.max_nonfinite_steps", t.max_nonfinite_steps),
    ]:
        require(value >= 1, key, "an integer >= 1", value)
    require(
        (t.max_steps is None) != (t.epochs is None),
        "train.max_steps",
        "exactly one of train.max_steps and train.epochs set (the other null)",
        (t.max_steps, t.epochs),
    )
    if t.max_steps is not None:
        require(t.max_steps >= 1, "train.max_steps", "an integer >= 1", t.max_steps)
    if t.epochs is not None:
        require(t.epochs >= 1, "train.epochs", "an integer >= 1", t.epochs)
    require(t.lr > 0, "train.lr", "a number > 0", t.lr)
    require(t.min_lr >= 0, "train.min_lr", "a number >= 0", t.min_lr)
    require(t.weight_decay >= 0, "train.weight_decay", "a number >= 0", t.weight_decay)
    if t.weight_decay_end is not None:
        require(t.weight_decay_end >= 0, "train.weight_decay_end", "a number >= 0 or null", t.weight_decay_end)
    require(t.eps > 0, "train.eps", "a number > 0", t.eps)
    require(len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas), "train.betas", "two numbers in [0, 1)", t.betas)
    if t.clip_grad is not None:
        require(t.clip_grad > 0, "train.clip_grad", "a number > 0 or null", t.clip_grad)
    if t.warmup_steps is not None:
        require(t.warmup_steps >= 0, "train.warmup_steps", "an integer >= 0 or null", t.warmup_steps)
    if t.warmup_epochs is not None:
        require(t.warmup_epochs >= 0, "train.warmup_epochs", "a number >= 0 or null", t.warmup_epochs)


def validate_deepspeed(ds: DeepSpeedConfig, compile_model: bool = False) -> None:
    """Option combinations of the ``deepspeed`` section that DeepSpeed refuses or ignores; ``compile_model`` is
    ``train.compile``, which ZeRO-3 cannot hold.

    Raises:
        ConfigError: naming the dotted key and the allowed values.
    """
    for key, value in [
        ("deepspeed.reduce_bucket_size", ds.reduce_bucket_size),
        ("deepspeed.allgather_bucket_size", ds.allgather_bucket_size),
        ("deepspeed.loss_scale_window", ds.loss_scale_window),
    ]:
        require(value >= 1, key, "an integer >= 1", value)
    power_ok = 0 <= ds.initial_scale_power <= 63
    require(power_ok, "deepspeed.initial_scale_power", "an integer in [0, 63]", ds.initial_scale_power)
    require(ds.min_loss_scale > 0, "deepspeed.min_loss_scale", "a number > 0", ds.min_loss_scale)
    if ds.offload_param:
        require(ds.zero_stage == 3, "deepspeed.offload_param", "true only with deepspeed.zero_stage=3", True)
    if ds.offload_optimizer:
        require(ds.zero_stage >= 1, "deepspeed.offload_optimizer", "true only with deepspeed.zero_stage>=1", True)
    if compile_model:
        # ZeRO-3 gathers each module's parameters in forward hooks that Dynamo's traced graph does not run, so the
        # compiled model meets its empty shards (DeepSpeed 0.19: "Dimension out of range" in the first forward).
        zero3 = "false with deepspeed.zero_stage=3 (DeepSpeed's ZeRO-3 partitioning and torch.compile; use stage 0-2)"
        require(ds.zero_stage != 3, "train.compile", zero3, True)
    if ds.offload_device == "nvme":
        on = "nvme only with deepspeed.zero_stage=3 (ZeRO-Infinity)"
        require(ds.zero_stage == 3, "deepspeed.offload_device", on, ds.offload_device)
        some = "nvme only with deepspeed.offload_optimizer or deepspeed.offload_param true"
        require(ds.offload_optimizer or ds.offload_param, "deepspeed.offload_device", some, ds.offload_device)
        require(bool(ds.nvme_path), "deepspeed.nvme_path", "a folder when deepspeed.offload_device=nvme", ds.nvme_path)


def validate_logging(lg: LoggingConfig) -> None:
    """The ``logging`` section: wandb must be importable when asked for (it is an optional dependency).

    Raises:
        ConfigError: naming the key and the fix.
    """
    if lg.wandb and importlib.util.find_spec("wandb") is None:
        raise ConfigError(
            f"logging.wandb: true needs `pip install wandb` (or `pip install videomae[wandb]`), which is not "
            f"installed for {sys.executable}; install it, or set logging.wandb=false"
        )
    require(bool(lg.wandb_project.strip()), "logging.wandb_project", "a project name", lg.wandb_project)
