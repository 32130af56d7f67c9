"""Model registry: ``@register_model`` variants and ``create_model(name, **overrides)``.

Sizes are the published ones (ViT-S 384/12/6, B 768/12/12, L 1024/24/16, H 1280/32/16, g/14 1408/40/16 with MLP
ratio 48/11). Pretraining decoders follow the VideoMAE V2 release: width 192/3 heads (S), 384/6 (B), 512/8 (L,
H, g), depth 4 (the release's constructor default is 8, but every released V2 pretraining script passes
``--decoder_depth 4``, and the paper's decoder is 4 blocks), sharing the encoder's MLP ratio.

Image MAE (``pretrain_mae_*``) and its classifiers (``vit_image_*``) follow the MAE release: decoder 8 blocks of
width 512 with 16 heads for B, L and H; its ViT-H has patch 14 (``*_huge_patch14_224``), and DESIGN.md's
``*_huge_patch16_224`` names a ViT-H with patch 16.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from videomae.models.classification import VisionTransformer
from videomae.models.image_classification import ImageVisionTransformer
from videomae.models.image_mae import ImageMAE
from videomae.models.pretrain import PretrainVisionTransformer

__all__ = ["create_model", "list_models", "register_model", "variant_for_width"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_SIZE_NAMES = {64: "tiny", 384: "small", 768: "base", 1024: "large", 1280: "huge", 1408: "giant"}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a variant under its function name; the function takes ``**overrides`` and returns the model."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model {fn.__name__!r} is already registered")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models(pattern: str = "") -> list[str]:
    """Registered names containing ``pattern``, sorted."""
    return sorted(name for name in _REGISTRY if pattern in name)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model, with constructor arguments replaced by ``overrides``.

    Works under ``with torch.device("meta"):`` (call ``model.to_empty(device=...)`` then ``model.init_weights()``).

    Raises:
        ValueError: unknown name (the message lists the registered ones).
        TypeError: an override the model's constructor does not take (the message lists the allowed ones).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    model = _REGISTRY[name](**overrides)
    model.model_config["name"] = name
    return model


_FAMILIES = {  # (pretraining, image) -> name prefix
    (True, False): "pretrain_videomae_",
    (False, False): "vit_",
    (True, True): "pretrain_mae_",
    (False, True): "vit_image_",
}


def variant_for_width(
    width: int | None, pretraining: bool, image: bool = False, patch_size: int | None = None
) -> str | None:
    """The registered variant of this width in a family (video: ``pretrain_videomae_*`` / ``vit_*``; image:
    ``pretrain_mae_*`` / ``vit_image_*``), the one with ``patch_size`` where the width has several, or ``None`` when
    none or several fit; its depth or patch may differ from a given model's (pass those as overrides)."""
    prefix = _FAMILIES[(pretraining, image)] + _SIZE_NAMES.get(width, "?") + "_"  # vit_base_, never vit_image_base_
    found = [n for n in list_models() if n.startswith(prefix)]
    if len(found) > 1 and patch_size is not None:
        found = [n for n in found if f"_patch{patch_size}_" in n]
    return found[0] if len(found) == 1 else None


