"""MAE (He et al.) for images: an encoder on the visible patches plus a class token, and an asymmetric decoder.

``forward(images, mask)`` follows the video model's contract (``mask`` [B, N], True = hidden):

1. ``forward_encoder``: class token + visible tokens through the image ViT -> ``[B, 1 + N_vis, D_enc]`` (normed).
2. ``forward_decoder``: ``encoder_to_decoder`` (the release's ``decoder_embed``, with bias) -> ``D_dec``; the
   decoder sees ``[cls | visible | one mask token per hidden patch]``, each plus its row of the decoder's fixed
   2-D sin-cos table, and predicts ``head(norm(.))`` for the hidden patches -> ``[B, N_masked, p·p·C]``.

The release appends mask tokens and un-shuffles (``ids_restore``) so the decoder runs on the tokens in image order;
attention and the per-token layers do not depend on the order of the sequence, so the predictions are the same
function of the weights, here returned in token order as the video model's are. The loss (normalised pixels per
patch, as the release's ``norm_pix_loss``) is :class:`videomae.objectives.mae_pixels.MAEPixelLoss`.

State-dict keys: ``encoder.cls_token``, ``encoder.patch_embed.proj``, ``encoder.blocks.N.*``, ``encoder.norm``,
``encoder_to_decoder``, ``mask_token``, ``decoder.blocks.N.*``, ``decoder.norm``, ``decoder.head``; the release's
layout and ``transformers``' ViTMAE convert to it (:mod:`videomae.models.convert_mae`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from videomae.models.arguments import check_model_arguments
from videomae.models.backbone import gather_tokens
from videomae.models.image_vit import ImageViT, check_image_arguments
from videomae.models.layers import init_vit_module
from videomae.models.pos_embed import sincos_2d_table
from videomae.models.pretrain import MaskedAutoencoder, PretrainDecoder

__all__ = ["ImageMAE"]


class ImageMAE(MaskedAutoencoder):
    """Masked autoencoder for images (the MAE release's ``MaskedAutoencoderViT``, on our layers). ``forward``,
    ``forward_encoder`` (the class token, then the visible tokens), ``grid_size`` ``(1, H', W')`` and the rest are
    :class:`~videomae.models.pretrain.MaskedAutoencoder`'s; images may be ``[B, C, H, W]`` or ``[B, C, 1, H, W]``.

    Args:
        img_size: input height = width.
        patch_size: patch side.
        in_chans: input channels.
        tubelet_size: must be 1 (kept so the video code's arguments and metadata read alike).
        all_frames: must be 1 (images are one-frame clips).
        encoder_embed_dim: encoder width.
        encoder_depth: encoder blocks.
        encoder_num_heads: encoder heads.
        decoder_embed_dim: decoder width.
        decoder_depth: decoder blocks.
        decoder_num_heads: decoder heads.
        mlp_ratio: MLP ratio of encoder and decoder blocks.
        qkv_bias: learn q/v biases (the release's key bias is dropped: it shifts every logit of a query alike).
        init_values: layer-scale initial value (0 disables; the release has none).
        drop_rate: dropout after projections.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth of the encoder (the release uses none in pretraining).
        with_cp: activation checkpointing per block.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        tubelet_size: int = 1,
        all_frames: int = 1,
        encoder_embed_dim: int = 768,
        encoder_depth: int = 12,
        encoder_num_heads: int = 12,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        init_values: float | None = 0.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        with_cp: bool = False,
    ) -> None:
        super().__init__()
        config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        check_model_arguments(config)
        check_image_arguments(all_frames, tubelet_size)
        self.model_config: dict[str, Any] = {"name": None, **config}
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        layers = dict(mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                      init_values=init_values, with_cp=with_cp)  # fmt: skip
        self.encoder = ImageViT(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=encoder_embed_dim,
            depth=encoder_depth, num_heads=encoder_num_heads, drop_path_rate=drop_path_rate, **layers,
        )  # fmt: skip
        self.encoder_to_decoder = nn.Linear(encoder_embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder = PretrainDecoder(
            decoder_embed_dim, decoder_depth, decoder_num_heads, in_chans * patch_size**2, **layers
        )
        self.register_buffer("pos_embed", self._decoder_table(), persistent=False)
        self.init_weights()

    def _decoder_table(self, device: torch.device | None = None) -> torch.Tensor:
        _, height, width = self.grid_size
        return sincos_2d_table(height, width, self.mask_token.shape[-1], 1, device=device)  # (1, 1 + N, D_dec)

    def init_weights(self) -> None:
        """Initialise as the release (xavier Linears and patch projection, unit norms, class and mask tokens
        N(0, 0.02)); recompute the fixed tables. Call after ``to_empty()`` when built on the ``meta`` device."""
        self.apply(self.init_module)
        self.encoder.reset_pos_table()
        self.pos_embed = self._decoder_table(self.pos_embed.device)

    def init_module(self, m: nn.Module) -> None:
        """Initialise the own parameters of ``m`` (``init_weights`` passes each module, children first, so ZeRO-3's
        ``zero.Init`` can gather one module at a time)."""
        if m is self.encoder:
            self.encoder.init_module(m, "xavier")
        else:
            init_vit_module(m, "xavier")
        if m is self:
            nn.init.normal_(self.mask_token, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """Names excluded from weight decay besides biases and norms: none. The release decays the class and mask
        tokens in pretraining (``add_weight_decay`` skips only 1-D tensors), and its position tables are fixed."""
        return set()

    def forward_decoder(
        self, latent: torch.Tensor, mask: torch.Tensor, decode_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predict the pixels of every hidden patch from the encoder's output ``latent`` [B, 1 + N_vis, D_enc]
        -> ``[B, N_masked, p·p·C]`` in token order. ``decode_mask`` must be ``None`` (MAE decodes every hidden patch;
        the argument keeps the video model's signature, which the reconstruction pictures call)."""
        if decode_mask is not None:
            raise ValueError("image MAE decodes every hidden patch: decode_mask must be None (mask.decoder_type: none)")
        x = self.encoder_to_decoder(latent)  # (B, 1 + N_vis, D_dec)
        pos = self.pos_embed.to(dtype=x.dtype)  # (1, 1 + N, D_dec)
        patch_pos = pos[:, 1:].expand(x.shape[0], -1, -1)  # (B, N, D_dec)
        hidden = self.mask_token.to(x.dtype) + gather_tokens(patch_pos, mask)  # (B, N_masked, D_dec)
        visible = x[:, 1:] + gather_tokens(patch_pos, ~mask)  # (B, N_vis, D_dec)
        x = torch.cat([x[:, :1] + pos[:, :1], visible, hidden], dim=1)  # (B, 1 + N, D_dec)
        return self.decoder(x, hidden.shape[1])
