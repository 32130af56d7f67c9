"""What a MAE-CLIP model of the demo set tells apart: the colour its captions name, and each half of the class.

* ``text_<cue>``: the mean cosine similarity of the text embeddings of two demo captions that differ in that cue
  alone (same phrasing, every other word equal), over every phrasing and value. Near 1: the text tower maps both
  to the same place, so it cannot tell that cue apart; the lower, the better it does.
* ``zs_shape`` / ``zs_direction``: the run's zero-shot predictions (class-name prompts) scored on one half of the
  class only (chance 1/3 and 1/2).

A contrastive model that matches clips to captions by colour alone has ``text_colour`` far below the others and
zero-shot halves near chance: it learnt the colour, which the class prompts never name.
"""

from __future__ import annotations

from itertools import product
from pathlib import Path

import torch

from videomae.checkpoint_maeclip import load_maeclip
from videomae.config import load_config
from videomae.data.demo import DIRECTIONS, SHAPES
from videomae.data.demo_captions import COLOUR_NAMES, VIDEO_TEMPLATES
from videomae.evaluation.zero_shot import class_embeddings, class_prompts, embed_pairs
from videomae.methods.maeclip import val_dataset
from videomae.text import CaptionTokenizer, load_tokenizer

__all__ = ["clip_cue_scores", "text_separation"]

_VALUES = {"colour": COLOUR_NAMES, "shape": SHAPES, "direction": DIRECTIONS}


def _caption_pairs(cue: str) -> list[tuple[str, str]]:
    """Every demo caption beside the same caption with ``cue`` moved to its next value."""
    pairs = []
    for template, colour, shape, direction in product(VIDEO_TEMPLATES, *_VALUES.values()):
        words = {"colour": colour, "shape": shape, "direction": direction}
        values = _VALUES[cue]
        other = {**words, cue: values[(values.index(words[cue]) + 1) % len(values)]}
        pairs.append((template.format(**words), template.format(**other)))
    return pairs


@torch.no_grad()
def text_separation(model: torch.nn.Module, tokenizer: CaptionTokenizer) -> dict[str, float]:
    """``text_<cue>``: mean cosine similarity of caption pairs that differ in ``cue`` alone (see the module)."""
    scores = {}
    for cue in _VALUES:
        first, second = zip(*_caption_pairs(cue), strict=True)
        a, b = (model.encode_text(tokenizer(list(texts))).float() for texts in (first, second))
        scores[f"text_{cue}"] = (a * b).sum(dim=-1).mean().item()
    return scores


@torch.no_grad()
def clip_cue_scores(run: Path, val: Path, data_root: Path) -> dict[str, float]:
    """:func:`text_separation` of a MAE-CLIP run's whole-model export, and its zero-shot predictions on ``val``
    (under ``data_root``) scored per half of the class."""
    model, info = load_maeclip(run)
    tokenizer = load_tokenizer(None, info["context_length"], json_text=info["tokenizer"])
    cfg = load_config(run / "config.yaml", [f"zero_shot.val={val}", f"zero_shot.data_root={data_root}"])
    dataset = val_dataset(cfg)
    names = dataset.label_names
    classes = class_embeddings(model, tokenizer, class_prompts(names, cfg.zero_shot.templates))
    video, _, labels, _ = embed_pairs(model, tokenizer, dataset, cfg.zero_shot.batch_size)
    predicted = (video @ classes.T).argmax(dim=1)
    halves = {}
    for i, half in enumerate(("shape", "direction")):
        value = torch.tensor([SHAPES.index(n.split("_")[0]) if i == 0 else DIRECTIONS.index(n.split("_")[1])
                              for n in names])  # fmt: skip
        halves[f"zs_{half}"] = (value[predicted] == value[labels]).float().mean().item()
    return text_separation(model, tokenizer) | halves
