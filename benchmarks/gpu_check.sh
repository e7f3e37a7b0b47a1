#!/usr/bin/env bash
# One prepared check for a lent CUDA machine (an H200): benchmarks/gpu_check.py under a time guard.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh     # JSON in $OUT/gpu_check.json, log beside it
#   bash benchmarks/gpu_check.sh                   # JSON in benchmarks/results/gpu_check.json
#   bash benchmarks/gpu_check.sh --steps epoch     # extra arguments go to gpu_check.py
#
# Measures (see gpu_check.py): nas-prune's trainer vs a per-sample DataLoader loop; seconds per
# epoch of ResNet-56 and VGG-16 at CIFAR size, bf16 + channels_last vs fp32; aggregate images/s
# of 1, 2 and 4 trials sharing the GPU (Ray fractional GPUs, or processes where Ray is missing).
# The helper keeps to --budget (420 s); `timeout` stops it at GPU_CHECK_TIMEOUT (450 s) whatever
# happens, and the JSON then holds what was measured. Without CUDA: a message, {"cuda": false},
# exit 0. PYTHON picks the interpreter (default python3, else python).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
PY=${PYTHON:-$(command -v python3 || command -v python)}
# the checkout itself, installed or not (a copy of the tree on a machine without network)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if [[ -n "${OUT:-}" ]]; then
    json="$OUT/gpu_check.json"
    mkdir -p "$OUT"
    exec > >(tee -a "$OUT/gpu_check.log") 2>&1
else
    json=benchmarks/results/gpu_check.json
fi
mkdir -p "$(dirname "$json")"

if ! "$PY" -c "import nas_prune" >/dev/null 2>&1; then
    echo "gpu_check: nas_prune does not import; pip install -q -e ."
    "$PY" -m pip install -q -e . || echo "gpu_check: pip install -e . failed" >&2
fi
cuda=0
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)" || cuda=$?
if [[ $cuda == 3 ]]; then
    # writes {"cuda": false} (keeps a file that holds GPU results) and says so
    "$PY" benchmarks/gpu_check.py --out "$json"
    exit 0
elif [[ $cuda != 0 ]]; then
    echo "gpu_check: torch does not import with $PY; nothing measured" >&2
    exit 1
fi

limit=${GPU_CHECK_TIMEOUT:-450}
export GPU_CHECK_COMMAND="bash benchmarks/gpu_check.sh${*:+ $*}${OUT:+ (OUT=$OUT)}"
echo "gpu_check: $GPU_CHECK_COMMAND; $PY; timeout ${limit} s"
rc=0
timeout --kill-after=20 "$limit" "$PY" benchmarks/gpu_check.py --out "$json" "$@" || rc=$?
if [[ $rc == 124 || $rc == 137 ]]; then
    echo "gpu_check: stopped by the ${limit} s timeout; $json holds what was measured" >&2
fi
exit "$rc"
