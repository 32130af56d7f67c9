"""What a training stage supplies to the shared run (:class:`videomae.engine.run.TrainingRun`).

The run calls these in order: :meth:`~StageHooks.build_train_dataset`, :meth:`~StageHooks.build_model`,
:meth:`~StageHooks.load_init` (fresh runs only), :meth:`~StageHooks.before_engine`,
:meth:`~StageHooks.param_groups`, then, with the DeepSpeed engine built, :meth:`~StageHooks.setup`; per batch
:meth:`~StageHooks.micro_step`, per optimizer step :meth:`~StageHooks.on_step_end`; :meth:`~StageHooks.on_start`
and :meth:`~StageHooks.on_finish` around the loop. Checkpoints carry :meth:`~StageHooks.client_state`; the export
is :meth:`~StageHooks.export_model` with :meth:`~StageHooks.export_metadata`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from videomae.engine.loop import MicroStep

if TYPE_CHECKING:
    from videomae.engine.run import RunSummary

__all__ = ["StageHooks"]


class StageHooks:
    """The stage's side of a run; methods without a default must be implemented."""

    stage = "train"
    """Name shown on the progress bar."""

    def build_model(self) -> nn.Module:
        """The stage's model with fresh weights (also used to rebuild it for the export); built after the
        training set, so it may depend on it (e.g. the number of classes). Under ZeRO-3 the run calls it inside
        DeepSpeed's ``zero.Init``, which partitions each module's parameters as soon as it is built: initialisation
        that touches a child's weights must go through ``nn.Module.apply``."""
        raise NotImplementedError

    def load_init(self, model: nn.Module) -> None:
        """Load ``cfg.init`` into ``model`` (fresh runs only); under ZeRO-3 gather the parameters whole around the
        load (``deepspeed_setup.whole_parameters``), and only when there is something to load."""
        raise NotImplementedError

    def build_train_dataset(self) -> Any:
        """The training set (``None``: no training, e.g. evaluation only)."""
        raise NotImplementedError

    def before_engine(self, model: nn.Module) -> None:
        """Called with the (initialised) model before DeepSpeed wraps it and casts it to the training precision."""

    def param_groups(self, model: nn.Module) -> list[dict]:
        """Optimizer parameter groups (with ``apply_wd`` and optionally ``lr_scale``)."""
        raise NotImplementedError

    def setup(self, model: nn.Module) -> None:
        """Stage state built once the engine exists; must set ``self.generator``."""
        raise NotImplementedError

    def micro_step(self, batch: dict, poison: bool) -> MicroStep:
        """Forward, loss and :func:`videomae.engine.loop.backward_step` on one loader batch."""
        raise NotImplementedError

    def on_start(self) -> None:
        """Called before the first step of this process (after any resume)."""

    def on_step_end(self, step: int) -> dict[str, Any]:
        """Called after each optimizer step, before it is logged and checkpointed; returns extra metrics (a
        non-empty dict makes this step a logged one)."""
        return {}

    def on_finish(self, summary: RunSummary) -> None:
        """Called once the last step is done and exported."""

    def client_state(self) -> dict[str, Any]:
        """Stage state stored in every checkpoint (shared by all ranks)."""
        return {}

    def load_client_state(self, client: dict[str, Any]) -> None:
        """Restore what :meth:`client_state` stored."""

    def export_model(self, state: dict[str, torch.Tensor]) -> nn.Module:
        """The model written to ``export/``, given the consolidated fp32 state dict of the engine's module;
        default: :meth:`build_model` holding ``state``."""
        model = self.build_model()
        model.load_state_dict(state)
        return model

    def export_metadata(self) -> dict[str, Any]:
        """Metadata of the exported safetensors file."""
        return {"step": self.state["step"]}
