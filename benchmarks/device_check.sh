#!/usr/bin/env bash
# First check on one GPU (under 8 minutes in all): the multi-replica path on the GPU split into two
# logical GPUs (MirroredStrategy, XLA auto, bfloat16 then float16: the demo's small model trains and
# evaluates, its weights stay finite), then XLA + bfloat16 training step time of SFPN, HFGD OS=4 and
# HFGD OS=2 (ResNet-50, 513x513, the largest batch up to 16 that fits), MFU, peak memory and eval
# images/s; see benchmarks/device_check.py. Extra arguments go to it, e.g. --output_json=r.json
# (written after each part, so what finished survives the time limit).
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}"
exec timeout "${DEVICE_CHECK_TIMEOUT:-470}" python3 -m benchmarks.device_check "$@"
