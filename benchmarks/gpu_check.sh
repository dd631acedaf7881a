#!/usr/bin/env bash
# One run on one NVIDIA GPU, under 8 minutes (each step has a time limit; they add up to 8.5): versions, the GPU tests that can run (each TensorRT
# step gating the next), kwmlp.cuda against real CUDA, PyTorch-CUDA numerics, ONNX Runtime's copy
# nodes per GPU session, and `kwmlp bench` on the GPU rows. Everything lands in one results folder,
# with the commit it ran (commit.txt, and the first line of steps.txt); send it back whole.
#
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]      (from the repository root, in its venv)
#
# Needs: PyTorch with CUDA, `pip install -e ".[test]"`, and whatever of TensorRT / onnxruntime-gpu /
# cuda-python is installed; KWMLP_CHECKPOINT=path/to/kwmlp.pth (default ../shared/models/kwmlp.pth);
# KWMLP_COMMIT=<sha> where the checkout is a copy without .git (git's own answer comes first).
set -u -o pipefail

OUT=${1:-gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}
CKPT=${KWMLP_CHECKPOINT:-../shared/models/kwmlp.pth}
KEYWORDS=${KWMLP_KEYWORDS:-$(dirname "$(dirname "$CKPT")")/keywords}
PY=${PYTHON:-python}
mkdir -p "$OUT"
export KWMLP_CHECKPOINT=$CKPT
STATUS="$OUT/steps.txt"

# the commit this run checks, and whether the tree differed from it
if COMMIT=$(git rev-parse HEAD 2>/dev/null); then
    CHANGES=$(git status --porcelain)
    TREE=$([ -z "$CHANGES" ] && echo clean || echo "dirty")
else
    COMMIT=${KWMLP_COMMIT:-unknown} CHANGES="" TREE="unknown (not a git checkout)"
fi
printf 'commit %s\ntree %s\n%s' "$COMMIT" "$TREE" "${CHANGES:+$CHANGES
}" > "$OUT/commit.txt"
echo "commit $COMMIT ($TREE)" > "$STATUS"

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
step cuda 15 $PY -m kwmlp.benchmarks.gpu_check cuda "$OUT/cuda.json"

# PyTorch on the GPU: TF32 on/off against the CPU reference, fp16 blocks' cosines and keyword agreement
step torch 40 $PY -m kwmlp.benchmarks.gpu_check torch "$OUT/torch.json" --checkpoint "$CKPT" --keywords "$KEYWORDS"

# the fp32 and fp16 exports (embedding and keyword graphs, and the fixed-shape 1 x 1 s graphs
# where this kwmlp export writes them), then ONNX Runtime's host/device copy nodes in each one's
# CUDA session (a session with any cannot replay one CUDA graph)
MODELS="$OUT/models"
mkdir -p "$MODELS"
FIXED=""
if $PY -m kwmlp export --help 2>/dev/null | grep -q -- --fixed-shape; then
    FIXED="--fixed-shape 1x16000"
fi
step export 50 bash -c "$PY -m kwmlp export \"\$1\" -o \"\$2/kwmlp.onnx\" $FIXED \
    && $PY -m kwmlp export \"\$1\" -o \"\$2/kwmlp-fp16.onnx\" --precision fp16 $FIXED" export "$CKPT" "$MODELS"
ONNX=()
for f in "$MODELS"/*.onnx; do [ -f "$f" ] && ONNX+=("$f"); done
step memcpy 25 $PY -m kwmlp.benchmarks.gpu_check memcpy "$OUT/memcpy.json" ${ONNX[@]+"${ONNX[@]}"}

# TensorRT, each step gating the next: the fp16 export's engine (default profiles, the ones the
# benchmark runs), then the GPU tests (two small builds at optimization level 1), then the bench
if [ -f "$MODELS/kwmlp-fp16.onnx" ] \
    && step build 115 $PY -m kwmlp build "$MODELS/kwmlp-fp16.onnx" -o "$MODELS/kwmlp-fp16.engine"; then
    step doctor-model 15 $PY -m kwmlp doctor "$MODELS/kwmlp-fp16.onnx"
    step gpu-tests 130 $PY -m pytest -q -x -m gpu tests/test_tensorrt_gpu.py --junitxml="$OUT/gpu-tests.xml"
    ENGINE=(--engine "$MODELS/kwmlp-fp16.engine")
else
    echo "TensorRT steps skipped: see $OUT/export.log and $OUT/build.log" | tee -a "$STATUS"
    ENGINE=()
fi
BENCH_MODEL=()
[ -f "$MODELS/kwmlp.onnx" ] && BENCH_MODEL=(--model "$MODELS/kwmlp.onnx")

# the GPU rows side by side (rows that cannot run are skipped with the reason, in results.md; the
# notes under its table say which rows replayed CUDA graphs)
step bench 100 $PY -m kwmlp bench --checkpoint "$CKPT" --output "$OUT/bench" --workloads 1x1,16x10 --quick \
    --backends pytorch,onnxruntime-cpu,pytorch-cuda,pytorch-cuda-fp16,pytorch-cuda-graph,pytorch-cuda-graph-fp16,onnxruntime-cuda,onnxruntime-trt,tensorrt,tensorrt-cuda-graph \
    --cuda-graph ${ENGINE[@]+"${ENGINE[@]}"} ${BENCH_MODEL[@]+"${BENCH_MODEL[@]}"}

echo "results in $OUT (commit.txt, steps.txt, *.json, *.log, bench/results.md)"
