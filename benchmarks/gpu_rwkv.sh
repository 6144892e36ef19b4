#!/usr/bin/env bash
# Every RWKV check that needs a GPU, in one go (a lent device's time is short): the WKV
# kernels at real shapes against float64, the engine's CUDA-graph decode against eager,
# then the benchmark tables. Wheels the device image may lack come from .wheels/, which
# the device call must carry:
#   pip download --no-deps -d .wheels rwkv fla-core einops ninja rich markdown-it-py mdurl \
#       pygments pytest pluggy iniconfig pytest-timeout packaging
#   run: bash benchmarks/gpu_rwkv.sh   (carry: [".wheels"])
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python -m pip install -q --no-deps .wheels/*.whl 2>&1 | tail -1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
status=0
python -m pytest -q -p no:cacheprovider -k "gpu" tests/test_wkv4.py tests/test_rwkv.py || status=$?
python benchmarks/rwkv_gpu.py "$@" || status=$?
exit $status
