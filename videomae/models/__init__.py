"""Video ViT models: building blocks, the VideoMAE V2 pretraining model, the classifier and the registry."""

from videomae.models.backbone import VideoViT
from videomae.models.classification import VisionTransformer
from videomae.models.layers import Attention, Block, Mlp, PatchEmbed3D, set_fused_attention
from videomae.models.pos_embed import interpolate_pos_table, sinusoid_table
from videomae.models.pretrain import PretrainDecoder, PretrainVisionTransformer
from videomae.models.registry import create_model, list_models, register_model

__all__ = [
    "Attention",
    "Block",
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
