"""What each stage of a recipe needs: its launch command, and whether to skip it, resume it or start it afresh.

A stage is **done** (skipped) when its run folder holds the export (and, for a stage that evaluates, the final
``eval/metrics.json``), its ``config.yaml`` equals the config the stages file resolves to now, and the stage it
starts from has not changed since it ran (the recipe hash of ``init_from`` recorded in ``stages.json``, which
chains through every earlier stage). A folder with the same config but no export is a run that stopped: it is
**run** again and resumes from its own checkpoints. A folder written with another config, from another upstream,
or under ``--force`` is not resumed (its checkpoints belong to another run): it is moved aside to
``<output_dir>.replaced-<time>`` and the stage starts **fresh**.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from videomae.config import ConfigError, config_to_dict
from videomae.stages.spec import KINDS, Recipe, Stage

__all__ = ["Decision", "build_command", "config_differences", "decide", "plan", "select"]

DONE = "done"


@dataclass
class Decision:
    """What happens to one stage."""

    action: Literal["skip", "run", "fresh", "unselected"]
    """``skip``: done; ``run``: start, or resume its checkpoints; ``fresh``: move the old folder aside, start anew;
    ``unselected``: left out by ``--only`` / ``--from``."""
    reason: str


def select(recipe: Recipe, only: list[str] | None = None, start: str | None = None) -> list[str]:
    """Names of the stages to run, in recipe order: all, ``only`` these, or ``start`` and every later one.

    Raises:
        ConfigError: a name that is not a stage of the recipe.
    """
    names = [s.name for s in recipe.stages]
    for name in (only or []) + ([start] if start else []):
        if name not in names:
            raise ConfigError(f"no stage {name!r} in {recipe.path}; its stages: {', '.join(names)}")
    if only:
        return [n for n in names if n in only]
    return names[names.index(start) :] if start else names


def config_differences(saved: dict[str, Any], resolved: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two nested config dicts (a key missing on one side counts)."""
    flat_a, flat_b = _flatten(saved), _flatten(resolved)
    return sorted(k for k in flat_a.keys() | flat_b.keys() if flat_a.get(k, _MISSING) != flat_b.get(k, _MISSING))


_MISSING = object()


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def decide(stage: Stage, upstream_recipe: str | None, record: dict[str, Any] | None, force: bool = False) -> Decision:
    """Whether ``stage`` is done, resumes or starts afresh, from its run folder.

    Args:
        stage: the resolved stage.
        upstream_recipe: the current recipe hash of the stage it starts from (None: no ``init_from``).
        record: its entry in the previous ``stages.json`` (None: none).
        force: start afresh even when done.
    """
    out = Path(stage.output_dir)
    saved = out / "config.yaml"
    if not saved.is_file():
        return Decision("run", "not started")
    if force:
        return Decision("fresh", "--force")
    try:
        differ = config_differences(config_to_dict(KINDS[stage.kind](saved)), config_to_dict(stage.cfg))
    except ConfigError as err:
        return Decision("fresh", f"its config.yaml no longer loads ({err})")
    if differ:
        shown = ", ".join(differ[:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
        return Decision("fresh", f"its config.yaml differs in {shown}")
    if record is not None and upstream_recipe is not None and record.get("init_recipe") != upstream_recipe:
        return Decision("fresh", f"stage {stage.init_from!r} changed since it ran")
    if not stage.export.is_file():
        return Decision("run", "unfinished: continues from its newest checkpoint")
    if stage.evaluates and not (out / "eval" / "metrics.json").is_file():
        return Decision("run", "the final evaluation is missing: resumes to evaluate")
    return Decision("skip", DONE)


def plan(
    recipe: Recipe, selected: list[str], records: dict[str, dict[str, Any]], force: bool = False
) -> dict[str, Decision]:
    """A decision for every stage of ``recipe``, in order.

    A stage after one that runs (its weights change) is not skipped; a selected stage whose ``init_from`` is left
    out must find that stage done.

    Raises:
        ConfigError: a selected stage needs a stage that is left out and not done.
    """
    decisions: dict[str, Decision] = {}
    current: dict[str, bool] = {}  # done and up to date with the declaration, upstream included
    for stage in recipe.stages:
        upstream = recipe.stage(stage.init_from) if stage.init_from else None
        up_recipe = upstream.recipe if upstream else None
        decision = decide(stage, up_recipe, records.get(stage.name), force and stage.name in selected)
        started = (Path(stage.output_dir) / "config.yaml").is_file()
        if upstream is not None and not current[upstream.name] and started:
            state = "runs first" if upstream.name in selected else "is not done"
            decision = Decision("fresh", f"stage {upstream.name!r} {state}")
        current[stage.name] = decision.action == "skip"
        if stage.name not in selected:
            decision = Decision("unselected", decision.reason)
        decisions[stage.name] = decision
    for stage in recipe.stages:
        if stage.name in selected and stage.init_from and stage.init_from not in selected:
            if not current[stage.init_from]:
                raise ConfigError(f"stage {stage.name!r} starts from stage {stage.init_from!r}, which is left out "
                                  f"but not done ({decisions[stage.init_from].reason}): run it too")  # fmt: skip
    return decisions


def build_command(recipe: Recipe, stage: Stage) -> list[str]:
    """The command line that runs ``stage``: ``videomae <kind>`` as a module under the recipe's launcher
    (``python -m``, ``torchrun -m``, ``deepspeed --module``), ``--config`` and the overrides. A module, not
    ``launch/<kind>.py``, so that an installed package runs its stages from any folder."""
    if recipe.launcher == "python":
        prefix = [sys.executable, *recipe.launcher_args, "-m"]
    elif recipe.launcher == "torchrun":
        prefix = [_tool("torchrun"), f"--nproc_per_node={recipe.nproc}", *recipe.launcher_args, "-m"]
    else:
        prefix = [_tool("deepspeed"), "--num_gpus", str(recipe.nproc), *recipe.launcher_args, "--module"]
    return [*prefix, "videomae", stage.kind, "--config", stage.config, *stage.overrides]


def _tool(name: str) -> str:
    """A launcher from this Python's environment (``.venv/bin/deepspeed``), else from ``PATH``."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name) or name
