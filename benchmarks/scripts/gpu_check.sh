#!/usr/bin/env bash
# The GPU parts of issue 10 in one command, under 5 minutes on one H100/H200: prints each benchmark's JSON.
#   bash benchmarks/scripts/gpu_check.sh            (from the repository root; results also land in runs/gpu/)
# Status: prepared, not yet run on a GPU (no task so far drew one). Record its figures in the README when it runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=runs/gpu
mkdir -p "$out"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
run() {  # NAME SECONDS SCRIPT ARGS...: one benchmark, bounded, so one failure leaves the others' JSON
  local name="$1" seconds="$2"; shift 2
  echo "== $name"
  timeout "$seconds" python "$@" --json "$out/$name.json" || echo "!! $name failed or timed out (exit $?)"
}
run train-step 70 benchmarks/scripts/train_step.py --device cuda --batch-size 16384 --rows 65536 --steps 20 --precisions fp32 bf16 --compile
run memory-softmax 50 benchmarks/scripts/memory_softmax.py --device cuda --queries 65536 --memory 1048576 --dtype bfloat16
run train-scale 100 benchmarks/scripts/train_scale.py --device cuda --overlap 1000000 --memory 100000 --steps 50
run extract 60 benchmarks/scripts/extract.py --device cuda --precision bf16 --workers 8 --threads 4 --batch-size 64 \
  --images 2048 --model-images 2048 --clips 512 --model-clips 512 --no-torchrun --data "${SPACEGRAPH_DATA:-../shared/data}"
