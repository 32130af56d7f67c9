"""Memory planning for pretraining: the analytic memory model, the plan search and the CPU measurement it is
checked against."""

from videomae.planning.memory import (
    ActivationBytes,
    ModelStateBytes,
    TokenCounts,
    activation_bytes,
    model_state_bytes,
)
from videomae.planning.planner import MemoryPlan, PlanRequest, make_plan

__all__ = [
    "ActivationBytes",
    "MemoryPlan",
    "ModelStateBytes",
    "PlanRequest",
    "TokenCounts",
    "activation_bytes",
    "make_plan",
    "model_state_bytes",
]
