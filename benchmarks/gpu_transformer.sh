#!/usr/bin/env bash
# Every check of the native transformer that needs a GPU, in one go (a lent device's time is
# short): the attention, RMSNorm and RoPE kernels at real shapes against float64, the model
# against HF on the Triton kernels, CUDA-graph decoding against eager, then the benchmark
# tables. The device image has torch, triton, transformers, rich and pytest: nothing to carry.
#   run: bash benchmarks/gpu_transformer.sh [--skip-hf]
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
status=0
python -m pytest -q -p no:cacheprovider -k "gpu or cuda or triton" tests/test_kernels.py tests/test_transformer.py || status=$?
python benchmarks/transformer_gpu.py "$@" || status=$?
exit $status
