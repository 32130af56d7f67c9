"""A pretraining entry point whose loss is non-finite once at chosen steps: the test double behind the non-finite
tests (``NONFINITE_AT=2,5 python tests/nonfinite_pretrain.py --config ... [key=value ...]``).

The first micro-batch of each listed (1-based) step gets a NaN loss; the retried micro-batch of that step is the
method's own. Production code has no hook for this: the double wraps the real pretraining method's loss.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

from videomae.config import PretrainConfig, load_config
from videomae.engine.method import LossOutput
from videomae.engine.session import start_session
from videomae.engine.trainer import RunSummary, train
from videomae.launching import launcher
from videomae.methods.pretrain import PretrainMethod, build_pretrain_method


class NonFiniteAt(PretrainMethod):
    """The pretraining method, its loss made NaN once at each step of ``steps``."""

    def __init__(self, method: PretrainMethod, steps: set[int]) -> None:
        super().__init__(method.cfg, method.train_set)
        self.steps, self.done, self.next_step = steps, set(), 1

    def begin(self, step: int) -> dict[str, Any]:
        self.next_step = step + 1
        return super().begin(step)

    def after_step(self, step: int) -> dict[str, float]:
        self.next_step = step + 1
        return super().after_step(step)

    def loss(self, batch: dict[str, Any]) -> LossOutput:
        out = super().loss(batch)
        if self.next_step in self.steps and self.next_step not in self.done:
            self.done.add(self.next_step)
            out.loss = out.loss * math.nan
        return out


def run(cfg: PretrainConfig) -> RunSummary:
    steps = {int(s) for s in os.environ.get("NONFINITE_AT", "").split(",") if s}
    session = start_session(cfg)
    return train(session, NonFiniteAt(build_pretrain_method(cfg, session), steps))


if __name__ == "__main__":
    nonfinite = launcher.Launch("pretrain", load_config, "nonfinite_pretrain:run")
    sys.exit(launcher.main(None, nonfinite, script="nonfinite_pretrain.py", doc=__doc__))
