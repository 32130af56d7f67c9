"""Measured activation memory of a pretraining step, on any device: what autograd saves, and the step's peak.

:func:`saved_tensor_bytes` is the check of :func:`videomae.planning.memory.activation_bytes`: every tensor the
forward saves for backward passes through a ``saved_tensors_hooks`` pack hook, where its storage is counted once
(views such as q/k/v slices of one ``qkv`` output share a storage, and a storage is what stays allocated).
Parameters and buffers are model states, not activations, and are left out. Under activation checkpointing the
checkpoint saves each block's input through the same hook, while the tensors inside a checkpointed block go to the
checkpoint's own (inner) hooks and are recomputed in backward, so they are, rightly, not counted.

On CPU, ``scaled_dot_product_attention`` runs its flash kernel, which saves the same tensors as the CUDA fused
kernels (q, k, v, output, log-sum-exp), so the CPU count measures what the model describes for GPUs; the one
difference is LayerNorm's mean/rstd, kept in the input dtype on CPU and in fp32 on CUDA (4 bytes per token per
norm in bf16, well under 0.1 % of the total).

:func:`peak_step_bytes` follows every storage created in forward and backward (a dispatch mode with weak
references) and reports the peak of those alive at once, the check of saved + transient bytes. It counts tensor
bytes, not an allocator's rounded blocks or fragmentation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from videomae.models import create_model
from videomae.objectives import MaskedPixelLoss
from videomae.planning.planner import make_masks

__all__ = ["measure_activation_bytes", "measure_peak_bytes", "peak_step_bytes", "saved_tensor_bytes"]

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_DEFAULTS: dict[str, Any] = dict(
    frames=16, input_size=224, mask_type="tube", mask_ratio=0.9, decoder_mask_ratio=0.5, precision="bf16",
    with_cp=False, device="cpu", seed=0,
)  # fmt: skip


def saved_tensor_bytes(forward: Callable[[], torch.Tensor], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``forward()`` runs.

    Args:
        forward: runs the forward pass (grad enabled) and returns its output; the graph is dropped on return.
        exclude: tensors whose storages are not counted (the model's parameters and buffers).
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in skip:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return sum(saved.values())


class _LiveBytes(TorchDispatchMode):
    """Tracks the bytes of live tensor storages created under it (each op's outputs) and their peak.

    A storage counts from the op that created it until it is found freed at a later op, so a temporary is
    counted together with the op output it existed beside.
    """

    def __init__(self, exclude: set[int]) -> None:
        super().__init__()
        self.exclude = exclude
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for key in [key for key, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key = storage.data_ptr()
                if key not in self.exclude and key not in self.live and storage.nbytes():
                    self.live[key] = (StorageWeakRef(storage), storage.nbytes())
                    self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out


def peak_step_bytes(forward: Callable[[], torch.Tensor], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Peak bytes of tensors alive at once during ``forward()`` and the backward of its (scalar) output.

    Storages of ``exclude`` (parameters, their gradients, buffers, the input batch) are not counted, so the
    figure is what a step adds on top of them: saved activations plus every transient buffer.
    """
    mode = _LiveBytes({t.untyped_storage().data_ptr() for t in exclude})
    with mode:
        forward().backward()
    return mode.peak


def _pretraining_step(
    model_name: str,
    frames: int,
    input_size: int,
    mask_type: str,
    mask_ratio: float,
    decoder_mask_ratio: float | None,
    precision: str,
    with_cp: bool,
    clips: int,
    device: torch.device | str,
    seed: int,
) -> tuple[Callable[[], torch.Tensor], list[torch.Tensor]]:
    """A forward (model + masked-pixel loss) on random clips, and the tensors that are not step memory."""
    dtype = _DTYPES[precision]
    device = torch.device(device)
    torch.manual_seed(seed)
    model = create_model(model_name, all_frames=frames, img_size=input_size, with_cp=with_cp)
    model = model.to(device=device, dtype=dtype).train()  # weights in the compute dtype, as DeepSpeed's bf16 engine
    generator = torch.Generator(device=device).manual_seed(seed)
    videos = torch.randn(clips, 3, frames, input_size, input_size, generator=generator, device=device).to(dtype)
    mask, decode_mask = make_masks(clips, model.grid_size, mask_type, mask_ratio, decoder_mask_ratio, generator, device)
    loss_fn = MaskedPixelLoss(model.patch_size, model.tubelet_size)
    for param in model.parameters():  # gradients exist from the first step on; they are model states
        param.grad = torch.zeros_like(param)

    def forward() -> torch.Tensor:
        return loss_fn(model(videos, mask, decode_mask), videos, mask, decode_mask)

    states = [*model.parameters(), *(p.grad for p in model.parameters()), *model.buffers(), videos]
    return forward, states


def measure_activation_bytes(model_name: str, *, clips: int = 1, **setting: Any) -> float:
    """Saved-for-backward bytes per clip of the model's forward and masked-pixel loss on random clips.

    Args:
        model_name: registered pretraining model.
        clips: clips in the measured batch.
        setting: ``frames`` (16), ``input_size`` (224), ``mask_type`` (tube), ``mask_ratio`` (0.9),
            ``decoder_mask_ratio`` (0.5; ``None`` for no decoder mask), ``precision`` (bf16), ``with_cp``
            (False), ``device`` (cpu), ``seed`` (0).
    """
    forward, states = _pretraining_step(model_name, clips=clips, **{**_DEFAULTS, **setting})
    return saved_tensor_bytes(forward, states) / clips


def measure_peak_bytes(model_name: str, *, clips: int = 2, **setting: Any) -> float:
    """Peak step bytes per clip above the model states and the input batch (:func:`peak_step_bytes`).

    Takes the arguments of :func:`measure_activation_bytes`.
    """
    forward, states = _pretraining_step(model_name, clips=clips, **{**_DEFAULTS, **setting})
    return peak_step_bytes(forward, states) / clips
