"""Image classification ViT for fine-tuning and probing MAE encoders, as the MAE release's fine-tuning model.

The video classifier on the image trunk: a class token and the fixed 2-D sin-cos table (or a learnable table that
starts from it, as MAE fine-tuning trains it). Pooling as the release: ``use_mean_pooling=True`` (its
``global_pool``, the default) averages the patch tokens (not the class token) then ``fc_norm``; ``False``: final
``norm`` then the class token, as ``transformers``' ``ViTForImageClassification``. Keys: ``cls_token``,
``patch_embed.proj``, ``blocks.N.*``, ``norm`` (only without mean pooling), ``fc_norm``, ``head``.
"""

from __future__ import annotations

from typing import Any

from videomae.models.classification import VisionTransformer
from videomae.models.image_vit import ImageViT, check_image_arguments

__all__ = ["ImageVisionTransformer"]


class ImageVisionTransformer(VisionTransformer, ImageViT):
    """Image ViT classifier: :class:`~videomae.models.classification.VisionTransformer`'s arguments and head on
    :class:`~videomae.models.image_vit.ImageViT`'s trunk (``all_frames`` and ``tubelet_size`` must be 1).

    The method resolution order puts ``VisionTransformer`` (head, pooling, fine-tuning init) before ``ImageViT``
    (class token, table, one-frame input) before ``VideoViT``: each extends the next through ``super()``.
    """

    def __init__(self, *, all_frames: int = 1, tubelet_size: int = 1, num_classes: int = 1000, **kwargs: Any) -> None:
        check_image_arguments(all_frames, tubelet_size)
        super().__init__(all_frames=all_frames, tubelet_size=tubelet_size, num_classes=num_classes, **kwargs)

    def no_weight_decay(self) -> set[str]:
        """The class token and a learnable table, as the release's fine-tuning (``no_weight_decay_list``)."""
        return super().no_weight_decay() | {"cls_token"}
