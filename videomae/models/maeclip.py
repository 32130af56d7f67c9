"""MAE-CLIP (Weers et al., CVPR 2023): a vision tower and a text tower trained with a contrastive loss, plus an MAE
decoder on masked clips and a masked-language head on masked captions.

``forward(videos, tokens, clip_mask=None, mae_mask=None, mlm_tokens=None)`` runs the passes whose inputs are given
and returns a dict:

1. contrastive pass: ``videos`` (with ``clip_mask`` [B, N] hiding tokens, FLIP-style) -> ``"video"`` [B, E] and
   ``tokens`` [B, L] -> ``"text"`` [B, E], both unit-norm, and ``"logit_scale"`` (exp of the learnt log-scale,
   clamped at 100 as CLIP);
2. generative pass: ``videos`` with ``mae_mask`` -> ``"pixels"`` [B, N_mask, tubelet*p*p*C] (the MAE decoder);
   ``mlm_tokens`` (masked captions) -> ``"mlm_logits"`` [B, L, V].

The vision tower is a registered classifier (``vit_*``) built with ``num_classes=0``, so its weights
(``vision.*``) load into that classifier as they are: ``videomae probe`` and fine-tuning read them from the
export. Keys: ``vision.*``, ``pool.*``, ``vision_proj``, ``text.*``, ``text_proj``, ``logit_scale``,
``decoder.*`` (with an MAE decoder), ``mlm_head.*`` (with a masked-language head).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from videomae.models.backbone import gather_tokens
from videomae.models.layers import init_vit_module
from videomae.models.pooling import AttentionPool, build_pooling
from videomae.models.pos_embed import sinusoid_table
from videomae.models.pretrain import PretrainDecoder
from videomae.models.registry import create_model
from videomae.models.text import MlmHead, TextTransformer

__all__ = ["MAX_LOGIT_SCALE", "MaeClipModel", "MaskedDecoder"]

MAX_LOGIT_SCALE = 100.0
"""CLIP clips the temperature so that logits are scaled by at most 100."""


class MaskedDecoder(nn.Module):
    """MAE decoder: visible tokens + mask tokens at the hidden positions -> pixels of the hidden tokens.

    Args:
        encoder_dim: width of the vision tower's tokens.
        embed_dim, depth, num_heads: the decoder's width, blocks and heads.
        num_patches: tokens of a whole clip.
        pixels: outputs per token (``C * tubelet * p * p``).
    """

    def __init__(
        self, encoder_dim: int, embed_dim: int, depth: int, num_heads: int, num_patches: int, pixels: int
    ) -> None:
        super().__init__()
        self.encoder_to_decoder = nn.Linear(encoder_dim, embed_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer("pos_embed", sinusoid_table(num_patches, embed_dim), persistent=False)
        self.decoder = PretrainDecoder(embed_dim, depth, num_heads, pixels)

    def init_module(self, m: nn.Module) -> None:
        """Own parameters of ``m``: the mask token N(0, 0.02) as the release; the fixed table recomputed."""
        if m is self:
            nn.init.normal_(self.mask_token, std=0.02)
            self.pos_embed = sinusoid_table(self.pos_embed.shape[1], self.pos_embed.shape[2], self.pos_embed.device)

    def forward(self, x_vis: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Visible tokens ``[B, N_vis, D_enc]`` and ``mask`` [B, N] (True = hidden) -> ``[B, N_mask, pixels]``."""
        x_vis = self.encoder_to_decoder(x_vis)  # (B, N_vis, D_dec)
        pos = self.pos_embed.to(x_vis.dtype).expand(x_vis.shape[0], -1, -1)  # (B, N, D_dec)
        pos_vis, pos_hidden = gather_tokens(pos, ~mask), gather_tokens(pos, mask)
        x = torch.cat([x_vis + pos_vis, self.mask_token.to(x_vis.dtype) + pos_hidden], dim=1)
        return self.decoder(x, pos_hidden.shape[1])  # (B, N_mask, pixels)


