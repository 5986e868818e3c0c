#!/usr/bin/env bash
# The GPU check, in one command on a machine with an NVIDIA GPU: bash benchmarks/gpu_check.sh
# A .venv-gpu with PyPI's own torch (or the Python in $GPU_PYTHON that has a CUDA torch and autocomp installed), then
# the GPU tests and the full-size and candidate-speed benchmarks on the GPU, recorded in benchmarks/RESULTS.md.
# Each step's output goes to the terminal and to benchmarks/gpu-logs/<date-time>/<step>.log; the first failure stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
logs="benchmarks/gpu-logs/$(date +%Y-%m-%d-%H%M)"
mkdir -p "$logs"
py=${GPU_PYTHON:-.venv-gpu/bin/python}

# step NAME COMMAND...: run COMMAND, its output (stderr too) to the terminal and to $logs/NAME.log.
step() {
  local name=$1
  shift
  echo "== $name: $*" | tee "$logs/$name.log"
  "$@" 2>&1 | tee -a "$logs/$name.log"
}

# The project installs from PyPI alone: torch's default wheel (CUDA on Linux; no CPU constraint file), then autocomp.
install() {
  rm -rf .venv-gpu
  python3 -m venv .venv-gpu
  .venv-gpu/bin/pip install --upgrade pip
  .venv-gpu/bin/pip install torch
  .venv-gpu/bin/pip install -e '.[test]'
}

# The driver sees the GPU, and so does this torch (get_device_name fails without CUDA).
gpu() {
  nvidia-smi
  "$py" -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'
}

[ -x "$py" ] || step install install
step gpu gpu
# Fashion-MNIST is there (Debian's dataset-fashion-mnist is installed when missing and apt is usable).
step data bash scripts/ensure-data.sh
# The tests marked gpu pass (pytest fails, code 5, if none is collected).
step tests "$py" -m pytest -q -m gpu tests
# Full-size 224x224 images on the GPU in bf16: peak memory flat in the data set's size, and the speeds.
step full-size "$py" benchmarks/full_size.py --device cuda --precision bf16 --train-sizes 5000 20000 \
  --data-workers 8 --cache-mb 4096 --record
# resnet56 proxy candidates per second at 32x32 (the goal: 20x this CPU's figure in RESULTS.md), fp32 and bf16.
step speed-fp32 "$py" benchmarks/fidelity.py --speed 20 --device cuda
step speed-bf16 "$py" benchmarks/fidelity.py --speed 20 --device cuda --precision bf16
echo "all steps passed; logs in $logs"
