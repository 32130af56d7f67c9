"""Parameter groups with layer-wise learning-rate decay for fine-tuning (BEiT, MAE, VideoMAE recipe).

Layers are numbered as in BEiT / VideoMAE: the patch embedding and position table are layer 0, block ``i`` is
layer ``i + 1`` and everything after the blocks (``fc_norm``, ``head``) is layer ``L + 1`` for ``L`` blocks.
A parameter of layer ``l`` trains with ``lr * layer_decay ** (L + 1 - l)``: the head at the full rate, the
embeddings at the smallest. The engine multiplies each group's ``lr_scale`` into the scheduled lr.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from videomae.engine.optim import no_weight_decay, param_ndim

__all__ = ["layer_id_of", "layer_scales", "param_groups_layer_decay"]


def layer_id_of(model: nn.Module, name: str) -> int:
    """Layer index of parameter ``name``: the model's own ``layer_id(name)`` when it has one, else the BEiT rule.

    The fallback strips an ``encoder.`` prefix (pretraining models) and maps ``patch_embed`` / ``pos_embed`` /
    ``cls_token`` to 0, ``blocks.i.*`` to ``i + 1`` and the rest (a pretraining decoder and its ``mask_token``
    too) to ``get_num_layers() + 1``.
    """
    if hasattr(model, "layer_id"):
        return int(model.layer_id(name))
    bare = name.removeprefix("encoder.")
    if bare.startswith(("patch_embed", "pos_embed", "cls_token")):
        return 0
    if bare.startswith("blocks."):
        return int(bare.split(".")[1]) + 1
    return model.get_num_layers() + 1


def layer_scales(num_layers: int, layer_decay: float) -> list[float]:
    """``lr_scale`` per layer id ``0 .. num_layers + 1``: ``layer_decay ** (num_layers + 1 - id)``."""
    return [layer_decay ** (num_layers + 1 - layer) for layer in range(num_layers + 2)]


def param_groups_layer_decay(
    model: nn.Module,
    weight_decay: float,
    layer_decay: float,
    no_weight_decay_names: Iterable[str] = (),
) -> list[dict]:
    """Optimizer parameter groups, one per (layer, decay / no decay) pair that has parameters.

    Args:
        model: a model with ``get_num_layers()`` (and ideally ``layer_id(name)``), e.g. the classification ViT.
        weight_decay: weight decay of the decayed groups.
        layer_decay: per-layer lr factor (1.0: every group has ``lr_scale`` 1).
        no_weight_decay_names: extra full parameter names without weight decay; ``model.no_weight_decay()`` is
            always added.

    Returns:
        Groups ordered by layer, each ``{"params", "names", "lr_scale", "weight_decay", "layer_id", "name",
        "apply_wd"}`` (``apply_wd`` tells a weight-decay schedule which groups to change). Frozen parameters
        (``requires_grad=False``) are left out. The key is ``names``, not ``param_names``: torch optimizers give
        ``param_names`` a meaning of their own, which ZeRO's flattened groups would no longer match.

    Raises:
        ValueError: ``layer_decay`` outside ``(0, 1]``, or a layer id outside ``0 .. L + 1``.
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    num_layers = model.get_num_layers()
    scales = layer_scales(num_layers, layer_decay)
    skip = set(no_weight_decay_names)
    if hasattr(model, "no_weight_decay"):
        skip |= set(model.no_weight_decay())
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = layer_id_of(model, name)
        if not 0 <= layer <= num_layers + 1:
            raise ValueError(f"parameter {name}: layer id {layer} is outside 0..{num_layers + 1}")
        decay = not no_weight_decay(name, param_ndim(param), skip)
        key = (layer, decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "names": [],
                "lr_scale": scales[layer],
                "weight_decay": weight_decay if decay else 0.0,
                "layer_id": layer,
                "name": f"layer_{layer}_{'decay' if decay else 'no_decay'}",
                "apply_wd": decay,
            }
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return [groups[key] for key in sorted(groups, key=lambda k: (k[0], not k[1]))]
