#!/usr/bin/env bash
# Install videomae into a virtual environment with the torch build that suits this machine.
#
#   bash launch/install.sh VENV [PIP_ARGS ...]   # creates VENV if missing; default PIP_ARGS: -e .
#   bash launch/install.sh .venv -e ".[test]"    # what CI and the README's test command install
#   bash launch/install.sh --print-choice        # which torch build would be taken, and why; installs nothing
#
# The torch build, said on the first line:
#   TORCH_INDEX_URL=URL   that index is added for torch (a site mirror, a cuXXX index); TORCH_INDEX_URL=pypi: none
#   nvidia-smi answers    PyPI's torch (the CUDA build)
#   no nvidia-smi         PyTorch's CPU index (VIDEOMAE_CPU_INDEX, default https://download.pytorch.org/whl/cpu) when
#                         it answers within 10 s: torch's +cpu build, about 1 GB in the venv instead of about 6 GB;
#                         otherwise PyPI's torch (the CUDA build, which runs on the CPU too), said so.
# With an index added, pip takes torch and torchvision from it (a +cpu version ranks above the same release on
# PyPI) and everything else from PyPI, within the ranges of setup.cfg.
set -euo pipefail
cd "$(dirname "$0")/.."

cpu_index=${VIDEOMAE_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

# choose_index: sets INDEX (empty: PyPI alone) and REASON.
choose_index() {
    if [[ "${TORCH_INDEX_URL:-}" == pypi ]]; then
        INDEX="" REASON="TORCH_INDEX_URL=pypi: PyPI's torch"
    elif [[ -n "${TORCH_INDEX_URL:-}" ]]; then
        INDEX=$TORCH_INDEX_URL REASON="TORCH_INDEX_URL: torch from $TORCH_INDEX_URL"
    elif command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
        INDEX="" REASON="nvidia-smi lists a GPU: PyPI's torch (CUDA build)"
    elif python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/torch/', timeout=10)" \
            "$cpu_index" 2>/dev/null; then
        INDEX=$cpu_index REASON="no GPU (no nvidia-smi): torch's CPU build from $cpu_index"
    else
        INDEX="" REASON="no GPU, but $cpu_index does not answer: PyPI's torch (CUDA build, about 6 GB; runs on the CPU)"
    fi
}

choose_index
if [[ "${1:-}" == "--print-choice" ]]; then
    echo "torch: $REASON"
    echo "pip index: ${INDEX:-PyPI only}"
    exit 0
fi
venv=${1:?usage: bash launch/install.sh VENV [PIP_ARGS ...] (or --print-choice)}
shift
[[ $# -gt 0 ]] || set -- -e .

echo "== installing into $venv; torch: $REASON"
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
index_args=()
[[ -z "$INDEX" ]] || index_args=(--extra-index-url "$INDEX")
"$venv/bin/pip" install -q "${index_args[@]}" "$@"
