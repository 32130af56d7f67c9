"""A stages file: the whole progressive recipe as one declaration, read and checked before anything runs.

::

    output_root: runs/stages/demo          # stage <name> writes to <output_root>/<name> unless it sets output_dir
    launcher: deepspeed                    # deepspeed | torchrun | python (one process)
    nproc: 2                               # processes per stage (deepspeed --num_gpus, torchrun --nproc_per_node)
    overrides: [seed=0]                    # applied to every stage, before the stage's own
    stages:
      - name: pretrain
        kind: pretrain                     # runs as videomae pretrain (launch/pretrain.py)
        config: demo                       # a packaged recipe (videomae/recipes/pretrain/demo.yaml) or a file
      - name: finetune
        kind: finetune                     # runs as videomae finetune (launch/finetune.py)
        config: demo
        init_from: pretrain                # init=<pretrain's output_dir>/export/model.safetensors (pretrain/best:
        overrides: [train.max_steps=100]   #   export/best.safetensors of a finetune stage with train.save_best)

Overrides are ``dotted.key=value`` strings or a mapping of dotted keys to values, the syntax of the launch scripts.
Paths are relative to the working directory, like every path in the configs; a ``config`` that is no file names a
packaged recipe of the stage's kind (:func:`videomae.recipes.resolve`). :func:`load_recipe` resolves each stage's
config exactly as its launch will (file < shared overrides < stage overrides < ``output_dir`` and ``init``) and
refuses, naming the stage and the dotted key: unknown keys or kinds, an ``init_from`` that is not an earlier stage,
a config that is neither a file nor a packaged recipe, a config that does not load or validate, and an encoder that
does not match the one it is initialised from (both models are built on the ``meta`` device and their encoder shapes
compared).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from videomae import recipes
from videomae.config import ConfigError, config_to_dict, load_config, load_config_file, load_finetune_config
from videomae.config.loading import parse_override, require
from videomae.launching.model_compat import encoder_mismatch, encoder_shapes

__all__ = ["KINDS", "Recipe", "Stage", "StageSpec", "StagesError", "StagesSpec", "format_override", "load_recipe"]

KINDS = {"pretrain": load_config, "finetune": load_finetune_config}
"""Each stage kind's config loader (the stage runs as ``videomae <kind>``, or ``launch/<kind>.py``)."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class StagesError(ConfigError):
    """A stages file is malformed; the message names the file, the stage and the dotted key."""


@dataclass
class StageSpec:
    """One stage as written in the stages file."""

    name: str
    """Unique name: the default output folder ``<output_root>/<name>`` and what ``init_from`` refers to."""
    kind: Literal["pretrain", "finetune"]
    """``pretrain`` (self-supervised: ``videomae pretrain``) or ``finetune`` (supervised: ``videomae finetune``)."""
    config: str
    """The stage's YAML config: a file, or a packaged recipe of its kind (:func:`videomae.recipes.resolve`)."""
    overrides: list[str] | dict[str, Any] = field(default_factory=list)
    """``dotted.key=value`` strings, or a mapping of dotted keys to values, applied after the shared overrides."""
    init_from: str | None = None
    """An earlier stage whose export starts this one: ``NAME`` (export/model.safetensors) or ``NAME/best``."""
    output_dir: str | None = None
    """Run folder; ``None``: ``<output_root>/<name>``."""


@dataclass
class StagesSpec:
    """A stages file: the ordered stages and what they share."""

    stages: list[StageSpec]
    """Stages in the order they run."""
    output_root: str = "runs/stages"
    """Folder of ``stages.json`` and of every stage without its own ``output_dir``."""
    overrides: list[str] | dict[str, Any] = field(default_factory=list)
    """Overrides applied to every stage before its own (e.g. ``seed=1``)."""
    launcher: Literal["deepspeed", "torchrun", "python"] = "deepspeed"
    """How each stage starts: ``deepspeed --num_gpus N``, ``torchrun --nproc_per_node N`` or ``python`` (1 process)."""
    nproc: int = 1
    """Processes per stage on this node."""
    launcher_args: list[str] = field(default_factory=list)
    """Extra launcher arguments before the script (e.g. ``[--master_port, "29600"]``, ``[--hostfile, hosts]``)."""

    def validate(self) -> None:
        """Range checks that types alone cannot express."""
        require(bool(self.stages), "stages", "a non-empty list of stages", self.stages)
        require(self.nproc >= 1, "nproc", "an integer >= 1", self.nproc)
        if self.launcher == "python":
            require(self.nproc == 1, "nproc", "1 with launcher: python (deepspeed or torchrun run more)", self.nproc)


