"""Video classification ViT for fine-tuning, as the release's ``VisionTransformer``.

Mean pooling + ``fc_norm`` + ``head`` (``use_mean_pooling=True``, the default), or the release's pooling-free path
(``use_mean_pooling=False``): final ``norm`` then the first token (there is no class token). Keys:
``patch_embed.proj``, ``blocks.N.*``, ``norm`` (only without mean pooling), ``fc_norm``, ``head``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from videomae.models.arguments import check_model_arguments
from videomae.models.backbone import VideoViT

__all__ = ["VisionTransformer"]


class VisionTransformer(VideoViT):
    """Video ViT classifier.

    Args:
        img_size: input height = width.
        patch_size: spatial patch side.
        in_chans: input channels.
        num_classes: classes (0 gives an identity head).
        embed_dim: width.
        depth: blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width over ``embed_dim``.
        qkv_bias: learn q/v biases.
        drop_rate: dropout after projections.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, rising linearly to this rate.
        init_values: layer-scale initial value (0 disables).
        use_learnable_pos_emb: learn the position table.
        init_scale: the head's initial weights and bias are multiplied by this (release: 0.001).
        all_frames: input frames.
        tubelet_size: frames per token.
        use_mean_pooling: mean over tokens then ``fc_norm``; ``False``: ``norm`` then the first token.
        fc_drop_rate: dropout before the head.
        with_cp: activation checkpointing per block.
        cos_attn: cosine attention.
        pos_table_grid: grid of the pretraining position table, resampled to this model's grid when it differs
            (VideoMAE V2 fine-tuning at other frame counts / resolutions); ``None``: the table of this grid.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 400,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        init_values: float | None = 0.0,
        use_learnable_pos_emb: bool = False,
        init_scale: float = 0.001,
        all_frames: int = 16,
        tubelet_size: int = 2,
        use_mean_pooling: bool = True,
        fc_drop_rate: float = 0.0,
        with_cp: bool = False,
        cos_attn: bool = False,
        pos_table_grid: tuple[int, int, int] | None = None,
    ) -> None:
        config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        check_model_arguments(config)
        super().__init__(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate, init_values=init_values,
            tubelet_size=tubelet_size, all_frames=all_frames, use_learnable_pos_emb=use_learnable_pos_emb,
            with_cp=with_cp, cos_attn=cos_attn, final_norm=not use_mean_pooling, pos_table_grid=pos_table_grid,
        )  # fmt: skip
        self.model_config: dict[str, Any] = {"name": None, **config}
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.num_classes = num_classes
        self.init_scale = init_scale
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6) if use_mean_pooling else None
        self.fc_dropout = nn.Dropout(fc_drop_rate) if fc_drop_rate > 0 else nn.Identity()
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self, linear_init: str = "trunc_normal") -> None:
        """Initialise as the release's fine-tuning model (trunc-normal Linears, head scaled by ``init_scale``)."""
        super().init_weights(linear_init)

    def init_module(self, m: nn.Module, linear_init: str = "trunc_normal") -> None:
        """One module's own parameters (see :meth:`VideoViT.init_module`); the head is scaled by ``init_scale``."""
        super().init_module(m, linear_init)
        if m is self.head and isinstance(m, nn.Linear):
            with torch.no_grad():
                m.weight.mul_(self.init_scale)
                m.bias.mul_(self.init_scale)

    def no_weight_decay(self) -> set[str]:
        """Full names of parameters excluded from weight decay (besides biases and norms)."""
        return {"pos_embed"} if isinstance(self.pos_embed, nn.Parameter) else set()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Turn activation checkpointing of every block on or off."""
        self.with_cp = enable
        self.model_config["with_cp"] = enable

    def get_num_layers(self) -> int:
        """Number of transformer blocks."""
        return len(self.blocks)

    def layer_id(self, name: str) -> int:
        """Layer index of a parameter for layer-wise lr decay: 0 = embeddings, i + 1 = block i, L + 1 = head."""
        if name.startswith(("patch_embed", "pos_embed", "cls_token")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.get_num_layers() + 1

    def forward_features(self, videos: torch.Tensor) -> torch.Tensor:
        """Pooled features: videos [B, C, T, H, W] -> [B, D] (mean over the patch tokens, or the first token)."""
        x = self.forward_tokens(videos)  # (B, P + N, D)
        if self.fc_norm is not None:
            return self.fc_norm(x[:, self.num_prefix_tokens :].mean(dim=1))
        return x[:, 0]

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits [B, num_classes] from pooled features [B, D] (``pre_logits``: stop after the dropout)."""
        features = self.fc_dropout(features)
        return features if pre_logits else self.head(features)

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        """Class logits of ``videos`` [B, C, T, H, W] -> [B, num_classes]."""
        return self.forward_head(self.forward_features(videos))
