"""The machinery under every stage's config: YAML, dotted overrides, strict dict <-> dataclass conversion.

A config class is a dataclass of dataclass sections with a ``validate()`` method for range checks that types
cannot express. :func:`build_config` converts nested mappings into it, refusing unknown keys and wrong types with
a :class:`ConfigError` that starts with the full dotted key; :func:`load_config_file` adds a YAML file and
``key=value`` overrides (values parsed as YAML: ``data.manifests=[a.csv,b.csv]`` is a list, ``train.lr=1e-3`` a
float).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

__all__ = [
    "ConfigError",
    "apply_overrides",
    "build_config",
    "config_to_dict",
    "load_config_file",
    "parse_override",
    "require",
    "save_config",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range; the message names the dotted key."""


class _Loader(yaml.SafeLoader):
    """YAML loader that also reads ``1e-3`` as a float (YAML 1.1, PyYAML's default, wants ``1.0e-3``) and refuses
    a key given twice in one mapping (PyYAML keeps the last silently: a second ``train:`` section would drop the
    first)."""

    def construct_document(self, node: yaml.Node) -> Any:
        _refuse_duplicate_keys(node, "", set())
        return super().construct_document(node)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _refuse_duplicate_keys(node: yaml.Node, path: str, seen: set[int]) -> None:
    """Raise a :class:`ConfigError` naming the dotted key and both lines when a mapping under ``node`` repeats a
    key (scalar keys compared by value; merge keys ``<<`` may be overridden, as YAML intends)."""
    if id(node) in seen:  # an alias: checked where its anchor is
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicate_keys(item, f"{path}[{i}]", seen)
    elif isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = f"{path}.{key_node.value}" if path else str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in lines:
                raise ConfigError(
                    f"{key}: given twice, at lines {lines[key]} and {line}; YAML would keep only the second and "
                    "silently drop the first: merge them into one"
                )
            lines[key] = line
            _refuse_duplicate_keys(value_node, key, seen)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


# ----------------------------------------------------------------------------------------------------------------
# dict <-> dataclass with type checks


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return f"mapping ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it (mappings to dataclasses, ints to floats).

    A dataclass with a ``from_shorthand(str)`` classmethod also accepts a plain string (a manifest path).
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _convert(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: got {value!r}, expected {_type_name(tp)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed and type(value) in {type(a) for a in allowed}:
            return value
        raise ConfigError(f"{key}: got {value!r}, allowed values: {', '.join(repr(a) for a in allowed)}")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: got {value!r}, expected a list ({_type_name(tp)})")
        (item_type,) = typing.get_args(tp)
        return [_convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: got {value!r}, expected a mapping")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, str) and hasattr(tp, "from_shorthand"):
            return tp.from_shorthand(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: got {value!r}, expected a mapping with keys {_field_names(tp)}")
        return _build(tp, value, key)
    if tp is type(None):
        if value is None:
            return None
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: got {value!r} ({type(value).__name__}), expected {_type_name(tp)}")


RETIRED_KEYS: dict[str, str] = {
    "train.inject_nan_at": "a testing hook that is gone: tests now make a loss non-finite through a test method",
}
"""Keys that were renamed or removed, with what to do instead (refused with this message, never ignored)."""


def _field_names(cls: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls))


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        dotted = f"{prefix}{'.' if prefix else ''}{key}"
        if key not in names and dotted in RETIRED_KEYS:
            raise ConfigError(f"{dotted}: no longer a config key ({RETIRED_KEYS[dotted]}); remove it")
        if key not in names:
            raise ConfigError(f"{prefix}{'.' if prefix else ''}{key}: unknown key; allowed keys: {_field_names(cls)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, hints[name], f"{prefix}{'.' if prefix else ''}{name}")
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field (no default) is missing
        raise ConfigError(f"{prefix or cls.__name__}: {err}; keys: {_field_names(cls)}") from err


def _refuse_nonfinite(value: Any, key: str) -> None:
    """Raise a :class:`ConfigError` naming the dotted key of the first NaN or infinity anywhere in ``value``: every
    float of every section, typed or not (``model.overrides``, ``deepspeed.extra``), must be finite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: got {value}, allowed: a finite number (NaN and infinities are refused)")
    if isinstance(value, dict):
        for name, item in value.items():
            _refuse_nonfinite(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _refuse_nonfinite(item, f"{key}[{i}]")


def build_config(kind: type[T], data: dict[str, Any]) -> T:
    """Build and validate a config of class ``kind`` (e.g. ``PretrainConfig``) from nested mappings.

    Raises:
        ConfigError: unknown key, wrong type, a NaN or infinity, or a value out of range; the message starts with
            the dotted key.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(data).__name__}")
    _refuse_nonfinite(data, "")
    cfg = _build(kind, data, "")
    cfg.validate()
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (YAML/JSON-safe) of a config dataclass."""
    return dataclasses.asdict(cfg)


def require(ok: bool, key: str, allowed: str, value: Any) -> None:
    """Raise a :class:`ConfigError` naming ``key``, the ``value`` and what is ``allowed`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}: got {value!r}, allowed: {allowed}")


# ----------------------------------------------------------------------------------------------------------------
# YAML and overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into the key path and the YAML-parsed value.

    Raises:
        ConfigError: when ``=`` or the key is missing, or the value is not valid YAML.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected dotted.key=value, e.g. train.max_steps=10")
    try:
        value = _yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"{key}: value {raw!r} is not valid YAML ({err})") from err
    except ConfigError as err:
        raise ConfigError(f"{key}: value {raw!r}: {err}") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted ``key=value`` overrides applied in order.

    Nested mappings are created on the way; unknown keys are reported later by :func:`build_config`.
    """
    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(path[: i + 1])}: is a value, not a section; cannot set {'.'.join(path)}")
            node = child
        node[path[-1]] = value
    return out


def read_config_data(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a YAML config file (empty when ``path`` is None) with dotted overrides applied.

    Raises:
        ConfigError: file unreadable or invalid YAML, a duplicate key, a top level that is not a mapping, or an
            override that cannot be applied.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"config file {path}: {err.strerror}") from err
        try:
            data = _yaml_load(text) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path}: invalid YAML: {err}") from err
        except ConfigError as err:
            raise ConfigError(f"config file {path}: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path}: expected a mapping at the top level")
    try:
        return apply_overrides(data, list(overrides))
    except ConfigError as err:
        raise ConfigError(f"{err}{_where(path)}") from None


def _where(path: str | Path | None) -> str:
    return f" (in {path} or the overrides)" if path is not None else ""


def build_config_from(kind: type[T], data: dict[str, Any], path: str | Path | None) -> T:
    """:func:`build_config` whose errors also name the file ``path`` the mapping came from."""
    try:
        return build_config(kind, data)
    except ConfigError as err:
        raise ConfigError(f"{err}{_where(path)}") from None


def load_config_file(kind: type[T], path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Load a YAML config file (or the defaults when ``path`` is None) as ``kind`` and apply dotted overrides.

    Raises:
        ConfigError: file unreadable or invalid, unknown key, bad type or value (the message names the key).
    """
    return build_config_from(kind, read_config_data(path, overrides), path)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable again with the stage's ``load_*config``)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
