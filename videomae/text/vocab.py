"""Train a byte-level BPE vocabulary with ``tokenizers``: how the shipped ``bpe_4k.json`` was made, and a way to
make one from your own captions.

The shipped file was written by :func:`write_shipped_vocabulary` from the English prose of Python's own language
reference (``pydoc_data.topics``, PSF licence, in every CPython install), so it is rebuilt offline bit for bit::

    python -c "from videomae.text.vocab import write_shipped_vocabulary as w; w()"

Byte-level BPE encodes any text (no unknown token) and, like CLIP's, lower-cases it first.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

__all__ = ["SHIPPED_VOCABULARY", "SPECIAL_TOKENS", "train_vocabulary", "write_shipped_vocabulary"]

SHIPPED_VOCABULARY = Path(__file__).with_name("bpe_4k.json")
SPECIAL_TOKENS = ("<pad>", "<sot>", "<eot>", "<mask>")
"""Padding (id 0), start and end of text, and the masked-language token."""


def train_vocabulary(texts: Iterable[str], vocab_size: int = 4096) -> Tokenizer:
    """A lower-casing byte-level BPE tokenizer of ``vocab_size`` tokens (specials included) learnt from ``texts``."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def write_shipped_vocabulary(path: str | Path = SHIPPED_VOCABULARY) -> Path:
    """Rebuild the packaged vocabulary from Python's language reference (see the module docstring)."""
    import pydoc_data.topics

    paragraphs = [p for text in pydoc_data.topics.topics.values() for p in text.split("\n\n") if p.strip()]
    train_vocabulary(paragraphs).save(str(path), pretty=False)
    return Path(path)
