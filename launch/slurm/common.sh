#!/usr/bin/env bash
# Shared by launch/slurm/*.sbatch (sourced; the job runs from the submission directory, the repository root).
#
# run_stage ENTRY CONFIG [--dry-run] [key=value ...]
#   Runs ENTRY (launch/pretrain.py, launch/finetune.py) with CONFIG on every task through srun, ranks from SLURM's
#   variables (videomae/engine/dist.py maps SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID/SLURM_JOB_NODELIST).
#   Preemption-safe: the job script is sent USR1 before the time limit (#SBATCH --signal=B:USR1@120); the trap
#   asks the run to checkpoint and stop (stop file + USR1 to every task), waits for it, then requeues the job; the
#   requeued job auto-resumes from the newest complete checkpoint in output_dir.
#   --dry-run prints what rank 0 would see (the same mapping dist.py applies inside srun) and starts nothing; off the
#   cluster (no SLURM_NTASKS) the job's size comes from the script's #SBATCH lines, or from --nodes N,
#   --ntasks-per-node N, --gpus-per-node N given right after --dry-run, as sbatch would take them. It fails (status
#   2) on an empty data.manifests or a manifest file that does not exist.
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
        if [[ -z "${SLURM_NTASKS:-}" ]]; then
            job_size "${BASH_SOURCE[1]}" "$@"
            shift "$JOB_SIZE_ARGS"
            echo "# off the cluster: ${JOB_NODES} node(s) x ${JOB_TASKS_PER_NODE} task(s) from ${JOB_SIZE_FROM};" \
                "showing rank 0 (SLURM names the hosts at start)"
            export RANK=0 LOCAL_RANK=0 NODE_RANK=0 WORLD_SIZE=$((JOB_NODES * JOB_TASKS_PER_NODE))
            export LOCAL_WORLD_SIZE=$JOB_TASKS_PER_NODE MASTER_ADDR=${MASTER_ADDR:-first-node-of-the-job}
        fi
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

# job_size SCRIPT [ARGS...]: the job's nodes and tasks per node as sbatch would give them: --nodes/-N,
# --ntasks-per-node and --gpus-per-node at the start of ARGS win over SCRIPT's #SBATCH lines; tasks per node is
# --ntasks-per-node, else --gpus-per-node (one task per GPU), else 1, a --gpus-per-node in ARGS counting over the
# script's --ntasks-per-node. Sets JOB_NODES, JOB_TASKS_PER_NODE, JOB_SIZE_FROM and JOB_SIZE_ARGS (how many of
# ARGS it used). A node range (2-4) counts its lower bound.
job_size() {
    local script=$1 nodes=1 ntasks="" gpus="" from="$1's #SBATCH lines" used=0 cli=0 used_gpus=0 used_ntasks=0
    shift
    _job_size_option() {  # NAME VALUE: keep a size option, 1 if NAME is none
        case $1 in
            -N | --nodes) nodes=${2%%-*} ;;
            --ntasks-per-node) ntasks=$2 used_ntasks=$cli ;;
            --gpus-per-node) gpus=${2##*:} used_gpus=$cli ;;  # --gpus-per-node=a100:8 -> 8
            *) return 1 ;;
        esac
    }
    local words
    while read -r -a words; do  # "#SBATCH --nodes=8", "#SBATCH -N 8", "#SBATCH --nodes 8  # comment"
        if [[ ${words[1]:-} == *=* ]]; then
            _job_size_option "${words[1]%%=*}" "${words[1]#*=}" || true
        elif [[ ${#words[@]} -ge 3 ]]; then
            _job_size_option "${words[1]}" "${words[2]}" || true
        fi
    done < <(grep '^#SBATCH' "$script")
    cli=1
    while [[ $# -gt 0 ]]; do
        if [[ $1 == --*=* ]] && _job_size_option "${1%%=*}" "${1#*=}"; then
            shift; used=$((used + 1))
        elif [[ $# -ge 2 && $1 != *=* ]] && _job_size_option "$1" "$2"; then
            shift 2; used=$((used + 2))
        else
            break
        fi
        from="the command line and $script's #SBATCH lines"
    done
    unset -f _job_size_option
    local per_node=${ntasks:-${gpus:-1}}
    if [[ $used_gpus == 1 && $used_ntasks == 0 ]]; then
        per_node=$gpus
    fi
    if ! [[ $nodes =~ ^[1-9][0-9]*$ && $per_node =~ ^[1-9][0-9]*$ ]]; then
        echo "$script: cannot tell the job's size (nodes '$nodes', tasks per node '$per_node'); give" \
            "--nodes N --gpus-per-node G after --dry-run" >&2
        exit 2
    fi
    JOB_NODES=$nodes JOB_TASKS_PER_NODE=$per_node JOB_SIZE_FROM=$from JOB_SIZE_ARGS=$used
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
