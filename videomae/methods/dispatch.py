"""Run the pretraining method a config names (``method``: :data:`videomae.config.methods.METHODS`)."""

from __future__ import annotations

from typing import Any

from videomae.config.methods import method_run

__all__ = ["run_pretraining_method"]


def run_pretraining_method(cfg: Any) -> Any:
    """Train ``cfg`` with its method's run function (``run_pretraining``, ``run_image_mae``, ``run_mocov3``...);
    every rank calls this. Returns the run's :class:`~videomae.engine.trainer.RunSummary`."""
    return method_run(cfg.method)(cfg)
