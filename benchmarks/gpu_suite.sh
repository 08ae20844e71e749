#!/usr/bin/env bash
# The GPU numbers of docs/performance.md in one run (about 8 minutes on one H100):
#   1. the built-in model segments the README's examples on the GPU and on the CPU: the masks must agree;
#   2. train_step.py at full SD 2.1 size, every mixed-precision setting, with and without checkpointing;
#   3. bench_inference.py at full SD 2.1 size (random weights), bfloat16 then float32, 1 and 5 shots,
#      batch 1 and 8, cached and uncached, with SegGPT as the peer (its JSON is rewritten after each
#      dtype, so a run cut short keeps what it measured);
#   4. torch.compile at full SD 2.1 size, bfloat16, 1 shot, batch 8, against the other speed options
#      (about 3.5 minutes, nearly all of it compiling).
# Usage: bash benchmarks/gpu_suite.sh RESULTS_DIR   (run from the repository root, diffews importable)
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_suite.sh RESULTS_DIR}
mkdir -p "$out"
log="$out/gpu_suite.log"
export PYTHONUNBUFFERED=1

stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, log it, stop the suite if it fails
    local name=$1 limit=$2 started=$SECONDS
    shift 2
    echo "== $name (limit ${limit}s)" | tee -a "$log"
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$log"
    local status=${PIPESTATUS[0]}
    echo "== $name: exit $status after $((SECONDS - started))s" | tee -a "$log"
    [ "$status" -eq 0 ] || exit "$status"
}

stage device 30 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv &&
    python3 -c "import torch, diffusers, transformers; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda,
               \"diffusers\", diffusers.__version__, \"transformers\", transformers.__version__)"'
stage builtin-model 120 python3 benchmarks/compare_devices.py --device cuda --out "$out/compare_devices.json"
stage train-step 150 python3 benchmarks/train_step.py --full --device cuda --mixed-precision bf16 fp16 no \
    --steps 10 --json "$out/train_step_sd21.json"
stage inference 300 python3 benchmarks/bench_inference.py --arch sd21 --device cuda --dtypes bfloat16 float32 \
    --repeats 10 --warmup 2 --json "$out/inference_sd21.json"
stage compile 360 python3 benchmarks/bench_inference.py --arch sd21 --device cuda --dtypes bfloat16 --shots 1 \
    --batch-sizes 8 --repeats 10 --warmup 2 --peer none --no-sd21-flops --compile --json "$out/inference_compile_sd21.json"
