# Shared by launch/slurm/*.sbatch (sourced; the job runs from the submission directory, the repository root).
#
# run_stage ENTRY CONFIG [--dry-run] [key=value ...]
#   Runs ENTRY (launch/pretrain.py, launch/finetune.py) with CONFIG on every task through srun, ranks from SLURM's
#   variables (videomae/engine/dist.py maps SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID/SLURM_JOB_NODELIST).
#   Preemption-safe: the job script is sent USR1 before the time limit (#SBATCH --signal=B:USR1@120); the trap
#   asks the run to checkpoint and stop (stop file + USR1 to every task), waits for it, then requeues the job; the
#   requeued job auto-resumes from the newest complete checkpoint in output_dir.
#   --dry-run prints what one task would see (the same mapping dist.py applies inside srun) and starts nothing.
#   DOCTOR=1 runs `python -m videomae doctor` for the same config through the same srun line instead of the run
#   (a minute's preflight on the job's nodes: PASS/FAIL table, exit status 1 on any FAIL); with --dry-run it prints
#   that command first.

run_stage() {
    local entry=$1 config=$2
    shift 2
    PYTHON=${PYTHON:-python}
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
    export TORCH_NCCL_ASYNC_ERROR_HANDLING=1
    # The process group is cpu:gloo,cuda:nccl (videomae/engine/dist.py): gloo carries the run's small CPU
    # collectives between nodes. Where the hostname resolves to an interface the nodes cannot reach each other on,
    # name the interface for both (videomae doctor's collective rows fail otherwise), e.g. GLOO_SOCKET_IFNAME=ib0.
    # NCCL's exclusion syntax (^lo, =eth0) means nothing to gloo: copy plain names only.
    if [[ -n "${NCCL_SOCKET_IFNAME:-}" && -z "${GLOO_SOCKET_IFNAME:-}" && ${NCCL_SOCKET_IFNAME} != [\^=]* ]]; then
        export GLOO_SOCKET_IFNAME=$NCCL_SOCKET_IFNAME
    fi

    local srun_line=(srun --kill-on-bad-exit=1 --cpu-bind=none)
    local doctor=("$PYTHON" -m videomae doctor --stage "$(basename "$entry" .py)" --config "$config")
    if [[ "${1:-}" == "--dry-run" ]]; then
        shift
        if [[ "${DOCTOR:-0}" == 1 ]]; then
            echo "doctor: ${srun_line[*]} ${doctor[*]} $*"
        fi
        exec "$PYTHON" "$entry" --config "$config" --dry-run "$@"
    fi
    if [[ "${DOCTOR:-0}" == 1 ]]; then
        "${srun_line[@]}" "${doctor[@]}" "$@"
        return
    fi

    OUTPUT_DIR=$("$PYTHON" "$entry" --config "$config" --print-output-dir "$@")
    mkdir -p "$OUTPUT_DIR" logs
    trap on_preempt USR1
    rm -f "$OUTPUT_DIR/CHECKPOINT_AND_STOP"
    "${srun_line[@]}" "$PYTHON" "$entry" --config "$config" "$@" &
    SRUN_PID=$!
    # `wait` returns early when the trap fires; the trap then waits for srun itself.
    wait "$SRUN_PID"
}

on_preempt() {
    echo "$(date -u +%FT%TZ) USR1: asking the run to checkpoint and stop, then requeueing ${SLURM_JOB_ID}"
    touch "$OUTPUT_DIR/CHECKPOINT_AND_STOP"      # polled by rank 0 after every step
    kill -USR1 "$SRUN_PID" 2>/dev/null || true     # srun forwards USR1 to every task as well
    wait "$SRUN_PID" || true
    rm -f "$OUTPUT_DIR/CHECKPOINT_AND_STOP"
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
}
