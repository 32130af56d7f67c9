"""``videomae plan``: model states against DeepSpeed's estimators, the activation model against the tensors autograd
really saves, the step peak against a live-memory count, the plan decisions on hand-checked cases, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
from deepspeed.runtime.zero.stage3 import model_to_params as deepspeed_model_to_params
from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
from torch.utils.flop_counter import FlopCounterMode

from videomae.cli import main
from videomae.models import create_model
from videomae.models.layers import set_fused_attention
from videomae.planning import PlanRequest, activation_bytes, make_plan, model_state_bytes
from videomae.planning.measure import measure_activation_bytes, measure_peak_bytes
from videomae.planning.memory import element_bytes, transient_bytes
from videomae.planning.planner import make_masks, model_facts, token_counts

GIB = 2**30
TINY = "pretrain_videomae_tiny_patch16_224"
SMALL = "pretrain_videomae_small_patch16_224"
BASE = "pretrain_videomae_base_patch16_224"
GIANT = "pretrain_videomae_giant_patch14_224"
VIT_G_PARAMS = 1_026_306_560


def _tokens(model: str, **request) -> tuple[dict, object]:
    req = PlanRequest(model, 80, 1, 1, 4, **request)
    config, _, _ = model_facts(model, req.frames, req.input_size)
    return config, token_counts(config, req)


@pytest.mark.parametrize(
    ("params", "largest", "gpus_per_node", "nodes"),
    [(94_210_944, 2_362_368, 8, 1), (VIT_G_PARAMS, 8_656_896, 8, 8), (317_782_016, 4_198_400, 4, 3), (1001, 77, 1, 1)],
)
def test_model_states_follow_deepspeeds_estimators(params, largest, gpus_per_node, nodes):
    world = gpus_per_node * nodes
    states = {s: model_state_bytes(params, largest, s, world, "bf16").total for s in range(4)}
    _, zero2 = estimate_zero2_model_states_mem_needs(params, gpus_per_node, nodes, cpu_offload=False)
    _, zero3, _ = estimate_zero3_model_states_mem_needs(
        params, largest, gpus_per_node, nodes, cpu_offload=False, cpu_offload_params=False
    )
    _, zero2_one_gpu = estimate_zero2_model_states_mem_needs(params, 1, 1, cpu_offload=False)
    # integer division per component: at most a few bytes from DeepSpeed's int(18 * P / W)
    assert states[2] == pytest.approx(zero2, abs=2)
    assert states[3] == pytest.approx(zero3, abs=2)
    assert states[0] == zero2_one_gpu == 20 * params  # nothing partitioned: the stage-2 estimate on one GPU
    assert states[1] == pytest.approx(zero2 + 2 * params - 2 * params // world, abs=2)  # + whole 16-bit gradients
    # fp32 (no master copy): 4 B weights + 4 B gradients + 8 B Adam moments
    fp32 = {s: model_state_bytes(params, largest, s, world, "fp32") for s in range(4)}
    assert fp32[0].total == 16 * params
    assert fp32[3].total == pytest.approx(16 * params / world + 8 * largest, abs=3)


def test_parameter_counts_match_deepspeeds_count_of_a_real_model():
    real = create_model(SMALL)
    _, num_params, largest = model_facts(SMALL, 16, 224)  # built on the meta device
    assert (num_params, largest) == deepspeed_model_to_params(real)


@pytest.mark.parametrize("with_cp", [False, True], ids=["no_cp", "cp"])
@pytest.mark.parametrize("model", [TINY, SMALL, BASE])
def test_activation_model_matches_the_tensors_autograd_saves(model, with_cp):
    """16 x 224 clips (1568 tokens, 160 visible, 784 decoded), bf16 weights and activations, 1 clip on CPU."""
    config, tokens = _tokens(model)
    measured = measure_activation_bytes(model, with_cp=with_cp)
    predicted = activation_bytes(config, tokens, element_bytes("bf16"), with_cp).total
    # The bar is 15 %; the model is exact but for LayerNorm statistics (bf16 on CPU, fp32 on CUDA as modelled): < 0.2 %.
    assert predicted == pytest.approx(measured, rel=0.01)


@pytest.mark.parametrize(
    "setting",
    [
        dict(precision="fp32", mask_type="random", mask_ratio=0.75, decoder_mask_ratio=None),
        dict(frames=8, input_size=128, decoder_mask_ratio=0.75, with_cp=True),
    ],
    ids=["fp32_random_no_decoder_mask", "8x128_cp"],
)
def test_activation_model_follows_sizes_precision_and_masks(setting):
    request = {k: v for k, v in setting.items() if k != "with_cp"}
    config, tokens = _tokens(TINY, **request)
    measured = measure_activation_bytes(TINY, clips=2, **setting)
    elem = element_bytes(setting.get("precision", "bf16"))
    predicted = activation_bytes(config, tokens, elem, setting.get("with_cp", False)).total
    assert predicted == pytest.approx(measured, rel=0.01)


def test_vit_b_activations_by_hand():
    """ViT-B, 16 x 224, tube 0.9 / running cell 0.5: 160 visible tokens, 784 decoded, 944 in the decoder; bf16.

    encoder block: 2 B x 160 x (8 x 768 + 2 x 3072) + fp32 norm stats 16 x 160 + log-sum-exp 4 x 12 x 160
                   = 3,932,160 + 2,560 + 7,680 = 3,942,400; x 12 = 47,308,800
    encoder: + visible cubes 2 x 160 x 1536 (491,520) + final norm 2 x 160 x 768 + 8 x 160 (247,040) = 48,047,360
    decoder block: 2 x 944 x (8 x 384 + 2 x 1536) + 16 x 944 + 4 x 6 x 944 = 11,637,632; x 4 = 46,550,528
    decoder: + encoder_to_decoder input 245,760 + final norm 2 x 944 x 384 + 8 x 784 (731,264)
             + head input 2 x 784 x 384 (602,112) = 48,129,664
    loss: fp32 error 4 x 784 x 1536 + weights 4 x 784 = 4,820,032               total 100,997,056
    with_cp: blocks keep their inputs only: encoder 491,520 + 12 x 245,760 + 247,040 = 3,687,680;
             decoder 245,760 + 4 x 724,992 + 731,264 + 602,112 = 4,479,104; total 12,986,816
    """
    config, tokens = _tokens(BASE)
    assert (tokens.total, tokens.visible, tokens.decoded) == (1568, 160, 784)
    plain = activation_bytes(config, tokens, 2, with_cp=False)
    assert (plain.encoder, plain.decoder, plain.loss) == (48_047_360, 48_129_664, 4_820_032)
    assert activation_bytes(config, tokens, 2, with_cp=True).total == 12_986_816


@pytest.mark.parametrize("with_cp", [False, True], ids=["no_cp", "cp"])
@pytest.mark.parametrize("model", [TINY, SMALL])
def test_step_peak_is_covered_by_activations_and_transients(model, with_cp):
    """The live-memory peak of forward + backward (above weights, gradients and inputs), per clip."""
    config, tokens = _tokens(model)
    measured = measure_peak_bytes(model, with_cp=with_cp)
    predicted = activation_bytes(config, tokens, 2, with_cp).total + transient_bytes(config, tokens, 2, with_cp)
    assert measured <= predicted <= 1.15 * measured


def test_tiny_model_plans_zero0_without_checkpointing():
    plan = make_plan(PlanRequest(TINY, gpu_mem_gib=16, gpus_per_node=8, nodes=2, batch=1024))
    assert (plan.zero_stage, plan.with_cp, plan.micro_batch, plan.grad_accum) == (0, False, 16, 1)
    assert plan.micro_batch_clips * plan.world_size * plan.grad_accum == 1024


def test_vit_g_on_64_gpus_of_80_gib_fits_zero0_by_hand():
    """ViT-g (1.026 B parameters), 512 clips on 64 GPUs = 8 clips (2 videos of 4) per GPU.

    ZeRO-0: 20 B/parameter = 19.1 GiB; activations + transients + inputs ~0.5 GiB per clip (375 MiB encoder on
    208 visible tokens, 84 decoder, 37 loss targets, ...) x 8 = 4 GiB; reserve 8 GiB: ~31 GiB of 80, so nothing
    beyond plain data parallelism is needed at this batch.
    """
    plan = make_plan(PlanRequest(GIANT, gpu_mem_gib=80, gpus_per_node=8, nodes=8, batch=512))
    assert plan.num_params == VIT_G_PARAMS
    assert (plan.zero_stage, plan.with_cp, plan.micro_batch, plan.grad_accum) == (0, False, 2, 1)
    per_clip = plan.activation_bytes_per_clip + plan.transient_bytes_per_clip + plan.input_bytes_per_clip
    assert plan.total_bytes_per_gpu == 20 * VIT_G_PARAMS + 8 * per_clip + 8 * GIB
    assert 30 * GIB < plan.total_bytes_per_gpu < 32 * GIB


def test_vit_g_large_per_gpu_batch_moves_to_zero1_with_accumulation():
    """4096 clips on 8 GPUs of 80 GiB: 128 videos per GPU; ~1.97 GiB per video (4 clips); reserve 8 GiB.

    ZeRO-0  19.1 GiB states -> room 52.9 -> 26 videos -> largest divisor of 128: 16
    ZeRO-1  4P + 16P/8 = 5.7 GiB -> room 66.3 -> 33 -> 32 (ZeRO-2 4.1 GiB, ZeRO-3 2.2 GiB: also 32, not 64)
    so ZeRO-1 at 32 videos, 4 accumulation steps; with checkpointing all 128 would fit, but it is not needed.
    """
    plan = make_plan(PlanRequest(GIANT, gpu_mem_gib=80, gpus_per_node=8, nodes=1, batch=4096))
    assert (plan.zero_stage, plan.with_cp, plan.micro_batch, plan.grad_accum) == (1, False, 32, 4)
    no_cp = [c.max_micro_batch for c in plan.candidates if not c.with_cp]
    assert no_cp == [16, 32, 32, 32]


def test_checkpointing_only_when_nothing_fits_without():
    """ViT-g on one 19.5 GiB GPU, 1 GiB reserve, 4 clips: every stage is 18-20 B/parameter on one GPU.

    ZeRO-3: 18P + 4L = 17.2 GiB -> room 1.27 GiB; 4 clips need 1.97 GiB without checkpointing, ~0.33 with.
    ZeRO-0/1/2: 20P = 19.1 GiB + 1 GiB reserve > 19.5.
    """
    plan = make_plan(PlanRequest(GIANT, gpu_mem_gib=19.5, gpus_per_node=1, nodes=1, batch=4, reserve_gib=1))
    assert (plan.zero_stage, plan.with_cp, plan.micro_batch, plan.grad_accum) == (3, True, 1, 1)
    assert [c.max_micro_batch for c in plan.candidates] == [0, 0, 0, 0, 0, 0, 0, 1]


def test_refusals_name_what_to_change():
    with pytest.raises(ValueError, match=r"multiple of GPUs x num_sample = 16 x 4 = 64 clips; use --batch 448 or 512"):
        make_plan(PlanRequest(BASE, gpu_mem_gib=80, gpus_per_node=8, nodes=2, batch=500))
    with pytest.raises(
        ValueError, match=r"does not fit 16 GiB per GPU: ZeRO-3 with activation checkpointing.*more GPUs"
    ):
        make_plan(PlanRequest(GIANT, gpu_mem_gib=16, gpus_per_node=1, nodes=1, batch=4))
    with pytest.raises(ValueError, match="ZeRO-0 without activation checkpointing.*--with-cp on.*--zero-stage 3"):
        make_plan(PlanRequest(GIANT, gpu_mem_gib=20, gpus_per_node=1, nodes=1, batch=4, zero_stage=0, with_cp=False))
    with pytest.raises(ValueError, match="not a pretraining model"):
        make_plan(PlanRequest("vit_base_patch16_224", gpu_mem_gib=80, gpus_per_node=8, nodes=1, batch=512))


def test_recompute_flops_match_the_operator_count():
    """with_cp runs every block's forward again in backward: the operator counter sees exactly that much more."""
    setting = dict(all_frames=4, img_size=64)
    counts = {}
    for with_cp in (False, True):
        model = create_model(TINY, with_cp=with_cp, **setting)
        set_fused_attention(model, False)  # the counter sees the plain-math attention matmuls
        generator = torch.Generator().manual_seed(0)
        mask, decode_mask = make_masks(2, model.grid_size, "tube", 0.75, 0.5, generator)
        counter = FlopCounterMode(display=False)
        with counter:
            model(torch.randn(2, 3, 4, 64, 64), mask, decode_mask).float().pow(2).mean().backward()
        counts[with_cp] = counter.get_total_flops()
    plan = make_plan(PlanRequest(TINY, 80, 1, 1, batch=2, num_sample=2, frames=4, input_size=64, mask_ratio=0.75,
                                 with_cp=True))  # fmt: skip
    assert counts[True] - counts[False] == plan.recompute_flops


def test_cli_json_and_text(capsys):
    args = ["plan", "--model", BASE, "--gpu-mem", "80", "--gpus-per-node", "8", "--nodes", "2", "--batch", "1024"]
    assert main([*args, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = make_plan(PlanRequest(BASE, gpu_mem_gib=80, gpus_per_node=8, nodes=2, batch=1024)).to_dict()
    assert got == want
    for key in (
        "zero_stage",
        "with_cp",
        "micro_batch",
        "grad_accum",
        "activation_bytes_per_clip",
        "param_bytes_per_gpu",
    ):
        assert key in got
    assert (got["micro_batch"], got["grad_accum"], got["param_bytes_per_gpu"]) == (16, 1, 2 * got["num_params"])
    assert main([*args, "--with-cp", "on", "--zero-stage", "2"]) == 0
    text = capsys.readouterr().out
    assert "plan: ZeRO-2, with_cp on, micro-batch 16 videos (64 clips) per GPU, grad_accum 1" in text
    assert "deepspeed.zero_stage=2 model.with_cp=true train.batch_size=16 train.grad_accum=1" in text
    assert main([*args[:-1], "1000"]) == 2
    assert "not a multiple of GPUs x num_sample" in capsys.readouterr().err
