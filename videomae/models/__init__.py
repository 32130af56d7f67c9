"""ViT models: building blocks, the VideoMAE V2 and image MAE pretraining models, classifiers and the registry."""

from videomae.models.backbone import VideoViT
from videomae.models.classification import VisionTransformer
from videomae.models.image_classification import ImageVisionTransformer
from videomae.models.image_mae import ImageMAE
from videomae.models.image_vit import ImageViT
from videomae.models.layers import Attention, Block, Mlp, PatchEmbed3D, set_fused_attention
from videomae.models.pos_embed import interpolate_pos_table, sinusoid_table
from videomae.models.pretrain import PretrainDecoder, PretrainVisionTransformer
from videomae.models.registry import create_model, list_models, register_model

__all__ = [
    "Attention",
    "Block",
    "ImageMAE",
    "ImageViT",
    "ImageVisionTransformer",
    "Mlp",
    "PatchEmbed3D",
    "PretrainDecoder",
    "PretrainVisionTransformer",
    "VideoViT",
    "VisionTransformer",
    "create_model",
    "interpolate_pos_table",
    "list_models",
    "register_model",
    "set_fused_attention",
    "sinusoid_table",
]
