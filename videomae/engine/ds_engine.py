"""The typed boundary with DeepSpeed: what our code calls on its engine, and nothing else.

``deepspeed.initialize`` returns a ``DeepSpeedEngine`` (:func:`videomae.engine.deepspeed_setup.initialize`); the
rest of the package sees it through :class:`TrainingEngine`, so a reader knows what we rely on and a type checker
can hold us to it, while DeepSpeed stays imported in ``deepspeed_setup`` only.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

__all__ = ["TrainingEngine"]


class TrainingEngine(Protocol):
    """The parts of ``deepspeed.DeepSpeedEngine`` the training loop, checkpoints and pictures use."""

    module: nn.Module
    """The wrapped model (under ZeRO-3 its parameters are partitioned)."""
    optimizer: Any
    """DeepSpeed's optimizer wrapper; its ``param_groups`` carry our ``apply_wd`` / ``lr_scale`` keys."""
    device: torch.device
    world_size: int
    global_rank: int

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The module's forward (ZeRO-3 gathers parameters around it)."""

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def backward(self, loss: torch.Tensor) -> Any:
        """Scale (fp16), accumulate and, at a boundary, reduce the gradients."""

    def step(self) -> None:
        """Optimizer step at a gradient-accumulation boundary (clipping, skip on overflow); no-op otherwise."""

    def is_gradient_accumulation_boundary(self) -> bool: ...

    def was_step_applied(self) -> bool: ...

    def get_global_grad_norm(self) -> float | None: ...

    def zero_optimization_stage(self) -> int: ...

    def fp16_enabled(self) -> bool: ...

    def bfloat16_enabled(self) -> bool: ...

    def compile(self, **kwargs: Any) -> None: ...

    def save_checkpoint(
        self, save_dir: str, tag: str | None = None, client_state: dict[str, Any] | None = None, **kwargs: Any
    ) -> Any: ...

    def load_checkpoint(self, load_dir: str, tag: str | None = None, **kwargs: Any) -> tuple[Any, Any]: ...

    def load_universal_checkpoint(self) -> bool: ...
