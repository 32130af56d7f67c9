"""Captions -> fixed-length token ids for the text tower: ``[<sot>, tokens..., <eot>, <pad>...]``.

Any ``tokenizers`` JSON file works: the packaged byte-level BPE (``videomae/text/bpe_4k.json``, the default), a
vocabulary trained on your captions (:func:`videomae.text.vocab.train_vocabulary`), or CLIP's own
``tokenizer.json`` from a Hugging Face CLIP folder (its ``<|startoftext|>`` / ``<|endoftext|>`` are used as start
and end). Special tokens the file lacks (pad, mask) are appended to its vocabulary, so the text tower's vocabulary
size is :attr:`CaptionTokenizer.vocab_size`. The JSON (with those additions) is stored in every MAE-CLIP export,
so evaluation reruns with exactly the tokenizer the model was trained with, offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer

from videomae.text.vocab import SHIPPED_VOCABULARY

__all__ = ["CaptionTokenizer", "load_tokenizer"]

# Names the special tokens carry in the vocabularies we read (ours, CLIP's, BERT-style ones).
_ALIASES = {
    "pad": ("<pad>", "[PAD]"),
    "sot": ("<sot>", "<|startoftext|>", "[CLS]", "<s>"),
    "eot": ("<eot>", "<|endoftext|>", "[SEP]", "</s>"),
    "mask": ("<mask>", "[MASK]"),
}


class CaptionTokenizer:
    """Batches of captions as ``int64 [B, context_length]`` token ids.

    Args:
        tokenizer: a ``tokenizers.Tokenizer``; missing special tokens are added to it.
        context_length: tokens per caption, start and end included; longer captions are cut before the end token.
    """

    def __init__(self, tokenizer: Tokenizer, context_length: int) -> None:
        if context_length < 3:
            raise ValueError(f"context_length={context_length}: needs room for <sot>, one token and <eot>")
        self.tokenizer = tokenizer
        self.context_length = context_length
        ids = {}
        for role, names in _ALIASES.items():
            found = [tokenizer.token_to_id(n) for n in names if tokenizer.token_to_id(n) is not None]
            if not found:
                tokenizer.add_special_tokens([AddedToken(names[0], special=True)])
                found = [tokenizer.token_to_id(names[0])]
            ids[role] = found[0]
        self.pad_id, self.sot_id, self.eot_id, self.mask_id = ids["pad"], ids["sot"], ids["eot"], ids["mask"]
        self.special_ids = frozenset(ids.values())

    @property
    def vocab_size(self) -> int:
        """Token ids run from 0 to ``vocab_size - 1`` (added special tokens included)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def to_json(self) -> str:
        """The tokenizer as ``tokenizers`` JSON (special tokens added here included): see :func:`load_tokenizer`."""
        return self.tokenizer.to_str()

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids ``int64 [len(texts), context_length]``; each row ``<sot> ... <eot>`` then ``<pad>``."""
        out = torch.full((len(texts), self.context_length), self.pad_id, dtype=torch.int64)
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        for i, enc in enumerate(encodings):
            ids = [self.sot_id, *enc.ids[: self.context_length - 2], self.eot_id]
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
        return out

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens each caption needs, start and end included, before any cut to ``context_length``."""
        return [len(enc.ids) + 2 for enc in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: torch.Tensor) -> list[str]:
        """Texts of token ids ``[B, L]`` (special tokens dropped)."""
        rows = [[t for t in row.tolist() if t not in self.special_ids] for row in ids]
        return self.tokenizer.decode_batch(rows, skip_special_tokens=False)


def load_tokenizer(source: str | Path | None, context_length: int, *, json_text: str | None = None) -> CaptionTokenizer:
    """A :class:`CaptionTokenizer` from a ``tokenizers`` JSON file (``None``: the packaged vocabulary) or from the
    JSON text itself (``json_text``, as an export stores it).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a ``tokenizers`` JSON (the message names it).
    """
    if json_text is not None:
        return CaptionTokenizer(Tokenizer.from_str(json_text), context_length)
    path = Path(source) if source is not None else SHIPPED_VOCABULARY
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no tokenizer file; give a tokenizers JSON (e.g. a CLIP tokenizer.json)")
    try:
        return CaptionTokenizer(Tokenizer.from_file(str(path)), context_length)
    except Exception as err:  # tokenizers raises a bare Exception on a malformed file
        raise ValueError(f"{path}: not a tokenizers JSON file: {err}") from None
