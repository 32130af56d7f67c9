"""The text tower of MAE-CLIP: token + position embeddings, our transformer blocks, final norm, the feature at
the end-of-text token (as CLIP), and a BERT-style head for the masked-language loss.

CLIP's text tower is causal (each token sees the ones before it); ``causal=False`` makes it bidirectional, as a
masked-language model reads. Padding is never attended to either way.
"""

from __future__ import annotations

import torch
from torch import nn

from videomae.models.backbone import run_blocks
from videomae.models.layers import init_vit_module, make_blocks

__all__ = ["MlmHead", "TextTransformer"]


class TextTransformer(nn.Module):
    """Caption encoder: ``token ids [B, L] -> tokens [B, L, W]`` and the end-of-text feature ``[B, W]``.

    Args:
        vocab_size: token ids run from 0 to ``vocab_size - 1``.
        context_length: ``L``, tokens per caption.
        width: token width (CLIP B: 512; S: 384).
        depth: blocks (12 for both).
        num_heads: attention heads (CLIP B: 8; S: 6).
        mlp_ratio: MLP hidden width over ``width``.
        causal: attend only to earlier tokens (CLIP); ``False``: to every non-padding token.
        pad_id: id of padding (never attended to).
        eot_id: id of the end-of-text token whose output is the caption's feature.
        with_cp: activation checkpointing per block.
    """

    def __init__(
        self,
        vocab_size: int,
        context_length: int = 77,
        width: int = 512,
        depth: int = 12,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        causal: bool = True,
        pad_id: int = 0,
        eot_id: int = 2,
        with_cp: bool = False,
    ) -> None:
        super().__init__()
        self.context_length, self.causal, self.with_cp = context_length, causal, with_cp
        self.pad_id, self.eot_id = pad_id, eot_id
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, context_length, width))
        self.blocks = make_blocks(depth, width, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True)
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.register_buffer("causal_mask", torch.ones(context_length, context_length).tril().bool(), persistent=False)

    def init_module(self, m: nn.Module) -> None:
        """Initialise ``m``'s own parameters (embeddings as CLIP: std 0.02 tokens, 0.01 positions)."""
        init_vit_module(m, "xavier")
        if m is self.token_embedding:
            nn.init.normal_(m.weight, std=0.02)
        if m is self:
            nn.init.normal_(self.pos_embed, std=0.01)
            self.causal_mask = torch.ones_like(self.causal_mask, dtype=torch.float32).tril().bool()

    def attention_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """Who may attend to whom: bool ``[B, 1, L, L]`` (True = may), padding keys off, causal if configured."""
        keys = (tokens != self.pad_id)[:, None, None, :]  # (B, 1, 1, L)
        return keys & self.causal_mask if self.causal else keys  # the start token is never padding: no empty row

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids ``[B, L]`` -> normalised tokens ``[B, L, W]``."""
        if tokens.shape[1] != self.context_length:
            raise ValueError(f"expected token ids [B, {self.context_length}], got {tuple(tokens.shape)}")
        x = self.token_embedding(tokens) + self.pos_embed.to(self.token_embedding.weight.dtype)  # (B, L, W)
        mask = self.attention_mask(tokens)
        x = run_blocks(self.blocks, x, self.with_cp, attn_mask=mask)
        return self.norm(x)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Caption features ``[B, W]``: the output at each row's (first) end-of-text token."""
        x = self.forward_tokens(tokens)  # (B, L, W)
        eot = (tokens == self.eot_id).int().argmax(dim=1)  # (B,)
        return x[torch.arange(x.shape[0], device=x.device), eot]  # (B, W)


class MlmHead(nn.Module):
    """BERT's masked-language head: ``dense -> GELU -> LayerNorm -> vocabulary logits``."""

    def __init__(self, width: int, vocab_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.decoder = nn.Linear(width, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, L, W]`` -> logits ``[B, L, vocab_size]``."""
        return self.decoder(self.norm(self.act(self.dense(x))))
