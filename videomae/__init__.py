"""videomae: pretrain video foundation models (VideoMAE V2 recipe) on DeepSpeed."""

__version__ = "0.1.0"