class MaeClipModel(nn.Module):
    """Vision tower + pooling + projection, text tower + projection, logit scale; MAE decoder and MLM head optional.

    Args:
        vision: registered classifier name (``vit_*``), built with ``num_classes=0``.
        vision_overrides: its constructor arguments (``img_size``, ``all_frames``, ``tubelet_size``...).
        embed_dim: width of the shared image/video-text space.
        pooling: ``gap``, ``map`` or ``max`` (:mod:`videomae.models.pooling`).
        pool_num_heads: heads of ``map`` pooling (``None``: the vision tower's).
        vocab_size, context_length, text_width, text_depth, text_num_heads, text_causal, pad_id, eot_id: the text
            tower (:class:`~videomae.models.text.TextTransformer`).
        decoder_embed_dim, decoder_depth, decoder_num_heads: the MAE decoder; ``decoder_depth=0``: none.
        mlm_head: build the masked-language head.
        with_cp: activation checkpointing in both towers.
    """

    def __init__(
        self,
        vision: str = "vit_base_patch16_224",
        vision_overrides: dict[str, Any] | None = None,
        embed_dim: int = 512,
        pooling: str = "gap",
        pool_num_heads: int | None = None,
        vocab_size: int = 4096,
        context_length: int = 77,
        text_width: int = 512,
        text_depth: int = 12,
        text_num_heads: int = 8,
        text_causal: bool = True,
        pad_id: int = 0,
        eot_id: int = 2,
        decoder_embed_dim: int = 384,
        decoder_depth: int = 0,
        decoder_num_heads: int = 6,
        mlm_head: bool = False,
        with_cp: bool = False,
    ) -> None:
        super().__init__()
        self.model_config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.model_config["name"] = "maeclip"
        self.vision = create_model(vision, num_classes=0, with_cp=with_cp, **(vision_overrides or {}))
        if getattr(self.vision, "fc_norm", None) is None:
            raise ValueError(f"{vision}: the vision tower must be a mean-pooling classifier (use_mean_pooling=True)")
        width = self.vision.embed_dim
        heads = pool_num_heads or self.vision.model_config["num_heads"]
        self.pooling = pooling
        self.pool = build_pooling(pooling, width, heads)
        self.vision_proj = nn.Linear(width, embed_dim, bias=False)
        self.text = TextTransformer(vocab_size, context_length, text_width, text_depth, text_num_heads,
                                    causal=text_causal, pad_id=pad_id, eot_id=eot_id, with_cp=with_cp)  # fmt: skip
        self.text_proj = nn.Linear(text_width, embed_dim, bias=False)
        # one element, not a 0-dim tensor: DeepSpeed broadcasts parameters as bytes, which a 0-dim tensor cannot be
        self.logit_scale = nn.Parameter(torch.full((1,), math.log(1 / 0.07)))
        self.decoder = None
        if decoder_depth > 0:
            v = self.vision
            pixels = v.model_config["in_chans"] * v.tubelet_size * v.patch_size**2  # C * tubelet * p * p
            num_patches = v.patch_embed.num_patches
            self.decoder = MaskedDecoder(
                width, decoder_embed_dim, decoder_depth, decoder_num_heads, num_patches, pixels
            )
        self.mlm_head = MlmHead(text_width, vocab_size) if mlm_head else None
        for part in (self.pool, self.vision_proj, self.text, self.text_proj, self.decoder, self.mlm_head):
            if part is not None:
                part.apply(self.init_module)

    def init_module(self, m: nn.Module) -> None:
        """Own parameters of ``m`` (xavier Linears, unit norms, the parts' own tensors); the vision tower (not passed
        here) initialises itself."""
        init_vit_module(m, "xavier")
        if isinstance(m, TextTransformer | MaskedDecoder | AttentionPool):
            m.init_module(m)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
        elif isinstance(m, nn.MultiheadAttention):
            m._reset_parameters()

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """Token grid ``(T', H', W')`` of the vision tower."""
        return self.vision.grid_size

    @property
    def patch_size(self) -> int:
        return self.vision.patch_size

    @property
    def tubelet_size(self) -> int:
        return self.vision.tubelet_size

    def no_weight_decay(self) -> set[str]:
        """Full names of parameters excluded from weight decay (besides biases and norms): scale, tables, tokens."""
        names = {"logit_scale", "text.pos_embed", "text.token_embedding.weight"}
        names |= {f"vision.{n}" for n in self.vision.no_weight_decay()}
        if self.decoder is not None:
            names.add("decoder.mask_token")
        if self.pooling == "map":
            names.add("pool.query")
        return names

    def scale(self) -> torch.Tensor:
        """The logits' multiplier: ``exp(logit_scale)`` clamped at 100 (no gradient past the clamp)."""
        return self.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()[0]

    def pool_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Vision tokens ``[B, N, D]`` -> pooled ``[B, D]``; ``gap`` is the classifier's ``forward_features``."""
        if self.pooling == "gap":
            return self.vision.fc_norm(self.pool(x))
        return self.pool(self.vision.fc_norm(x))

    def encode_video(self, videos: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-norm embeddings ``[B, E]`` of ``videos`` [B, C, T, H, W] (``mask`` True = token dropped)."""
        x = self.vision.forward_tokens(videos, mask)  # (B, N_vis, D)
        return F.normalize(self.vision_proj(self.pool_tokens(x)), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings ``[B, E]`` of token ids ``[B, L]``."""
        return F.normalize(self.text_proj(self.text(tokens)), dim=-1)

    def forward_mae(self, videos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pixels of the hidden tokens ``[B, N_mask, tubelet*p*p*C]`` (``mask`` True = hidden)."""
        if self.decoder is None:
            raise RuntimeError("this MAE-CLIP model has no MAE decoder (model.decoder_depth=0)")
        return self.decoder(self.vision.fc_norm(self.vision.forward_tokens(videos, mask)), mask)

    def forward_mlm(self, tokens: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits ``[B, L, V]`` of (masked) token ids ``[B, L]``."""
        if self.mlm_head is None:
            raise RuntimeError("this MAE-CLIP model has no masked-language head (loss.mlm=0)")
        return self.mlm_head(self.text.forward_tokens(tokens))

    def forward(
        self,
        videos: torch.Tensor,
        tokens: torch.Tensor | None = None,
        clip_mask: torch.Tensor | None = None,
        mae_mask: torch.Tensor | None = None,
        mlm_tokens: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The passes whose inputs are given (see the module docstring); ``tokens=None`` skips the contrastive one."""
        out: dict[str, torch.Tensor] = {}
        if tokens is not None:
            out["video"] = self.encode_video(videos, clip_mask)
            out["text"] = self.encode_text(tokens)
            out["logit_scale"] = self.scale()
        if mae_mask is not None:
            out["pixels"] = self.forward_mae(videos, mae_mask)
        if mlm_tokens is not None:
            out["mlm_logits"] = self.forward_mlm(mlm_tokens)
        return out
