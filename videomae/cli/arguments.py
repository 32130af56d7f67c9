"""Arguments several sub-commands share, declared once."""

from __future__ import annotations

import argparse

from videomae.data.readers import DEFAULT_FRAME_TEMPLATE

__all__ = ["add_frame_template"]


def add_frame_template(parser: argparse.ArgumentParser) -> None:
    """``--frame-template``: the file names of frame folders (default ``img_{:05d}.jpg``)."""
    parser.add_argument(
        "--frame-template", default=DEFAULT_FRAME_TEMPLATE, help=f"frame file names (default {DEFAULT_FRAME_TEMPLATE})"
    )
