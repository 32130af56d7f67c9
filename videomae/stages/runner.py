"""Run a recipe's stages in order as subprocesses and keep ``<output_root>/stages.json`` up to date.

Each stage runs as ``videomae pretrain|finetune`` under the recipe's launcher (output streamed as it comes); the
first failure stops the chain with the stage's name. ``stages.json`` is rewritten after every change: per stage its
status (``pending``, ``running``, ``done``, ``failed``, ``stopped``), whether it was ``skipped`` as already done, its
command, export, wall time, ``metrics`` (a finetune stage's ``eval/metrics.json``), ``last_log`` (the last line of
its ``metrics.jsonl``) and the recipe hashes that tell a later run whether it is still up to date.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from videomae.launching.findings import Finding
from videomae.launching.preflight import dry_run_findings, format_failures, preflight_findings
from videomae.stages.plan import DONE, Decision, build_command, plan, select
from videomae.stages.spec import Recipe, Stage

__all__ = ["read_records", "run_recipe"]

Execute = Callable[[list[str]], int]


def _execute(command: list[str]) -> int:
    """Run ``command`` with this process's stdout/stderr (streamed, unbuffered) and return its exit status."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(command, env=env) as proc:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # the stage got the same SIGINT: let it checkpoint or exit first
            proc.wait()
            raise