def _constructor_arguments(cls: type) -> list[str]:
    """Named arguments of ``cls``'s constructor; one that passes ``**kwargs`` on adds its parents' (in MRO)."""
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names += [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return list(dict.fromkeys(names))


def _build(cls: type[nn.Module], defaults: dict[str, Any], overrides: dict[str, Any]) -> nn.Module:
    allowed = _constructor_arguments(cls)
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise TypeError(f"{cls.__name__} does not take {unknown}; allowed overrides: {', '.join(allowed)}")
    return cls(**{**defaults, **overrides})


def _pretrain(width: int, depth: int, heads: int, dec_width: int, dec_heads: int, **kw: Any) -> dict[str, Any]:
    return dict(
        encoder_embed_dim=width, encoder_depth=depth, encoder_num_heads=heads,
        decoder_embed_dim=dec_width, decoder_depth=4, decoder_num_heads=dec_heads, qkv_bias=True, **kw,
    )  # fmt: skip


def _vit(width: int, depth: int, heads: int, **kw: Any) -> dict[str, Any]:
    return dict(embed_dim=width, depth=depth, num_heads=heads, qkv_bias=True, **kw)


@register_model
def pretrain_videomae_tiny_patch16_224(**overrides: Any) -> nn.Module:
    """Test size: width 64, 2 blocks, 2 heads; decoder 32 wide, 1 block."""
    defaults = _pretrain(64, 2, 2, 32, 2) | {"decoder_depth": 1}
    return _build(PretrainVisionTransformer, defaults, overrides)


@register_model
def pretrain_videomae_small_patch16_224(**overrides: Any) -> nn.Module:
    return _build(PretrainVisionTransformer, _pretrain(384, 12, 6, 192, 3), overrides)


@register_model
def pretrain_videomae_base_patch16_224(**overrides: Any) -> nn.Module:
    return _build(PretrainVisionTransformer, _pretrain(768, 12, 12, 384, 6), overrides)


@register_model
def pretrain_videomae_large_patch16_224(**overrides: Any) -> nn.Module:
    return _build(PretrainVisionTransformer, _pretrain(1024, 24, 16, 512, 8), overrides)


@register_model
def pretrain_videomae_huge_patch16_224(**overrides: Any) -> nn.Module:
    return _build(PretrainVisionTransformer, _pretrain(1280, 32, 16, 512, 8), overrides)


@register_model
def pretrain_videomae_giant_patch14_224(**overrides: Any) -> nn.Module:
    defaults = _pretrain(1408, 40, 16, 512, 8, patch_size=14, mlp_ratio=48 / 11)
    return _build(PretrainVisionTransformer, defaults, overrides)


@register_model
def vit_tiny_patch16_224(**overrides: Any) -> nn.Module:
    """Test size: width 64, 2 blocks, 2 heads."""
    return _build(VisionTransformer, _vit(64, 2, 2), overrides)


@register_model
def vit_small_patch16_224(**overrides: Any) -> nn.Module:
    return _build(VisionTransformer, _vit(384, 12, 6), overrides)


@register_model
def vit_base_patch16_224(**overrides: Any) -> nn.Module:
    return _build(VisionTransformer, _vit(768, 12, 12), overrides)


@register_model
def vit_large_patch16_224(**overrides: Any) -> nn.Module:
    return _build(VisionTransformer, _vit(1024, 24, 16), overrides)


@register_model
def vit_huge_patch16_224(**overrides: Any) -> nn.Module:
    return _build(VisionTransformer, _vit(1280, 32, 16), overrides)


@register_model
def vit_giant_patch14_224(**overrides: Any) -> nn.Module:
    return _build(VisionTransformer, _vit(1408, 40, 16, patch_size=14, mlp_ratio=48 / 11), overrides)


def _mae(width: int, depth: int, heads: int, **kw: Any) -> dict[str, Any]:
    return dict(
        encoder_embed_dim=width, encoder_depth=depth, encoder_num_heads=heads,
        decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16, qkv_bias=True, **kw,
    )  # fmt: skip


@register_model
def pretrain_mae_tiny_patch16_224(**overrides: Any) -> nn.Module:
    """Test size: width 64, 2 blocks, 2 heads; decoder 32 wide, 1 block, 2 heads."""
    defaults = _mae(64, 2, 2) | {"decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2}
    return _build(ImageMAE, defaults, overrides)


@register_model
def pretrain_mae_base_patch16_224(**overrides: Any) -> nn.Module:
    return _build(ImageMAE, _mae(768, 12, 12), overrides)


@register_model
def pretrain_mae_large_patch16_224(**overrides: Any) -> nn.Module:
    return _build(ImageMAE, _mae(1024, 24, 16), overrides)


@register_model
def pretrain_mae_huge_patch16_224(**overrides: Any) -> nn.Module:
    return _build(ImageMAE, _mae(1280, 32, 16), overrides)


@register_model
def pretrain_mae_huge_patch14_224(**overrides: Any) -> nn.Module:
    """The MAE release's ViT-H (patch 14)."""
    return _build(ImageMAE, _mae(1280, 32, 16, patch_size=14), overrides)


@register_model
def vit_image_tiny_patch16_224(**overrides: Any) -> nn.Module:
    """Test size: width 64, 2 blocks, 2 heads."""
    return _build(ImageVisionTransformer, _vit(64, 2, 2), overrides)


@register_model
def vit_image_small_patch16_224(**overrides: Any) -> nn.Module:
    return _build(ImageVisionTransformer, _vit(384, 12, 6), overrides)


@register_model
def vit_image_base_patch16_224(**overrides: Any) -> nn.Module:
    return _build(ImageVisionTransformer, _vit(768, 12, 12), overrides)


@register_model
def vit_image_large_patch16_224(**overrides: Any) -> nn.Module:
    return _build(ImageVisionTransformer, _vit(1024, 24, 16), overrides)


@register_model
def vit_image_huge_patch16_224(**overrides: Any) -> nn.Module:
    return _build(ImageVisionTransformer, _vit(1280, 32, 16), overrides)


@register_model
def vit_image_huge_patch14_224(**overrides: Any) -> nn.Module:
    """The MAE release's ViT-H (patch 14)."""
    return _build(ImageVisionTransformer, _vit(1280, 32, 16, patch_size=14), overrides)
