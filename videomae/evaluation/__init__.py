"""Evaluation, shared by training runs and inference: multi-view score averaging (``multiview``), accuracy and
confusion (``metrics``), result files (``reports``: confusion picture, predictions CSV) and frozen-encoder probes
(``probes``). It imports neither ``videomae.engine`` nor ``videomae.inference``; a run passes its cross-rank
gather in. Import the submodules directly.
"""
