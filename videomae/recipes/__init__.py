"""The recipes that ship inside the package, and the one rule that turns ``--config NAME_OR_PATH`` into a file.

``pretrain/*.yaml`` (``videomae pretrain``, ``launch/pretrain.py``), ``finetune/*.yaml`` (``videomae finetune``,
``launch/finetune.py``) and ``stages/*.yaml`` (``videomae stages``, ``launch/stages.py``): the published VideoMAE V2
recipes and the CPU demos. They are package data, so an installed package finds them by name from any folder.

:func:`resolve` reads ``--config`` in this order:

1. an existing file is that file (yours win over a packaged name);
2. ``[...]launch/configs/KIND/NAME.yaml``, the recipes' location before they moved into the package, is the
   packaged ``KIND/NAME`` (so commands written for a checkout keep working);
3. ``NAME`` or ``KIND/NAME`` (``.yaml`` optional) is the packaged recipe of that name among the kinds the command
   takes (``videomae pretrain``: pretrain; ``videomae doctor``: pretrain and finetune). A bare name found under
   several kinds is refused as ambiguous, a name found under none as unknown; both messages list the names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from videomae.config import ConfigError

__all__ = ["KINDS", "RECIPES", "names", "resolve"]

RECIPES = Path(__file__).resolve().parent
"""The folder of the packaged recipes (one sub-folder per kind)."""
KINDS = ("pretrain", "finetune", "stages")
"""The kinds of recipe, each a sub-folder of :data:`RECIPES`."""
_LEGACY = ("launch", "configs")


def names(kind: str) -> list[str]:
    """The packaged recipes of ``kind`` (``pretrain``, ``finetune``, ``stages``), sorted, without ``.yaml``."""
    return sorted(p.stem for p in (RECIPES / kind).glob("*.yaml"))


def resolve(config: str | Path, kinds: Sequence[str], key: str = "--config") -> Path:
    """The YAML file that ``--config config`` means for a command taking recipes of ``kinds`` (rule above).

    Args:
        config: a path to a YAML file, or a packaged recipe's ``NAME`` / ``KIND/NAME``.
        kinds: the kinds of recipe the command takes, e.g. ``("pretrain",)``.
        key: what the messages call the setting (``--config``; ``config`` in a stages file).

    Raises:
        ConfigError: no such file and no such recipe, a name found under several kinds, or a ``KIND/NAME`` of a
            kind the command does not take; the message lists the packaged names.
    """
    path = Path(config)
    if path.is_file():
        return path
    parts = path.parts
    if len(parts) >= 4 and parts[-4:-2] == _LEGACY and parts[-2] in KINDS:
        parts = parts[-2:]
    elif path.is_absolute() or len(parts) > 2 or (len(parts) == 2 and parts[0] not in KINDS) or not parts:
        raise ConfigError(f"{key}: {config} not found (relative to {Path.cwd()}); or name a packaged recipe "
                          f"({_listing(kinds)})")  # fmt: skip
    name = parts[-1].removesuffix(".yaml")
    if len(parts) == 2 and parts[0] not in kinds:
        raise ConfigError(f"{key}: {config} is a {parts[0]} recipe; this command takes {_listing(kinds)}")
    found = [kind for kind in ([parts[0]] if len(parts) == 2 else kinds) if (RECIPES / kind / f"{name}.yaml").is_file()]
    if len(found) > 1:
        choices = " or ".join(f"{kind}/{name}" for kind in found)
        raise ConfigError(f"{key}: {config} names several packaged recipes: write {choices}")
    if not found:
        other = [f"{k}/{name}" for k in KINDS if k not in kinds and (RECIPES / k / f"{name}.yaml").is_file()]
        hint = f" ({' and '.join(other)}: another command's)" if other else ""
        raise ConfigError(f"{key}: {config} is neither a file (relative to {Path.cwd()}) nor a packaged recipe"
                          f"{hint}; packaged recipes ({_listing(kinds)})")  # fmt: skip
    return RECIPES / found[0] / f"{name}.yaml"


def _listing(kinds: Sequence[str]) -> str:
    """``pretrain: demo, vit_b_hybrid; finetune: demo, ...`` for the ``kinds``."""
    return "; ".join(f"{kind}: {', '.join(names(kind))}" for kind in kinds)
