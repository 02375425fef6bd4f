#!/usr/bin/env bash
# The GPU path end to end, at most 8 minutes on one GPU: CQT on the device against librosa,
# labelling in bf16, stage-1 steps in bf16-mixed with the CQT on the device (utilisation,
# waiting for data, peak memory), DDP on every GPU present, transcription.
# Writes bench/gpu_results.{json,md}; commit them with the GPU's name (in the .md).
#
#   bench/gpu_check.sh                          # on a CUDA machine
#   bench/gpu_check.sh --accelerator cpu --quick  # a smoke run of the same steps, any machine
#
# Extra arguments go to bench/gpu_check.py (--teacher, --out, --scratch).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export WANDB_MODE=offline CHORDKD_NO_PROGRESS=1
exec timeout --signal=INT --kill-after=20 "${GPU_CHECK_LIMIT_S:-480}" "$PY" bench/gpu_check.py "$@"
