"""``videomae plan``: the ZeRO stage, activation checkpointing, micro-batch and accumulation that fit a GPU.

The search, for an effective batch of ``E`` clips on ``W = gpus_per_node * nodes`` GPUs with ``num_sample``
clips per decoded video: every GPU takes ``E / (W * num_sample)`` videos per optimizer step, split into
``grad_accum`` micro-steps of ``micro_batch`` videos (``train.batch_size``). Without activation checkpointing
first, then with it, the plan takes the largest micro-batch dividing the per-GPU share that fits any ZeRO stage,
and the lowest stage that fits it: ZeRO-1/2 cost no more communication than data parallelism, ZeRO-3 adds a
parameter all-gather, checkpointing recomputes every block's forward up to its last matmul (~22 % more step FLOPs
at 16 x 224). A candidate fits when model states + activations + transient buffers + input clips + reserve stay
within the GPU's memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from videomae.models.flops import pretrain_flops, transformer_forward_flops
from videomae.planning.memory import (
    ActivationBytes,
    ModelStateBytes,
    TokenCounts,
    activation_bytes,
    element_bytes,
    input_bytes,
    model_state_bytes,
    transient_bytes,
)

__all__ = [
    "Candidate",
    "MemoryPlan",
    "PlanRequest",
    "default_reserve_bytes",
    "make_masks",
    "make_plan",
    "model_facts",
    "token_counts",
]

GIB = 2**30
_STAGES = (0, 1, 2, 3)


def default_reserve_bytes(gpu_mem_bytes: int) -> int:
    """Memory kept free: max(2 GiB, 10 % of the GPU).

    It covers what the model above does not count: the CUDA context and NCCL buffers (~1 GiB), cuBLAS/cuDNN
    workspaces, ZeRO's reduce/all-gather buckets (``reduce_bucket_size`` elements each) and ZeRO-3's prefetched
    parameters, and the caching allocator's fragmentation.
    """
    return max(2 * GIB, gpu_mem_bytes // 10)


@dataclass(frozen=True)
class PlanRequest:
    """What to plan for; defaults follow the VideoMAE V2 pretraining recipe (``videomae/recipes/pretrain``)."""

    model: str
    """Registered pretraining model name."""
    gpu_mem_gib: float
    """Memory per GPU in GiB (2**30 bytes), e.g. 80 for an 80 GB A100/H100."""
    gpus_per_node: int
    nodes: int
    batch: int
    """Effective batch in clips per optimizer step (``batch_size * world * grad_accum * num_sample``)."""
    frames: int = 16
    input_size: int = 224
    mask_type: str = "tube"
    """Encoder mask: ``tube`` or ``random``."""
    mask_ratio: float = 0.9
    decoder_mask_ratio: float | None = 0.5
    """Running-cell decoder mask ratio; ``None`` decodes every hidden token (VideoMAE v1)."""
    precision: str = "bf16"
    num_sample: int = 4
    """Clips per decoded video (repeated augmentation)."""
    reserve_gib: float | None = None
    """Memory kept free per GPU; ``None``: :func:`default_reserve_bytes`."""
    zero_stage: int | None = None
    """Force a ZeRO stage; ``None`` searches."""
    with_cp: bool | None = None
    """Force activation checkpointing on or off; ``None`` searches."""


@dataclass(frozen=True)
class Candidate:
    """The largest micro-batch (videos per GPU) a (ZeRO stage, with_cp) pair fits, 0 when none."""

    zero_stage: int
    with_cp: bool
    max_micro_batch: int


@dataclass
class MemoryPlan:
    """A plan and its memory breakdown; byte figures are per GPU unless named per clip."""

    model: str
    world_size: int
    zero_stage: int
    with_cp: bool
    micro_batch: int
    """Videos per GPU per micro-step (``train.batch_size``)."""
    micro_batch_clips: int
    """Clips per GPU per micro-step (DeepSpeed's ``train_micro_batch_size_per_gpu``)."""
    grad_accum: int
    effective_batch: int
    num_sample: int
    precision: str
    num_params: int
    largest_layer_params: int
    tokens: dict[str, int]
    activation_bytes_per_clip: int
    activation_encoder_bytes_per_clip: int
    activation_decoder_bytes_per_clip: int
    activation_loss_bytes_per_clip: int
    transient_bytes_per_clip: int
    input_bytes_per_clip: int
    param_bytes_per_gpu: int
    grad_bytes_per_gpu: int
    optimizer_bytes_per_gpu: int
    activation_bytes_per_gpu: int
    transient_bytes_per_gpu: int
    input_bytes_per_gpu: int
    reserve_bytes: int
    total_bytes_per_gpu: int
    gpu_mem_bytes: int
    step_flops: int
    """Model FLOPs of one optimizer step over all GPUs (forward + backward, the MFU convention)."""
    recompute_flops: int
    """Extra forward FLOPs of the checkpointed blocks per optimizer step (0 without ``with_cp``)."""
    candidates: list[Candidate] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_facts(name: str, frames: int, input_size: int) -> tuple[dict[str, Any], int, int]:
    """Constructor arguments, parameter count and largest layer (DeepSpeed's rule) of a registered model.

    The model is built on the ``meta`` device, so even ViT-g costs no memory and no time.
    """
    import torch

    from videomae.models import PretrainVisionTransformer, create_model

    with torch.device("meta"):
        model = create_model(name, all_frames=frames, img_size=input_size)
    if not isinstance(model, PretrainVisionTransformer):
        raise ValueError(f"{name!r} is not a pretraining model; plan a pretrain_videomae_* model")
    num_params = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return dict(model.model_config), num_params, largest


def make_masks(
    batch: int,
    grid: tuple[int, int, int],
    mask_type: str,
    mask_ratio: float,
    decoder_mask_ratio: float | None,
    generator: Any = None,
    device: Any = None,
) -> tuple[Any, Any]:
    """Encoder mask and decoder mask (``None`` without dual masking) from the generators training uses."""
    from videomae.masking import random_mask, running_cell_mask, tube_mask

    makers = {"tube": tube_mask, "random": random_mask}
    if mask_type not in makers:
        raise ValueError(f"mask type must be 'tube' or 'random', got {mask_type!r}")
    mask = makers[mask_type](batch, grid, mask_ratio, generator=generator, device=device)
    if decoder_mask_ratio is None:
        return mask, None
    return mask, running_cell_mask(batch, grid, decoder_mask_ratio, generator=generator, device=device)


def token_counts(config: dict[str, Any], request: PlanRequest) -> TokenCounts:
    """Token counts of one clip, read off real masks (so the mask functions' rules and checks apply)."""
    patch = config["patch_size"]
    grid = (request.frames // config["tubelet_size"], request.input_size // patch, request.input_size // patch)
    mask, decode_mask = make_masks(1, grid, request.mask_type, request.mask_ratio, request.decoder_mask_ratio)
    total = grid[0] * grid[1] * grid[2]
    hidden = int(mask.sum())
    if decode_mask is None:
        return TokenCounts(total=total, visible=total - hidden, decoded=hidden, dual=False)
    return TokenCounts(total=total, visible=total - hidden, decoded=total - int(decode_mask.sum()), dual=True)


def _check_request(request: PlanRequest) -> int:
    """Validate the request; returns the videos each GPU takes per optimizer step."""
    for name in ("gpus_per_node", "nodes", "batch", "num_sample", "frames", "input_size"):
        if getattr(request, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(request, name)}")
    if request.gpu_mem_gib <= 0:
        raise ValueError(f"gpu memory must be positive, got {request.gpu_mem_gib} GiB")
    if request.zero_stage is not None and request.zero_stage not in _STAGES:
        raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3, got {request.zero_stage}")
    element_bytes(request.precision)
    world = request.gpus_per_node * request.nodes
    unit = world * request.num_sample
    if request.batch % unit:
        lower, upper = request.batch // unit * unit, (request.batch // unit + 1) * unit
        suggestion = f"{lower} or {upper}" if lower else f"{upper}"
        raise ValueError(
            f"effective batch {request.batch} clips is not a multiple of GPUs x num_sample = {world} x "
            f"{request.num_sample} = {unit} clips; use --batch {suggestion}, or change --num-sample or the GPU count"
        )
    return request.batch // unit


@dataclass(frozen=True)
class _Costs:
    """Bytes per GPU of the parts that do not depend on the micro-batch, and per clip of those that do."""

    states: dict[int, ModelStateBytes]
    activations: dict[bool, ActivationBytes]
    transient: dict[bool, int]
    inputs: int
    reserve: int

    def total(self, stage: int, with_cp: bool, clips: int) -> int:
        per_clip = self.activations[with_cp].total + self.transient[with_cp] + self.inputs
        return self.states[stage].total + clips * per_clip + self.reserve


def _search(
    costs: _Costs, videos_per_gpu: int, num_sample: int, gpu_mem: int, stages: tuple[int, ...], cps: tuple[bool, ...]
) -> tuple[Candidate | None, list[Candidate]]:
    """The chosen candidate (``None`` when nothing fits) and every candidate's largest fitting micro-batch."""
    divisors = [d for d in range(videos_per_gpu, 0, -1) if videos_per_gpu % d == 0]
    candidates = [
        Candidate(s, cp, next((m for m in divisors if costs.total(s, cp, m * num_sample) <= gpu_mem), 0))
        for cp in cps
        for s in stages
    ]
    for cp in cps:
        fitting = [c for c in candidates if c.with_cp == cp and c.max_micro_batch]
        if fitting:
            best = max(c.max_micro_batch for c in fitting)
            return next(c for c in fitting if c.max_micro_batch == best), candidates
    return None, candidates


def make_plan(request: PlanRequest) -> MemoryPlan:
    """Choose ZeRO stage, ``with_cp``, micro-batch and accumulation for ``request`` (module docstring).

    Raises:
        ValueError: the batch does not split evenly over the GPUs, or nothing fits (the message says what to
            change), or an argument is out of range.
    """
    videos_per_gpu = _check_request(request)
    config, num_params, largest = model_facts(request.model, request.frames, request.input_size)
    tokens = token_counts(config, request)
    elem = element_bytes(request.precision)
    world = request.gpus_per_node * request.nodes
    gpu_mem = int(request.gpu_mem_gib * GIB)
    costs = _Costs(
        states={s: model_state_bytes(num_params, largest, s, world, request.precision) for s in _STAGES},
        activations={cp: activation_bytes(config, tokens, elem, cp) for cp in (False, True)},
        transient={cp: transient_bytes(config, tokens, elem, cp) for cp in (False, True)},
        inputs=input_bytes(config, tokens, elem),
        reserve=default_reserve_bytes(gpu_mem) if request.reserve_gib is None else int(request.reserve_gib * GIB),
    )
    stages = _STAGES if request.zero_stage is None else (request.zero_stage,)
    cps = (False, True) if request.with_cp is None else (request.with_cp,)
    chosen, candidates = _search(costs, videos_per_gpu, request.num_sample, gpu_mem, stages, cps)
    if chosen is None:
        _refuse(request, costs.total(stages[-1], cps[-1], request.num_sample), stages[-1], cps[-1])
    stage, cp, micro = chosen.zero_stage, chosen.with_cp, chosen.max_micro_batch
    clips = micro * request.num_sample
    acts, states = costs.activations[cp], costs.states[stage]
    return MemoryPlan(
        model=request.model,
        world_size=world,
        zero_stage=stage,
        with_cp=cp,
        micro_batch=micro,
        micro_batch_clips=clips,
        grad_accum=videos_per_gpu // micro,
        effective_batch=request.batch,
        num_sample=request.num_sample,
        precision=request.precision,
        num_params=num_params,
        largest_layer_params=largest,
        tokens={"total": tokens.total, "visible": tokens.visible, "decoded": tokens.decoded},
        activation_bytes_per_clip=acts.total,
        activation_encoder_bytes_per_clip=acts.encoder,
        activation_decoder_bytes_per_clip=acts.decoder,
        activation_loss_bytes_per_clip=acts.loss,
        transient_bytes_per_clip=costs.transient[cp],
        input_bytes_per_clip=costs.inputs,
        param_bytes_per_gpu=states.params,
        grad_bytes_per_gpu=states.grads,
        optimizer_bytes_per_gpu=states.optimizer,
        activation_bytes_per_gpu=clips * acts.total,
        transient_bytes_per_gpu=clips * costs.transient[cp],
        input_bytes_per_gpu=clips * costs.inputs,
        reserve_bytes=costs.reserve,
        total_bytes_per_gpu=costs.total(stage, cp, clips),
        gpu_mem_bytes=gpu_mem,
        step_flops=request.batch * pretrain_flops(config, tokens.visible, tokens.decoded).train_step,
        recompute_flops=request.batch * _recompute_flops(config, tokens) if cp else 0,
        candidates=candidates,
    )


def _recompute_flops(config: dict[str, Any], tokens: TokenCounts) -> int:
    """FLOPs per clip that checkpointing recomputes in backward: each block's forward up to its last saved tensor.

    Non-reentrant checkpointing stops recomputing once every tensor backward needs is back, so the last matmul
    of a block (``fc2``, whose output nothing saves) is not run again.
    """
    ratio = config["mlp_ratio"]
    total = 0
    for tokens_, width, depth in (
        (tokens.visible, config["encoder_embed_dim"], config["encoder_depth"]),
        (tokens.decoder, config["decoder_embed_dim"], config["decoder_depth"]),
    ):
        fc2 = 2 * tokens_ * int(width * ratio) * width
        total += transformer_forward_flops(tokens_, width, depth, ratio) - depth * fc2
    return total


def _refuse(request: PlanRequest, needed: int, stage: int, cp: bool) -> None:
    setting = f"ZeRO-{stage} {'with' if cp else 'without'} activation checkpointing"
    hints = [
        "more GPUs (ZeRO-3 partitions the model states over all of them)" if stage == 3 else "--zero-stage 3",
        "GPUs with more memory",
        "fewer clips per video (--num-sample)",
        "shorter or smaller clips (--frames, --input-size)",
        "a smaller --reserve-gib",
    ]
    if not cp:
        hints.insert(0, "activation checkpointing (--with-cp on)")
    raise ValueError(
        f"{request.model} does not fit {request.gpu_mem_gib:g} GiB per GPU: {setting} at micro-batch 1 "
        f"({request.num_sample} clips) needs {needed / GIB:.1f} GiB; try {', '.join(hints)}"
    )
