#!/usr/bin/env bash
# The GPU suite on one H100/H200 (<= 8 minutes): BERT-base 128/512 bertforge vs the HF recipe,
# ModernBERT-base 512; one JSON per run under bench/gpu/results/, named for the device.
#   bench/gpu_suite.sh                 # on the GPU machine, from the repository root
#   bench/gpu_suite.sh --cpu-smoke     # the same code path with tiny models on CPU
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/gpu/results}"
if [[ "${1:-}" == "--cpu-smoke" ]]; then out="${OUT:-/tmp/gpu_suite_smoke}"; fi
export TOKENIZERS_PARALLELISM=false
timeout 480 "${PYTHON:-python}" bench/gpu/gpu_suite.py --out "$out" "$@"
