"""VideoMAE / VideoMAE V2 pretraining model: an encoder on the visible tokens and a light decoder.

``forward(videos, mask, decode_mask=None)``:

1. ``forward_encoder``: the encoder sees only tokens with ``mask == False`` -> ``[B, N_vis, D_enc]``.
2. ``encoder_to_decoder`` (Linear without bias) -> ``[B, N_vis, D_dec]``, plus the decoder's fixed position
   table at the visible positions.
3. The decoder's predicted set gets ``mask_token`` + position: the ``mask`` tokens when ``decode_mask`` is
   ``None``, else every token with ``decode_mask == False`` (VideoMAE V2: every token the decoder keeps gets a
   mask token, also those the encoder saw).
4. ``forward_decoder``: blocks on ``[visible | predicted]``, then ``head(norm(last N_dec tokens))``, so the
   predictions ``[B, N_dec, tubelet·p·p·C]`` come in token order.

State-dict keys are the release's: ``encoder.*``, ``encoder_to_decoder.weight``, ``mask_token``, ``decoder.*``.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import trunc_normal_
from torch import nn

from videomae.masking import decoded_positions
from videomae.models.arguments import check_model_arguments
from videomae.models.backbone import VideoViT, gather_tokens, run_blocks
from videomae.models.layers import init_vit_module, make_blocks
from videomae.models.pos_embed import sinusoid_table

__all__ = ["MaskedAutoencoder", "PretrainDecoder", "PretrainVisionTransformer"]


class PretrainDecoder(nn.Module):
    """Decoder blocks, ``norm`` and the pixel ``head`` (keys ``decoder.blocks.N.*``, ``decoder.norm``, ``.head``)."""

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        num_classes: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        init_values: float | None = 0.0,
        with_cp: bool = False,
        cos_attn: bool = False,
    ) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.blocks = make_blocks(
            depth, embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate, init_values=init_values, cos_attn=cos_attn,
        )  # fmt: skip
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x: torch.Tensor, num_predicted: int) -> torch.Tensor:
        """Run ``x`` [B, N_vis + N_dec, D]; predict pixels for the last ``num_predicted`` tokens."""
        x = run_blocks(self.blocks, x, self.with_cp)
        x = x[:, x.shape[1] - num_predicted :]  # (B, N_dec, D)
        return self.head(self.norm(x))  # (B, N_dec, tubelet*p*p*C)


class MaskedAutoencoder(nn.Module):
    """What the video and image masked autoencoders share: an ``encoder`` (a :class:`VideoViT`) and a ``decoder``
    (a :class:`PretrainDecoder`), ``forward = forward_decoder(forward_encoder(x, mask), mask, decode_mask)``.
    Subclasses build the parts and define ``forward_decoder``."""

    encoder: VideoViT
    decoder: PretrainDecoder
    model_config: dict[str, Any]

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """Token grid ``(T', H', W')``."""
        return self.encoder.grid_size

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Turn activation checkpointing of every encoder and decoder block on or off."""
        self.encoder.with_cp = enable
        self.decoder.with_cp = enable
        self.model_config["with_cp"] = enable

    def get_num_layers(self) -> int:
        """Number of encoder blocks."""
        return len(self.encoder.blocks)

    def forward_encoder(self, videos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encode the visible tokens: videos [B, C, T, H, W], mask [B, N] (True = hidden) -> ``[B, P + N_vis, D_enc]``
        (``P`` leading tokens of the encoder's own, e.g. an image ViT's class token)."""
        return self.encoder(videos, mask)

    def forward_decoder(
        self, latent: torch.Tensor, mask: torch.Tensor, decode_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, videos: torch.Tensor, mask: torch.Tensor, decode_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Reconstruct masked tokens.

        Args:
            videos: ``[B, C, T, H, W]`` (an image model also takes ``[B, C, H, W]``), ImageNet-normalised.
            mask: bool ``[B, N]``, True = hidden from the encoder; same count per sample.
            decode_mask: bool ``[B, N]``, True = dropped by the decoder; ``None`` = predict the ``mask`` tokens.

        Returns:
            ``[B, N_dec, tubelet·p·p·C]`` predictions in token order.
        """
        return self.forward_decoder(self.forward_encoder(videos, mask), mask, decode_mask)


class PretrainVisionTransformer(MaskedAutoencoder):
    """Masked video autoencoder (VideoMAE V2).

    Args:
        img_size: input height = width.
        patch_size: spatial patch side.
        in_chans: input channels.
        tubelet_size: frames per token.
        all_frames: input frames.
        encoder_embed_dim: encoder width.
        encoder_depth: encoder blocks.
        encoder_num_heads: encoder heads.
        decoder_embed_dim: decoder width.
        decoder_depth: decoder blocks.
        decoder_num_heads: decoder heads.
        mlp_ratio: MLP ratio of encoder and decoder blocks.
        qkv_bias: learn q/v biases.
        init_values: layer-scale initial value (0 disables).
        drop_rate: dropout after projections.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth (encoder and decoder, as the release).
        use_learnable_pos_emb: learn the encoder's position table.
        with_cp: activation checkpointing per block.
        cos_attn: cosine attention.
        decoder_num_classes: outputs per token; ``None`` means ``in_chans·tubelet·p·p``.
        final_norm: the encoder ends with its ``norm`` (the release); ``False``: no final norm, as ``transformers``'
            pretraining models with ``use_mean_pooling=True``.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        tubelet_size: int = 2,
        all_frames: int = 16,
        encoder_embed_dim: int = 768,
        encoder_depth: int = 12,
        encoder_num_heads: int = 12,
        decoder_embed_dim: int = 384,
        decoder_depth: int = 4,
        decoder_num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        init_values: float | None = 0.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        use_learnable_pos_emb: bool = False,
        with_cp: bool = False,
        cos_attn: bool = False,
        decoder_num_classes: int | None = None,
        final_norm: bool = True,
    ) -> None:
        super().__init__()
        config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        check_model_arguments(config)
        pixels = in_chans * tubelet_size * patch_size**2
        if decoder_num_classes is None:
            decoder_num_classes = config["decoder_num_classes"] = pixels
        elif decoder_num_classes != pixels:
            raise ValueError(f"decoder_num_classes must be in_chans*tubelet*p*p = {pixels}, got {decoder_num_classes}")
        self.model_config: dict[str, Any] = {"name": None, **config}
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        blocks = dict(
            mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate, init_values=init_values, with_cp=with_cp, cos_attn=cos_attn,
        )  # fmt: skip
        self.encoder = VideoViT(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=encoder_embed_dim,
            depth=encoder_depth, num_heads=encoder_num_heads, tubelet_size=tubelet_size, all_frames=all_frames,
            use_learnable_pos_emb=use_learnable_pos_emb, final_norm=final_norm, **blocks,
        )  # fmt: skip
        self.decoder = PretrainDecoder(
            embed_dim=decoder_embed_dim, depth=decoder_depth, num_heads=decoder_num_heads,
            num_classes=decoder_num_classes, **blocks,
        )  # fmt: skip
        self.encoder_to_decoder = nn.Linear(encoder_embed_dim, decoder_embed_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        num_patches = self.encoder.patch_embed.num_patches
        self.register_buffer("pos_embed", sinusoid_table(num_patches, decoder_embed_dim), persistent=False)
        self.init_weights()

    def init_weights(self) -> None:
        """Initialise as the release (xavier Linears, unit norms, mask token N(0, 0.02)); recompute fixed tables.

        Call after ``to_empty()`` when the model was built on the ``meta`` device.
        """
        self.apply(self.init_module)
        self.encoder.reset_pos_table()
        table = sinusoid_table(self.pos_embed.shape[1], self.pos_embed.shape[2], device=self.pos_embed.device)
        self.pos_embed = table

    def init_module(self, m: nn.Module) -> None:
        """Initialise the own parameters of ``m``, this model or one of its modules (``init_weights`` passes each
        to it through ``self.apply``, children first, so ZeRO-3's ``zero.Init`` can gather one module at a time)."""
        if m is self.encoder:
            self.encoder.init_module(m, "xavier")  # its learnable position table
        else:
            init_vit_module(m, "xavier")
        if m is self:
            trunc_normal_(self.mask_token, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """Full names of parameters excluded from weight decay (besides biases and norms)."""
        names = {"mask_token"}
        if isinstance(self.encoder.pos_embed, nn.Parameter):
            names.add("encoder.pos_embed")
        return names

    def forward_decoder(
        self, x_vis: torch.Tensor, mask: torch.Tensor, decode_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predict pixels of the decoder's token set from encoder tokens ``x_vis`` [B, N_vis, D_enc]."""
        x_vis = self.encoder_to_decoder(x_vis)  # (B, N_vis, D_dec)
        pos = self.pos_embed.to(dtype=x_vis.dtype).expand(x_vis.shape[0], -1, -1)  # (B, N, D_dec)
        predicted = decoded_positions(mask, decode_mask)
        if predicted.shape != mask.shape:
            raise ValueError(
                f"decode_mask must have the shape of mask {tuple(mask.shape)}, got {tuple(predicted.shape)}"
            )
        pos_vis = gather_tokens(pos, ~mask)  # (B, N_vis, D_dec)
        pos_pred = gather_tokens(pos, predicted)  # (B, N_dec, D_dec)
        x = torch.cat([x_vis + pos_vis, self.mask_token.to(x_vis.dtype) + pos_pred], dim=1)  # (B, N_vis + N_dec, D_dec)
        return self.decoder(x, pos_pred.shape[1])
