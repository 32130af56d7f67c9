"""Training methods on the shared trainer (:mod:`videomae.engine`): each supplies its model, its loss per batch,
its per-step work and its export (:class:`videomae.engine.method.Method`).

``pretrain`` (VideoMAE V2 dual masking; ``run_pretraining``) with ``pictures`` (reconstruction PNGs); ``finetune``
(supervised classification and distillation; ``run_finetuning``, ``evaluate_only``) with ``finetune_data``
(labelled and evaluation sets), ``finetune_init`` (init with head remapping), ``finetune_recipe`` (Mixup/CutMix,
losses, FLOPs), ``distill`` (the frozen teacher and the student module) and ``validation`` (multi-view scoring
across ranks, on :mod:`videomae.evaluation`). Import the submodules directly.
"""