def read_records(recipe: Recipe) -> dict[str, dict[str, Any]]:
    """The per-stage entries of an existing ``stages.json`` by stage name (empty when there is none or it is
    unreadable)."""
    try:
        data = json.loads(recipe.record_path.read_text())
        return {entry["name"]: entry for entry in data["stages"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def run_recipe(
    recipe: Recipe,
    *,
    only: list[str] | None = None,
    start: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    preflight: bool = False,
    execute: Execute = _execute,
    out: TextIO | None = None,
) -> int:
    """Run the selected stages of ``recipe`` (skipping the done ones) and return the exit status.

    Args:
        recipe: a checked stages file (:func:`videomae.stages.load_recipe`).
        only: run just these stages (the ones they start from must be done).
        start: run this stage and every later one (the earlier ones they need must be done).
        force: start the selected stages afresh even when done (their old folders are moved aside).
        dry_run: check each stage that would run as its launch script's ``--dry-run`` does (manifests listed and
            present, the config against itself and the model), then print each stage's decision and exact command;
            run nothing.
        preflight: first check every stage that will run against the machine (manifests, model, output_dir...,
            :mod:`videomae.launching.preflight`) and run nothing when one fails.
        execute: runs one command and returns its exit status (tests replace it).
        out: where progress lines go (default ``sys.stdout``).

    Returns:
        0 when every selected stage is done; 2 when a preflight (or dry-run) check failed (nothing ran); else 1 (a
        stage failed or stopped early; the message names it).

    Raises:
        ConfigError: an unknown stage name, or a selected stage needs one that is left out and not done.
    """
    out = out or sys.stdout
    selected = select(recipe, only, start)
    previous = read_records(recipe)
    decisions = plan(recipe, selected, previous, force)
    commands = {s.name: build_command(recipe, s) for s in recipe.stages}
    if dry_run:
        if not _check_stages(recipe, decisions, dry_run_findings):
            return 2
        for stage in recipe.stages:
            decision = decisions[stage.name]
            comment = "" if decision.action in ("run", "fresh") else "# "
            print(f"# {stage.name} ({stage.kind}): {_describe(decision)}", file=out)
            print(comment + shlex.join(commands[stage.name]), file=out)
        return 0
    if preflight and not _check_stages(recipe, decisions, lambda cfg: preflight_findings(cfg, check_port=False)):
        return 2

    entries = {
        s.name: _entry(recipe, s, commands[s.name], previous.get(s.name), decisions[s.name]) for s in recipe.stages
    }
    _write(recipe, entries)
    for number, stage in enumerate(recipe.stages, 1):
        decision = decisions[stage.name]
        print(f"=== stage {number}/{len(recipe.stages)} {stage.name} ({stage.kind}): {_describe(decision)}",
              file=out, flush=True)  # fmt: skip
        if decision.action in ("run", "fresh"):
            code = _run_stage(recipe, stage, decision, entries, commands[stage.name], execute, out)
            if code != 0:
                return code
    print(f"=== all stages done: {recipe.record_path}", file=out, flush=True)
    return 0


def _run_stage(
    recipe: Recipe,
    stage: Stage,
    decision: Decision,
    entries: dict[str, dict[str, Any]],
    command: list[str],
    execute: Execute,
    out: TextIO,
) -> int:
    """Run one stage (moving a stale folder aside first), keeping its entry in ``stages.json`` current; returns 0
    when it finished, else the runner's exit status (after saying why)."""
    entry = entries[stage.name]
    if decision.action == "fresh":
        aside = _move_aside(Path(stage.output_dir))
        if aside is not None:
            print(f"    previous run moved to {aside}", file=out)
    print("    " + shlex.join(command), file=out, flush=True)
    entry.update(status="running", skipped=False, started=_now(), finished=None, returncode=None, wall_s=None)
    entry["init_recipe"] = recipe.stage(stage.init_from).recipe if stage.init_from else None
    _refresh_outputs(entry, stage)
    _write(recipe, entries)
    began = time.monotonic()
    try:
        code = execute(command)
    except KeyboardInterrupt:
        entry.update(status="failed", finished=_now(), wall_s=round(time.monotonic() - began, 1))
        _write(recipe, entries)
        print(f"stages: interrupted during stage {stage.name!r}; rerun the same command to resume", file=sys.stderr)
        return 130
    entry.update(returncode=code, finished=_now(), wall_s=round(time.monotonic() - began, 1))
    _refresh_outputs(entry, stage)
    finished = code == 0 and stage.export.is_file()
    entry["status"] = "done" if finished else "failed" if code != 0 else "stopped"
    _write(recipe, entries)
    if finished:
        return 0
    what = f"failed (exit status {code})" if code != 0 else "stopped before it finished (no export written)"
    print(f"stages: stage {stage.name!r} {what}; its log: {Path(stage.output_dir) / 'train.log'}; rerun the same "
          "command to resume from it", file=sys.stderr)  # fmt: skip
    return 1


def _check_stages(recipe: Recipe, decisions: dict[str, Decision], checks: Callable[[Any], list[Finding]]) -> bool:
    """Check every stage that will run with ``checks`` (the launch preflight, or in a dry run the config's own
    checks, as its launch script would); print each failing stage's problems.

    A stage's ``init`` made by an earlier stage of this invocation is not looked for yet, and a stage that starts
    afresh is checked as a fresh start (its old folder is moved aside first). The port is left to each launch.
    """
    running = {name for name, d in decisions.items() if d.action in ("run", "fresh")}
    ok = True
    for stage in recipe.stages:
        if stage.name not in running:
            continue
        cfg = stage.cfg
        if decisions[stage.name].action == "fresh" and cfg.resume == "auto":
            cfg = dataclasses.replace(cfg, resume="never")
        findings = checks(cfg)
        if stage.init_from in running:
            findings = [f for f in findings if f.check != "init"]
        if not all(f.ok for f in findings):
            print(format_failures(findings, f"stages: stage {stage.name!r}"), file=sys.stderr, flush=True)
            ok = False
    return ok


def _describe(decision: Decision) -> str:
    action = {"skip": "done, skipped", "run": "run", "fresh": "run afresh", "unselected": "not selected"}
    return f"{action[decision.action]} ({decision.reason})" if decision.action != "skip" else action["skip"]


def _entry(
    recipe: Recipe, stage: Stage, command: list[str], previous: dict[str, Any] | None, decision: Decision
) -> dict[str, Any]:
    """The stage's ``stages.json`` entry before this invocation runs anything."""
    entry: dict[str, Any] = {
        "name": stage.name,
        "kind": stage.kind,
        "config": stage.config,
        "output_dir": stage.output_dir,
        "init": stage.init,
        "command": command,
        "recipe": stage.recipe,
        "status": "pending",
        "skipped": False,
        "export": None,
        "wall_s": None,
        "metrics": None,
        "last_log": None,
    }
    keep = ("init_recipe", "started", "finished", "wall_s", "returncode")
    if previous is not None and previous.get("output_dir") == stage.output_dir:
        entry.update({k: previous[k] for k in keep if k in previous})
    if decision.reason == DONE:
        entry.update(status="done", skipped=decision.action == "skip")
        # Judged up to date with the stage it starts from (also when stages.json was lost and is written anew).
        entry["init_recipe"] = recipe.stage(stage.init_from).recipe if stage.init_from else None
    _refresh_outputs(entry, stage)
    return entry


def _refresh_outputs(entry: dict[str, Any], stage: Stage) -> None:
    """Export path, final evaluation and last logged metrics from the stage's run folder, where present."""
    folder = Path(stage.output_dir)
    entry["export"] = str(stage.export) if stage.export.is_file() else None
    entry["metrics"] = _read_json(folder / "eval" / "metrics.json")
    entry["last_log"] = _last_line(folder / "metrics.jsonl")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _last_line(path: Path) -> Any:
    try:
        lines = path.read_text().splitlines()
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def _write(recipe: Recipe, entries: dict[str, dict[str, Any]]) -> None:
    """Rewrite ``stages.json`` atomically (a crash never leaves half a file)."""
    path = recipe.record_path
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "stages_file": recipe.path,
        "output_root": recipe.output_root,
        "launcher": recipe.launcher,
        "nproc": recipe.nproc,
        "updated": _now(),
        "stages": list(entries.values()),
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _move_aside(folder: Path) -> Path | None:
    """Rename a stale run folder to ``<folder>.replaced-<time>`` (never deleted); None when there is none."""
    if not folder.exists():
        return None
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target, n = folder.with_name(f"{folder.name}.replaced-{stamp}"), 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}.replaced-{stamp}-{n}")
    folder.rename(target)
    return target


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")
