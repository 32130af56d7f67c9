#!/usr/bin/env bash
# The README's first command: set up, make the demo data, pretrain a tiny ViT with VideoMAE V2 dual masking under
# DeepSpeed on 2 CPU processes (a few minutes), and point at the results.
#
#   bash launch/demo.sh [key=value ...]        # overrides go to launch/pretrain.py, e.g. train.max_steps=100
#
# Writes runs/demo/: config.yaml, metrics.jsonl, tensorboard/, checkpoints/, pictures/step_*.png (original |
# masked input | reconstruction), export/model.safetensors. Rerunning resumes (or finishes at once); delete
# runs/demo to start over.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -x .venv/bin/python ]]; then
    echo "== creating .venv and installing videomae (first run only)"
    python3 -m venv .venv && bash launch/install.sh .venv -e .   # the torch build for this machine: see install.sh
fi
export PATH="$PWD/.venv/bin:$PATH"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# (Re)write the demo data when missing or drawn by an older version of videomae/data/demo.py.
if ! python -c "import json, sys; from videomae.data.demo import DATA_VERSION
sys.exit(json.load(open('demo_data/demo.json')).get('version') != DATA_VERSION)" 2>/dev/null \
        || [[ ! -f demo_data/train_unlabeled.csv ]]; then
    echo "== writing the demo data to demo_data/"
    videomae demo-data demo_data --quiet
fi

echo "== pretraining (2 processes, DeepSpeed CPU accelerator, gloo)"
# A rendezvous port free right now, so a second demo (or any job holding deepspeed's default 29500) is no clash.
port=$(python -c "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])")
deepspeed --num_gpus 2 --master_port "$port" launch/pretrain.py --config demo "$@"

out=$(python launch/pretrain.py --config demo --print-output-dir "$@")
python -m videomae.launching.summary "$out"
