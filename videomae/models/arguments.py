"""The one check of a model's constructor arguments (sizes, depths, rates), run before any layer is made.

Without it a negative depth builds a model without blocks that trains, and a width the heads do not divide or a
clip the tubelet does not divide fails deep inside a layer. :func:`check_model_arguments` takes the constructor's
arguments by name, as ``model.model_config`` holds them, so the preflight checks can name the config key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["ModelArgumentError", "check_model_arguments"]

# integer sizes that must be >= 1 (``None`` allowed where the constructor has a derived default)
_SIZES = (
    "img_size", "patch_size", "in_chans", "tubelet_size", "all_frames", "embed_dim", "depth", "num_heads",
    "encoder_embed_dim", "encoder_depth", "encoder_num_heads", "decoder_embed_dim", "decoder_depth",
    "decoder_num_heads", "decoder_num_classes",
)  # fmt: skip
_RATES = ("drop_rate", "attn_drop_rate", "drop_path_rate", "fc_drop_rate")  # probabilities in [0, 1)
_WIDTH_HEADS = (("embed_dim", "num_heads"), ("encoder_embed_dim", "encoder_num_heads"),
                ("decoder_embed_dim", "decoder_num_heads"))  # fmt: skip
_MULTIPLES = (("img_size", "patch_size"), ("all_frames", "tubelet_size"))


class ModelArgumentError(ValueError):
    """A constructor argument out of range; ``argument`` is its name (``encoder_depth``)."""

    def __init__(self, argument: str, value: Any, allowed: str) -> None:
        super().__init__(f"{argument}: got {value!r}, allowed: {allowed}")
        self.argument = argument


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_model_arguments(args: Mapping[str, Any]) -> None:
    """Check the arguments of a model constructor that are present in ``args`` (absent ones are not checked).

    Raises:
        ModelArgumentError: the first argument out of range, by name.
    """
    for name in _SIZES:
        value = args.get(name)
        if name in args and not (value is None and name == "decoder_num_classes"):
            if not (_is_int(value) and value >= 1):
                raise ModelArgumentError(name, value, "an integer >= 1")
    if "num_classes" in args and not (_is_int(args["num_classes"]) and args["num_classes"] >= 0):
        raise ModelArgumentError("num_classes", args["num_classes"], "an integer >= 0 (0: no head)")
    if "mlp_ratio" in args and not (_is_number(args["mlp_ratio"]) and args["mlp_ratio"] > 0):
        raise ModelArgumentError("mlp_ratio", args["mlp_ratio"], "a number > 0")
    for name in _RATES:
        if name in args and not (_is_number(args[name]) and 0 <= args[name] < 1):
            raise ModelArgumentError(name, args[name], "a number in [0, 1)")
    value = args.get("init_values")
    if value is not None and not (_is_number(value) and value >= 0):
        raise ModelArgumentError("init_values", value, "null or a number >= 0 (0: no layer scale)")
    if "init_scale" in args and not _is_number(args["init_scale"]):
        raise ModelArgumentError("init_scale", args["init_scale"], "a finite number")
    grid = args.get("pos_table_grid")
    grid_ok = isinstance(grid, list | tuple) and len(grid) == 3 and all(_is_int(g) and g >= 1 for g in grid)
    if grid is not None and not grid_ok:
        raise ModelArgumentError("pos_table_grid", grid, "null or three integers >= 1 (T', H', W')")
    for width, heads in _WIDTH_HEADS:
        if width in args and heads in args and args[width] % args[heads]:
            raise ModelArgumentError(width, args[width], f"a multiple of {heads} ({args[heads]})")
    for size, unit in _MULTIPLES:
        if size in args and unit in args and args[size] % args[unit]:
            raise ModelArgumentError(size, args[size], f"a multiple of {unit} ({args[unit]})")