@dataclass
class Stage:
    """A stage resolved against its config: what its launch script gets and where it writes."""

    name: str
    kind: str
    config: str
    """The stage's ``config`` as written (a file or a packaged recipe's name)."""
    overrides: list[str]
    """Every override its launch script gets, in order (``output_dir`` and ``init`` first)."""
    output_dir: str
    init: str | None
    """The weights it starts from when ``init_from`` is set."""
    init_from: str | None
    """The stage whose export ``init`` is (without ``/best``)."""
    cfg: Any
    """The resolved config (a ``PretrainConfig`` or ``FinetuneConfig``), as the launch script will build it."""
    recipe: str
    """Hash of the resolved config and of the recipe of ``init_from``: it changes when anything upstream does."""

    @property
    def export(self) -> Path:
        """The weights the run writes when it finishes."""
        return Path(self.output_dir) / "export" / "model.safetensors"

    @property
    def evaluates(self) -> bool:
        """The run ends with a multi-view evaluation into ``eval/metrics.json``."""
        return self.kind == "finetune" and bool(self.cfg.data.test_manifests or self.cfg.data.val_manifests)


@dataclass
class Recipe:
    """A checked stages file."""

    path: str
    output_root: str
    launcher: str
    nproc: int
    launcher_args: list[str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        """The stage called ``name``."""
        return next(s for s in self.stages if s.name == name)

    @property
    def record_path(self) -> Path:
        """``<output_root>/stages.json``: status, export, wall time and metrics of every stage."""
        return Path(self.output_root) / "stages.json"


def format_override(key: str, value: Any) -> str:
    """``key=value`` with the value written as one-line YAML, so the launch script parses back the same value."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30).strip()
    return f"{key}={text.removesuffix('...').strip()}"


def _override_list(value: list[str] | dict[str, Any]) -> list[str]:
    return list(value) if isinstance(value, list) else [format_override(k, v) for k, v in value.items()]


def load_recipe(
    path: str | Path,
    launcher: str | None = None,
    nproc: int | None = None,
    overrides: list[str] | None = None,
    output_root: str | None = None,
) -> Recipe:
    """Read a stages file and check it whole, every stage's config included.

    Args:
        path: the stages YAML.
        launcher: replaces the file's ``launcher`` (``deepspeed``, ``torchrun`` or ``python``).
        nproc: replaces the file's ``nproc``.
        overrides: ``key=value`` strings applied to every stage after the file's (e.g. ``train.max_steps=10``).
        output_root: replaces the file's ``output_root`` (e.g. one folder per seed of the same declaration).

    Raises:
        StagesError: naming the file, the stage and the dotted key of the first problem.
    """
    replaced = {"launcher": launcher, "nproc": nproc, "output_root": output_root}
    cli = [f"{key}={value}" for key, value in replaced.items() if value is not None]
    try:
        spec = load_config_file(StagesSpec, path, cli)
    except ConfigError as err:
        message = str(err).removesuffix(f" (in {path} or the overrides)")
        raise StagesError(f"{path}: {_name_stage(message, path)}") from None
    stages: list[Stage] = []
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}  # encoder shapes by stage name, built once
    for i, item in enumerate(spec.stages):
        try:
            stage = _resolve(item, spec, stages, list(overrides or []))
            if stage.init_from is not None:
                upstream = next(s for s in stages if s.name == stage.init_from)
                for s in (upstream, stage):
                    if s.name not in shapes:
                        shapes[s.name] = encoder_shapes(s.kind, s.cfg)
                mismatch = encoder_mismatch(shapes[upstream.name], shapes[stage.name])
                if mismatch:
                    raise ConfigError(
                        f"model.overrides: the encoder does not match the one of stage {upstream.name!r} it starts "
                        f"from ({mismatch}); give both the same sizes (classification overrides: embed_dim, depth, "
                        "num_heads; pretraining: encoder_embed_dim, encoder_depth, encoder_num_heads)"
                    )
        except ConfigError as err:
            raise StagesError(f"{path}: stage {item.name!r} (stages[{i}]): {err}") from None
        stages.append(stage)
    _check_folders(spec, stages, path)
    return Recipe(str(path), spec.output_root, spec.launcher, spec.nproc, spec.launcher_args, stages)


def _resolve(item: StageSpec, spec: StagesSpec, earlier: list[Stage], last: list[str]) -> Stage:
    """The stage with its overrides (``last`` after its own), output folder, init and loaded config (errors name
    the stage's key)."""
    require(bool(_NAME.match(item.name)), "name", "letters, digits, '_', '.', '-' (no '/')", item.name)
    require(all(s.name != item.name for s in earlier), "name", "a name no other stage has", item.name)
    path = recipes.resolve(item.config, [item.kind], key="config")
    shared, own = _override_list(spec.overrides), _override_list(item.overrides) + last
    keys = {".".join(parse_override(text)[0]): text for text in shared + own}
    if "output_dir" in keys:
        raise ConfigError(f"overrides: output_dir: set by the stage's own output_dir key (default: "
                          f"<output_root>/<name>), not by overrides (got {keys['output_dir']!r})")  # fmt: skip
    if item.init_from is not None and "init" in keys:
        raise ConfigError(f"overrides: init: set by init_from ({item.init_from}); give one or the other "
                          f"(got {keys['init']!r})")  # fmt: skip
    upstream, init = _upstream(item, [s.name for s in spec.stages], earlier)
    output_dir = item.output_dir if item.output_dir is not None else str(Path(spec.output_root) / item.name)
    fixed = [format_override("output_dir", output_dir)] + ([format_override("init", init)] if init else [])
    overrides = fixed + shared + own
    try:
        cfg = KINDS[item.kind](path, overrides)
    except ConfigError as err:
        raise ConfigError(f"{str(err).removesuffix(f' (in {path} or the overrides)')} "
                          f"(config {item.config} with the stage's overrides)") from None  # fmt: skip
    up_recipe = upstream.recipe if upstream else None
    canonical = json.dumps([item.kind, config_to_dict(cfg), up_recipe], sort_keys=True)
    recipe = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    up_name = upstream.name if upstream else None
    return Stage(item.name, item.kind, item.config, overrides, output_dir, init, up_name, cfg, recipe)


def _upstream(item: StageSpec, all_names: list[str], earlier: list[Stage]) -> tuple[Stage | None, str | None]:
    """The stage ``init_from`` names and the export path it gives (``None, None`` without ``init_from``)."""
    if item.init_from is None:
        return None, None
    name, _, which = item.init_from.partition("/")
    names = [s.name for s in earlier]
    if name not in names and name in all_names:
        raise ConfigError(f"init_from: {item.init_from!r} is a later stage; stages run in the order listed, so "
                          f"name an earlier one ({', '.join(names) or 'none'}) or move the stage down")  # fmt: skip
    allowed = f"an earlier stage ({', '.join(names) or 'none'}), optionally with /best"
    require(name in names and which in ("", "best"), "init_from", allowed, item.init_from)
    upstream = next(s for s in earlier if s.name == name)
    if which == "best":
        saves_best = upstream.kind == "finetune" and upstream.cfg.train.save_best
        require(saves_best, "init_from", f"{name} without /best (stage {name} writes no export/best.safetensors: "
                "only a finetune stage with train.save_best: true does)", item.init_from)  # fmt: skip
    return upstream, str(Path(upstream.output_dir) / "export" / f"{which or 'model'}.safetensors")


def _check_folders(spec: StagesSpec, stages: list[Stage], path: str | Path) -> None:
    """No two stages share a run folder or nest in each other, and none holds ``output_root``."""
    root = Path(spec.output_root).resolve()
    for i, stage in enumerate(stages):
        mine = Path(stage.output_dir).resolve()
        if mine == root or mine in root.parents:
            raise StagesError(
                f"{path}: stage {stage.name!r} (stages[{i}]): output_dir: {stage.output_dir} holds "
                f"output_root {spec.output_root} (and stages.json); give it a folder of its own"
            )
        for other in stages[:i]:
            theirs = Path(other.output_dir).resolve()
            if mine == theirs or mine in theirs.parents or theirs in mine.parents:
                raise StagesError(
                    f"{path}: stage {stage.name!r} (stages[{i}]): output_dir: {stage.output_dir} "
                    f"overlaps stage {other.name!r}'s {other.output_dir}; each stage needs its own"
                )


def _name_stage(message: str, path: str | Path) -> str:
    """Put the stage's name before a ``stages[i].key`` error, so it reads ``stage 'x' (stages[i]): key: ...``."""
    match = re.match(r"^stages\[(\d+)\]\.?", message)
    if not match:
        return message
    try:
        item = yaml.safe_load(Path(path).read_text())["stages"][int(match.group(1))]
        name = item.get("name") if isinstance(item, dict) else None
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
        name = None
    label = f"stage {name!r} ({match.group(0).rstrip('.')})" if name else match.group(0).rstrip(".")
    return f"{label}: {message[match.end() :]}"
