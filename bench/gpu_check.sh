#!/usr/bin/env bash
# The GPU check, in one go (about 6 minutes on one H100/H200; each part has its own time limit):
#   1. bench/model_step.py, ViT-B and ViT-g pretraining steps in bf16 against transformers' VideoMAE (clips/s, MFU,
#      peak memory);
#   2. bench/collectives_check.py under torchrun on CUDA (the process group a run creates, every collective helper);
#   3. the engine: 30 steps of ViT-B (launch/pretrain.py, DeepSpeed ZeRO-1, bf16) on real clips (clips/s, data-wait
#      share);
#   4. videomae doctor on the same config.
# Writes gpu_check.md (markdown, for bench/RESULTS.md) and one log per part to $OUT (the device tool's folder), else
# runs/gpu_check/. Exits non-zero when a part failed; the others still run.
#
# On a GPU machine without network, first here: `bash bench/gpu_prepare.sh` (wheels in .whl/, real clips in
# .gpucheck/), then on the machine, carrying .whl and .gpucheck: `bash bench/gpu_check.sh`.
# GPU_CHECK_SMOKE=1 runs the same parts at toy sizes on a CPU (to check the script itself).
set -uo pipefail
cd "$(dirname "$0")/.."

OUTDIR=${OUT:-runs/gpu_check}
SMOKE=${GPU_CHECK_SMOKE:-0}
PY=${PYTHON:-python3}
mkdir -p "$OUTDIR"
REPORT=$OUTDIR/gpu_check.md
: >"$REPORT"

if ! "$PY" -c "import deepspeed, av" 2>/dev/null; then
    [[ -d .whl ]] || { echo "deepspeed/av missing and no .whl/: run bench/gpu_prepare.sh where pip works" >&2; exit 2; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 2
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
TORCHRUN=("$PY" -m torch.distributed.run)
failed=()

# part NAME LIMIT_S CMD...: run CMD with a time limit, log to $OUTDIR/NAME.log, append its stdout to the report.
part() {
    local name=$1 limit=$2
    shift 2
    echo "== $name" >&2
    local start=$SECONDS
    timeout "$limit" "$@" >"$OUTDIR/$name.out" 2>"$OUTDIR/$name.log"
    local code=$?
    {
        echo; echo "### $name ($((SECONDS - start)) s)"; echo
        if [[ $name == doctor ]]; then echo '```'; cat "$OUTDIR/$name.out"; echo '```'; else cat "$OUTDIR/$name.out"; fi
    } >>"$REPORT"
    if ((code != 0)); then
        failed+=("$name")
        { echo; echo "**FAILED** (exit $code$( ((code == 124)) && echo ", time limit ${limit} s")); last lines:"
          echo; echo '```'; tail -15 "$OUTDIR/$name.log"; echo '```'; } >>"$REPORT"
    fi
}

{
    echo "## GPU check ($(date -u +%Y-%m-%d), \`bash bench/gpu_check.sh\`)"
    echo
    echo "- device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo cpu)"
    echo "- $("$PY" -c 'import torch, deepspeed; print(f"torch {torch.__version__}, deepspeed {deepspeed.__version__}")' 2>/dev/null)"
} >>"$REPORT"

if [[ $SMOKE == 1 ]]; then
    step_b=(--size tiny --batch 2 --frames 4 --img 64 --precision fp32 --warmup 0 --steps 1)
    step_g=(--size tiny --batch 1 --frames 4 --img 64 --precision fp32 --warmup 0 --steps 1 --with-cp)
    "$PY" -m videomae demo-data "$OUTDIR/demo_data" --quiet
    config=pretrain/demo  # kind/name: videomae doctor takes finetune recipes too (finetune/demo)
    data=("data.manifests=[$OUTDIR/demo_data/train_unlabeled.csv]" "data.data_root=$OUTDIR/demo_data")
    sizes=(train.batch_size=4 data.num_workers=1 train.max_steps=6 train.log_every=3 train.save_every=6)
else
    step_b=(--size base --batch 32 --frames 16 --img 224 --precision bf16 --warmup 3 --steps 10)
    step_g=(--size giant --batch 8 --frames 16 --img 224 --precision bf16 --warmup 2 --steps 5)
    manifest=.gpucheck/real_clips.csv
    { echo path; for i in $(seq 64); do ls .gpucheck/videos/*.avi; done; } | sed 's#^.gpucheck/videos/##' >"$manifest"
    config=vit_b_hybrid
    data=("data.manifests=[$manifest]" "data.data_root=.gpucheck/videos")
    sizes=(train.batch_size=32 data.num_workers=12 train.max_steps=30 train.log_every=10 train.save_every=30)
fi
run=(train.epochs=null train.warmup_epochs=null train.warmup_steps=5 train.picture_every=0 resume=never)

part model_step_vit_b 150 "$PY" bench/model_step.py "${step_b[@]}" --markdown
part model_step_vit_g 240 "$PY" bench/model_step.py "${step_g[@]}" --markdown
part collectives 120 "${TORCHRUN[@]}" --nproc_per_node 2 --master_port 29517 bench/collectives_check.py
part engine_vit_b 300 "$PY" launch/pretrain.py --config "$config" "${data[@]}" "${sizes[@]}" "${run[@]}" \
    "output_dir=$OUTDIR/engine"
"$PY" - "$OUTDIR/engine/metrics.jsonl" >>"$REPORT" <<'PYEOF'
import json, sys
from pathlib import Path

path = Path(sys.argv[1])
rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
print("\n| step | loss | clips/s | data-wait share | MFU |\n| --- | --- | --- | --- | --- |")
for r in rows:
    mfu = "-" if r.get("mfu") is None else f"{r['mfu']:.1%}"
    print(f"| {r['step']} | {r['loss']:.4f} | {r['clips_per_s']:.1f} | {r['data_wait']:.0%} | {mfu} |")
PYEOF
part doctor 240 "$PY" -m videomae doctor --config "$config" "${data[@]}" "${sizes[@]}" "${run[@]}" \
    "output_dir=$OUTDIR/doctor"

cat "$REPORT"
if ((${#failed[@]})); then
    echo "failed parts: ${failed[*]} (logs in $OUTDIR)" >&2
    exit 1
fi
