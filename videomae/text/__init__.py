"""Captions for the text tower: a ``tokenizers`` BPE with a packaged vocabulary (see :mod:`videomae.text.tokenizer`)."""

from videomae.text.tokenizer import CaptionTokenizer, load_tokenizer
from videomae.text.vocab import SHIPPED_VOCABULARY, train_vocabulary

__all__ = ["SHIPPED_VOCABULARY", "CaptionTokenizer", "load_tokenizer", "train_vocabulary"]
