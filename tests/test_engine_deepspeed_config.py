"""The DeepSpeed config generated from our dataclasses (the only DeepSpeed JSON there is)."""

from __future__ import annotations

from videomae.config import load_config
from videomae.config.batch_plan import batch_plan
from videomae.engine.deepspeed_setup import build_ds_config


def _ds(*overrides: str, world_size: int = 4) -> dict:
    cfg = load_config(None, ["train.max_steps=1", *overrides])
    return build_ds_config(cfg.train, cfg.deepspeed, cfg.precision, batch_plan(cfg, world_size))


def test_batch_sizes_are_counted_in_clips():
    ds = _ds("train.batch_size=8", "data.num_sample=4", "train.grad_accum=3")
    assert ds["train_micro_batch_size_per_gpu"] == 32
    assert ds["gradient_accumulation_steps"] == 3
    assert ds["train_batch_size"] == 32 * 3 * 4  # DeepSpeed checks micro x accumulation x world = total


def test_precision_clipping_and_zero_sections():
    ds = _ds("precision=bf16", "train.clip_grad=0.02", "deepspeed.zero_stage=3")
    assert ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert ds["gradient_clipping"] == 0.02
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    fp16 = _ds("precision=fp16", "deepspeed.initial_scale_power=12", "deepspeed.zero_stage=1")
    assert fp16["fp16"] == {
        "enabled": True, "loss_scale": 0, "initial_scale_power": 12, "loss_scale_window": 1000, "hysteresis": 2,
        "min_loss_scale": 1.0,
    }  # fmt: skip
    assert "allgather_bucket_size" in fp16["zero_optimization"]
    plain = _ds("precision=fp32")
    assert plain["zero_optimization"] == {"stage": 0} and plain["gradient_clipping"] == 0.0
    assert not plain["bf16"]["enabled"] and not plain["fp16"]["enabled"]


def test_offload_and_extra_are_merged():
    ds = _ds(
        "deepspeed.zero_stage=3",
        "deepspeed.offload_optimizer=true",
        "deepspeed.offload_param=true",
        "deepspeed.extra={zero_optimization: {stage3_max_live_parameters: 1000}, steps_per_print: 7}",
    )
    zero = ds["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    assert zero["stage3_max_live_parameters"] == 1000 and zero["stage"] == 3  # merged, not replaced
    assert ds["steps_per_print"] == 7
    nvme = _ds("deepspeed.zero_stage=3", "deepspeed.offload_optimizer=true", "deepspeed.offload_device=nvme",
               "deepspeed.nvme_path=/scratch/swap")["zero_optimization"]  # fmt: skip
    assert nvme["offload_optimizer"] == {"device": "nvme", "nvme_path": "/scratch/swap", "pin_memory": False}
    assert "offload_param" not in nvme
