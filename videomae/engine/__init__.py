"""The DeepSpeed trainer every training method shares (the methods themselves are :mod:`videomae.methods`).

Modules, one job each: ``method`` (what a method supplies and the context it gets), ``session`` (process group,
logging, seeds, resume point), ``trainer`` (engine, resume, checkpoints, export), ``epoch_loop`` (batches and
steps of an epoch), ``loop`` (the shared backward/step), ``step_stats`` (step means and log windows), ``dist``
(process group, ranks from torchrun/deepspeed/SLURM; the only user of ``torch.distributed``), ``deepspeed_setup``
(DeepSpeed config from our dataclasses, ``initialize``, fp32 consolidation; the only importer of ``deepspeed``)
behind ``ds_engine`` (the typed boundary), ``optim`` and ``layer_decay`` (parameter groups, per-step lr/wd),
``data_setup`` (datasets from the config, sampler, resumable loader), ``checkpointing`` (atomic checkpoints,
auto-resume), ``rng_state``, ``logging_utils``, ``bad_sample_meter``, ``save_guard``, ``compiling``,
``throughput``, ``export`` (``videomae export``: consolidating the trainer's checkpoints). ``README.md``
describes the design. The launch scripts' shared code, the checks before launch and ``videomae doctor`` (with its
collective checks) are :mod:`videomae.launching`. Import the submodules directly; this package imports nothing, so
``videomae.engine.dist`` stays light.
"""
