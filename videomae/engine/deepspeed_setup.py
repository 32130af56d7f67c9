"""DeepSpeed: the config dict generated from our dataclasses, ``deepspeed.initialize``, fp32 consolidation, and
weights-only loading of everything DeepSpeed reads for us (:func:`weights_only_loads`).

This is the only module that imports ``deepspeed``. On a machine without GPUs DeepSpeed picks its CPU
accelerator (``DS_ACCELERATOR=cpu`` forces it) and the process group uses ``gloo``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from videomae.checkpoint import CheckpointError, weights_only_globals
from videomae.config import DeepSpeedConfig, TrainConfig
from videomae.config.batch_plan import BatchPlan
from videomae.engine.ds_engine import TrainingEngine

if not torch.cuda.is_available():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

import deepspeed  # noqa: E402  (the accelerator choice above must precede the import)

if not torch.cuda.is_available():
    # On CPU, DeepSpeed JIT-compiles a shared-memory all-reduce on first use (minutes, needs a C++ compiler);
    # gloo is enough at CPU scale, so mark that op unavailable and keep a fresh machine compiler-free.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False

__all__ = [
    "build_ds_config",
    "consolidated_fp32_state_dict",
    "convert_to_universal",
    "checkpoint_fp32_state_dict",
    "full_fp32_params",
    "full_optimizer_state",
    "initialize",
    "parameter_counts",
    "weights_only_loads",
    "partitioned_construction",
    "whole_parameters",
]

log = logging.getLogger(__name__)


def build_ds_config(
    train: TrainConfig, ds: DeepSpeedConfig, precision: str, plan: BatchPlan, load_universal: bool = False
) -> dict[str, Any]:
    """The DeepSpeed JSON config for this run.

    Batch sizes are counted in clips (``plan.clips_per_micro_step``), which is what the model sees.
    ``load_universal`` makes ``engine.load_checkpoint`` read a universal checkpoint (see
    :func:`convert_to_universal`); DeepSpeed fixes that choice when the engine is created.
    """
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.zero_stage >= 1:
        zero.update(
            overlap_comm=ds.overlap_comm,
            reduce_bucket_size=ds.reduce_bucket_size,
            contiguous_gradients=True,
        )
    if ds.zero_stage in (1, 2):
        zero["allgather_bucket_size"] = ds.allgather_bucket_size
    if ds.zero_stage == 3:
        # Gather full fp16/bf16 weights on save so a stage-3 checkpoint can be exported without conversion.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    offload: dict[str, Any] = {"device": ds.offload_device, "pin_memory": torch.cuda.is_available()}
    if ds.offload_device == "nvme":
        offload["nvme_path"] = ds.nvme_path
    if ds.offload_optimizer:
        zero["offload_optimizer"] = dict(offload)
    if ds.offload_param:
        zero["offload_param"] = dict(offload)
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": plan.clips_per_micro_step,
        "gradient_accumulation_steps": plan.grad_accum,
        "train_batch_size": plan.clips_per_step,
        "gradient_clipping": train.clip_grad or 0.0,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
        "bf16": {"enabled": precision == "bf16", "check_grad_overflow": True},
        "fp16": {
            "enabled": precision == "fp16",
            "loss_scale": 0,  # dynamic
            "initial_scale_power": ds.initial_scale_power,
            "loss_scale_window": ds.loss_scale_window,
            "hysteresis": 2,
            "min_loss_scale": ds.min_loss_scale,
        },
    }
    if load_universal:
        config["checkpoint"] = {"load_universal": True}
    return _merge(config, ds.extra)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def partitioned_construction(ds_config: dict[str, Any]) -> contextlib.AbstractContextManager:
    """The context to build the model in: under ZeRO-3, DeepSpeed's ``zero.Init``, else nothing.

    ``zero.Init`` partitions each module's parameters across the ranks (in the training precision, and to the
    ``offload_param`` device if set) as soon as the module's ``__init__`` returns, so the whole model never sits in
    one process; rank 0's values are broadcast first, as the engine does for a model built whole. Weight init that
    a parent runs on its children must go through ``nn.Module.apply``, which ``zero.Init`` wraps to gather one module
    at a time (our models do). DeepSpeed's memory-efficient ``F.linear`` patch is left off: it would replace
    ``torch.nn.functional.linear`` for the whole process, beyond this model.
    """
    if ds_config["zero_optimization"]["stage"] != 3:
        return contextlib.nullcontext()
    # zero.Init reads the process count from DeepSpeed's own process-group wrapper, which must exist first; it wraps
    # our process group (dist.init_distributed made it), as deepspeed.initialize would.
    deepspeed.init_distributed()
    return deepspeed.zero.Init(config_dict_or_path=ds_config, mem_efficient_linear=False)


def _partitioned(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if hasattr(p, "ds_id")]


def whole_parameters(model: nn.Module) -> contextlib.AbstractContextManager:
    """Make every parameter of a ZeRO-3 partitioned ``model`` whole inside the context (collective); rank 0's
    values are kept and re-partitioned on exit (e.g. to load ``init`` weights). Nothing for a model built whole.

    The whole model is materialised in each process meanwhile, as the checkpoint being loaded already is.
    """
    params = _partitioned(model)
    return deepspeed.zero.GatheredParameters(params, modifier_rank=0) if params else contextlib.nullcontext()


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """``(parameters of the model, elements this process holds)``; they differ under ZeRO-3 partitioning."""
    total = local = 0
    for p in model.parameters():
        total += getattr(p, "ds_numel", p.numel())
        local += p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel()
    return total, local


def initialize(
    model: nn.Module, groups: list[dict], ds_config: dict[str, Any], train: TrainConfig, offload_optimizer: bool
) -> Any:
    """Wrap ``model`` in a DeepSpeed engine with AdamW over ``groups``.

    Returns:
        The ``deepspeed.DeepSpeedEngine``; ``engine.optimizer.param_groups`` carry our ``apply_wd`` flags.
    """
    betas = (train.betas[0], train.betas[1])
    if offload_optimizer:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        optimizer = DeepSpeedCPUAdam(groups, lr=0.0, betas=betas, eps=train.eps, adamw_mode=True)
    else:
        optimizer = torch.optim.AdamW(groups, lr=0.0, betas=betas, eps=train.eps)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    return engine


def consolidated_fp32_state_dict(
    engine: TrainingEngine, checkpoint_dir: str, tag: str
) -> dict[str, torch.Tensor] | None:
    """Full fp32 weights of the run, on rank 0 (``None`` on other ranks).

    Without ZeRO the module holds whole weights; in bf16/fp16 the fp32 master copies of DeepSpeed's mixed-precision
    optimizer replace them. With ZeRO the masters are partitioned across ranks' optimizer files, which DeepSpeed's
    ``zero_to_fp32`` merges from the checkpoint ``checkpoint_dir/tag`` just written; frozen parameters (no
    optimizer holds them) come from the module under ZeRO 1-2.
    """
    if engine.global_rank != 0:
        return None
    if engine.zero_optimization_stage() == 0:
        state = {k: v.detach().float().cpu().clone() for k, v in engine.module.state_dict().items()}
        optimizer = engine.optimizer
        names = {id(p): n for n, p in engine.module.named_parameters()}
        if hasattr(optimizer, "fp16_groups") and hasattr(optimizer, "fp32_groups_flat"):  # fused (GPU)
            for params, flat in zip(optimizer.fp16_groups, optimizer.fp32_groups_flat):
                offset = 0
                for param in params:  # the flat master is the group's parameters back to back
                    master = flat.detach()[offset : offset + param.numel()].view_as(param)
                    state[names[id(param)]] = master.cpu().clone()
                    offset += param.numel()
        elif hasattr(optimizer, "fp16_groups") and hasattr(optimizer, "fp32_groups"):  # unfused (CPU)
            for params, masters in zip(optimizer.fp16_groups, optimizer.fp32_groups):
                for param, master in zip(params, masters):
                    state[names[id(param)]] = master.detach().float().cpu().clone()
        return state
    state = _merged_zero_fp32(checkpoint_dir, tag)
    if engine.zero_optimization_stage() < 3:
        # zero_to_fp32 merges what optimizers hold (ZeRO-1 saves no frozen parameters at all): a frozen parameter
        # comes from the module, whole in stages 1-2, with the values training used.
        for name, param in engine.module.named_parameters():
            if not param.requires_grad:
                state[name] = param.detach().float().cpu().clone()
    return state


def _merged_zero_fp32(checkpoint_dir: str | Path, tag: str) -> dict[str, torch.Tensor]:
    """DeepSpeed's ``zero_to_fp32`` merge of a ZeRO checkpoint; its prints and progress bar go to the debug log."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed), weights_only_loads():
        state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=tag)
    for line in printed.getvalue().splitlines():
        log.debug("zero_to_fp32: %s", line)
    return {k: v.float().contiguous() for k, v in state.items()}


