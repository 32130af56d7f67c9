"""The DeepSpeed pretraining engine.

Modules, one job each: ``dist`` (process group, ranks from torchrun/deepspeed/SLURM; the only user of
``torch.distributed``), ``deepspeed_setup`` (DeepSpeed config from our dataclasses, ``initialize``, fp32
consolidation; the only importer of ``deepspeed``), ``optim`` (parameter groups, per-step lr/wd), ``data_setup``
(dataset, sampler, resumable loader), ``loop`` (masks + one training micro-step), ``checkpointing`` (atomic
checkpoints, auto-resume, RNG state), ``logging_utils`` (rank-0 metric sinks), ``pictures`` (reconstruction PNGs)
and ``trainer`` (``run_pretraining``: the run itself). Import the submodules directly; this package imports nothing,
so ``videomae.engine.dist`` stays light.
"""
