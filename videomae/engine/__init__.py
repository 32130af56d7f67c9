"""The DeepSpeed training engine: pretraining and supervised fine-tuning runs.

Modules, one job each: ``dist`` (process group, ranks from torchrun/deepspeed/SLURM; the only user of
``torch.distributed``), ``deepspeed_setup`` (DeepSpeed config from our dataclasses, ``initialize``, fp32
consolidation; the only importer of ``deepspeed``), ``optim`` (parameter groups, per-step lr/wd), ``layer_decay``
(layer-wise lr decay groups), ``data_setup`` (dataset, sampler, resumable loader), ``loop`` (masks + one training
micro-step, the shared backward/step), ``checkpointing`` (atomic checkpoints, auto-resume, RNG state),
``logging_utils`` (rank-0 metric sinks), ``pictures`` (reconstruction PNGs), ``run`` + ``stage`` (the run every
stage shares and the hooks a stage supplies), ``trainer`` (``run_pretraining``), ``finetune`` (``run_finetuning``,
``evaluate_only``) with ``finetune_data`` (labelled and evaluation sets), ``finetune_init`` (init with head remapping),
``finetune_recipe`` (Mixup/CutMix, losses, FLOPs), ``validation`` (multi-view scoring across ranks and eval
files, on :mod:`videomae.evaluation`). The launch scripts' shared code, the checks before launch and ``videomae
doctor`` are :mod:`videomae.launching`. Import the submodules directly; this package imports nothing, so
``videomae.engine.dist`` stays light.
"""