def checkpoint_fp32_state_dict(checkpoint_dir: str | Path, tag: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Full fp32 weights of the saved checkpoint ``checkpoint_dir/tag``, read offline (no engine, one process).

    ZeRO-1/2/3: DeepSpeed's ``zero_to_fp32`` merges the fp32 masters from every rank's optimizer file. Without ZeRO
    the model-states file holds whole weights: exact for fp32 runs; in bf16/fp16 runs the fp32 masters sit in the
    optimizer state without parameter names, so the half-precision weights are returned in fp32 (a note says so).

    Returns:
        ``(state dict, notes)``.

    Raises:
        FileNotFoundError: the folder holds no DeepSpeed model-states file.
    """
    folder = Path(checkpoint_dir) / tag
    if any(folder.glob("*zero_pp_rank_*_optim_states.pt")):
        return _merged_zero_fp32(checkpoint_dir, tag), []
    file = folder / "mp_rank_00_model_states.pt"
    if not file.is_file():
        raise FileNotFoundError(f"{folder}: no DeepSpeed checkpoint (neither ZeRO optimizer files nor {file.name})")
    with weights_only_loads():
        module = torch.load(file, map_location="cpu", mmap=True)["module"]
    notes = []
    half = sorted({str(v.dtype) for v in module.values() if v.is_floating_point() and v.dtype != torch.float32})
    if half:
        notes.append(
            f"{file}: a ZeRO-0 {'/'.join(half)} checkpoint keeps unnamed fp32 masters; exported its "
            "half-precision weights as fp32 (the run's own export/model.safetensors has the masters)"
        )
    return {k: v.float().contiguous() for k, v in module.items()}, notes


def convert_to_universal(checkpoint_dir: str | Path, output_dir: str | Path) -> None:
    """Convert the ZeRO-1/2/3 checkpoint folder ``checkpoint_dir`` into a universal checkpoint in ``output_dir``.

    Runs DeepSpeed's ``ds_to_universal`` in this process, one worker (no process pool inside a process that holds
    a process group): the per-rank optimizer partitions become one folder per parameter (``zero/<name>/fp32.pt``,
    ``exp_avg.pt``, ``exp_avg_sq.pt``, ``step.pt``) that any number of ranks can load. Checkpoints saved without
    DeepSpeed's ``universal_checkpoint_info`` get it injected (nothing in our model needs tensor-parallel rules).
    Its console output goes to this module's logger at debug level.

    Raises:
        RuntimeError: the conversion failed (the message names the folder and DeepSpeed's error).
    """
    from deepspeed.checkpoint import ds_to_universal

    args = argparse.Namespace(
        input_folder=str(checkpoint_dir),
        output_folder=str(output_dir),
        num_extract_workers=1,
        num_merge_workers=1,
        keep_temp_folder=False,
        strict=True,
        inject_missing_state=True,
    )
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), weights_only_loads():
            ds_to_universal.main(args)
    except Exception as error:  # DeepSpeed raises assertions, KeyErrors, ...: name the folder whatever it was
        message = f"ds_to_universal could not convert {checkpoint_dir}: {type(error).__name__}: {error}"
        raise RuntimeError(message) from error
    finally:
        for line in printed.getvalue().splitlines():
            log.debug("ds_to_universal: %s", line)
        # ds_to_universal points a `latest_universal` file in the parent folder at its output; our resume logic
        # finds checkpoints by their commit markers, so remove it rather than leave a second notion of "latest".
        with contextlib.suppress(OSError):
            (Path(output_dir).parent / "latest_universal").unlink()


def full_fp32_params(engine: TrainingEngine) -> dict[str, torch.Tensor]:
    """Whole fp32 master weights of every trainable parameter, gathered on every rank (collective under ZeRO-3).

    The fp32 masters are what the optimizer updates: the module's own weights under fp32 without ZeRO, the
    optimizer's (partitioned) copies otherwise.
    """
    from deepspeed.utils import safe_get_full_fp32_param

    out = {}
    for name, param in engine.module.named_parameters():
        if not param.requires_grad:
            continue
        value = safe_get_full_fp32_param(param) if engine.zero_optimization_stage() > 0 else None
        out[name] = (param if value is None else value).detach().float().cpu().clone()
    return out


def full_optimizer_state(engine: TrainingEngine, key: str) -> dict[str, torch.Tensor]:
    """Whole optimizer state ``key`` (``exp_avg``, ``exp_avg_sq``) of every trainable parameter under ZeRO 1-3."""
    from deepspeed.utils import safe_get_full_optimizer_state

    out = {}
    for name, param in engine.module.named_parameters():
        if param.requires_grad:
            out[name] = safe_get_full_optimizer_state(param, key).detach().float().cpu().clone()
    return out


def _deepspeed_checkpoint_globals() -> list[Any]:
    """The classes DeepSpeed pickles into its checkpoint files besides tensors and containers: the loss scaler, the
    ZeRO stage enum and the optimizer-fragment addresses of universal checkpoints (found by loading every kind of
    checkpoint our runs write, ZeRO 0-3 in fp32/bf16 and universal, with nothing allowed)."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [*weights_only_globals(), LossScaler, ZeroStageEnum, fragment_address]


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Inside, every ``torch.load`` of this process (ours and DeepSpeed's: engine resume, universal conversion and
    loading, ``zero_to_fp32``) unpickles weights-only with an explicit allow-list, whatever the caller asked for.

    DeepSpeed calls ``torch.load(..., weights_only=False)`` on its own files, so a crafted pickle in a run folder
    would run code on resume or export; wrapping the loader is the one place that covers every such call.

    Raises:
        CheckpointError: (inside) a file holds objects outside the allow-list; it names the file.
    """
    original = torch.load
    allowed = _deepspeed_checkpoint_globals()

    def load(f: Any, map_location: Any = None, *args: Any, weights_only: bool | None = None, **kwargs: Any) -> Any:
        try:
            with torch.serialization.safe_globals(allowed):
                return original(f, map_location, *args, weights_only=True, **kwargs)
        except pickle.UnpicklingError as error:
            raise CheckpointError(
                f"{f}: refused to unpickle: it holds objects outside the weights-only allow-list, which could run "
                f"code (a checkpoint written by another program, or tampered with): {str(error).splitlines()[0]}"
            ) from None

    torch.load = load
    try:
        yield
    finally:
        torch.load = original
