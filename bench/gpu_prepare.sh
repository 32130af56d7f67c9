#!/usr/bin/env bash
# Prepare, on a machine with the package registries, what bench/gpu_check.sh needs on a GPU machine without network:
#   .whl/       wheels of what that machine lacks (deepspeed built here, PyAV and DeepSpeed's missing needs), for
#               CPython 3.12 x86-64, at the versions installed in this environment
#   .gpucheck/  real clips (the shared real videos) for the engine run
# Both are git-ignored; name them in the device run's carry (about 55 MB together).
#
#   bash bench/gpu_prepare.sh            # uses .venv/bin/python; PYTHON=... to choose another
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
REAL_VIDEOS=${VIDEOMAE_REAL_VIDEOS:-../shared/data/real_videos}

version() { "$PY" -c "from importlib.metadata import version; print(version('$1'))"; }

rm -rf .whl && mkdir -p .whl .gpucheck/videos
"$PY" -m pip wheel -q --no-deps -w .whl "deepspeed==$(version deepspeed)"
# DeepSpeed's needs that the GPU image lacks (it has msgpack, ninja, psutil, py-cpuinfo, packaging, tqdm, ...).
pinned=()
for name in av hjson pydantic pydantic-core annotated-types typing-inspection; do
    pinned+=("$name==$(version "$name")")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${pinned[@]}"
cp "$REAL_VIDEOS"/*.avi .gpucheck/videos/
du -sh .whl .gpucheck
