#!/usr/bin/env bash
# Issue 16's device check in one call on a CUDA machine: grid_gpu.py (surface and training
# rates), then hessian_gpu.py (ResNet-56 top-5 eigenpairs). Needs only the repository and a Python
# with torch, numpy, scipy, h5py, pyyaml, matplotlib and tqdm (the lent H200's image has them);
# nothing is installed. Tables and logs go to $OUT when it is set (the device tool), else to
# benchmarks/results/. Extra arguments go to grid_gpu.py (e.g. --points 4 to finish sooner).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out=${OUT:-benchmarks/results}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 benchmarks/grid_gpu.py --out "$out/grid_gpu.md" "$@" 2>&1 | tee "$out/grid_gpu.log"
python3 benchmarks/hessian_gpu.py --out "$out/hessian_gpu.md" 2>&1 | tee "$out/hessian_gpu.log"
