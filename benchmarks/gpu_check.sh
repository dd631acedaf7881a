#!/usr/bin/env bash
# One run on one NVIDIA GPU, under 8 minutes (each step has a time limit; they add up to 8.5): versions, the GPU tests that can run (each TensorRT
# step gating the next), kwmlp.cuda against real CUDA, PyTorch-CUDA numerics, and `kwmlp bench` on
# the GPU rows. Everything lands in one results folder; send it back whole.
#
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]      (from the repository root, in its venv)
#
# Needs: PyTorch with CUDA, `pip install -e ".[test]"`, and whatever of TensorRT / onnxruntime-gpu /
# cuda-python is installed; KWMLP_CHECKPOINT=path/to/kwmlp.pth (default ../shared/models/kwmlp.pth).
set -u -o pipefail

OUT=${1:-gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}
CKPT=${KWMLP_CHECKPOINT:-../shared/models/kwmlp.pth}
KEYWORDS=${KWMLP_KEYWORDS:-$(dirname "$(dirname "$CKPT")")/keywords}
PY=${PYTHON:-python}
mkdir -p "$OUT"
export KWMLP_CHECKPOINT=$CKPT
STATUS="$OUT/steps.txt"
: > "$STATUS"

# step NAME SECONDS CMD...: runs CMD with a time limit, its output in OUT/NAME.log, one line in steps.txt
step() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    printf '%-14s rc=%-3s %4ss  %s\n' "$name" "$rc" "$((SECONDS - start))" "$*" | tee -a "$STATUS"
    return $rc
}

step versions 20 bash -c "nvidia-smi; $PY -m kwmlp doctor"
$PY -m kwmlp doctor --json > "$OUT/doctor.json" 2>/dev/null

# kwmlp.cuda with real CUDA: streams, pinned copies, a CUDA graph captured and replayed
step cuda 20 $PY -m kwmlp.benchmarks.gpu_check cuda "$OUT/cuda.json"

# PyTorch on the GPU: TF32 on/off against the CPU reference, fp16 blocks' cosines and keyword agreement
step torch 45 $PY -m kwmlp.benchmarks.gpu_check torch "$OUT/torch.json" --checkpoint "$CKPT" --keywords "$KEYWORDS"

# TensorRT, each step gating the next: one fp16 export and its engine (default profiles, the ones
# the benchmark runs), then the GPU tests (two small builds at optimization level 1), then the bench
MODELS="$OUT/models"
mkdir -p "$MODELS"
if step export 45 $PY -m kwmlp export "$CKPT" -o "$MODELS/kwmlp-fp16.onnx" --precision fp16 \
    && step build 120 $PY -m kwmlp build "$MODELS/kwmlp-fp16.onnx" -o "$MODELS/kwmlp-fp16.engine"; then
    step doctor-model 20 $PY -m kwmlp doctor "$MODELS/kwmlp-fp16.onnx"
    step gpu-tests 150 $PY -m pytest -q -x -m gpu tests/test_tensorrt_gpu.py --junitxml="$OUT/gpu-tests.xml"
    ENGINE=(--engine "$MODELS/kwmlp-fp16.engine")
else
    echo "TensorRT steps skipped: see $OUT/export.log and $OUT/build.log" | tee -a "$STATUS"
    ENGINE=()
fi

# the GPU rows side by side (rows that cannot run are skipped with the reason, in results.md)
step bench 90 $PY -m kwmlp bench --checkpoint "$CKPT" --output "$OUT/bench" --workloads 1x1,16x10 --quick \
    --backends pytorch,onnxruntime-cpu,pytorch-cuda,pytorch-cuda-fp16,onnxruntime-cuda,onnxruntime-trt,tensorrt,tensorrt-cuda-graph \
    --cuda-graph ${ENGINE[@]+"${ENGINE[@]}"}

echo "results in $OUT (steps.txt, *.json, *.log, bench/results.md)"
