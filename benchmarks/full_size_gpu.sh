#!/usr/bin/env bash
# The full-size (openvla-7b) rows that need a GPU, in one short run: weight memory, peak memory and actions/s
# of bf16 / int8 / int4 weights (bitsandbytes, the reference's choice on CUDA), then the reference recipe against
# the two parallel-decoding recipes. Random weights: speed and memory do not depend on them.
#
#   TAG=h200 OUT=some/folder bash benchmarks/full_size_gpu.sh     # files named *_h200_7b.*
#
# Needs python3 with torch (CUDA), transformers, timm, safetensors and tokenizers; bitsandbytes may come from
# .gpu/site (an unpacked wheel) when the machine has none. Each part has its own time limit and log, so one
# failing part still leaves the others' results.
set -u
OUT=${OUT:-$PWD/benchmarks/results} TAG=${TAG:-gpu}
export PYTHONPATH="$PWD/src:$PWD/benchmarks:$PWD/.gpu/site:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
cd benchmarks || exit 1
python3 -c "import torch, transformers, timm; print('torch', torch.__version__, 'transformers', transformers.__version__,
'timm', timm.__version__, torch.cuda.get_device_name(0))" 2>&1 | tee "$OUT/gpu_env.log"
timeout "${QUANT_LIMIT_S:-280}" python3 run.py --device cuda --presets openvla-7b --dtypes bfloat16 \
    --quantization none int8 int4 --batches 1 --modes eager --repeats 3 \
    --json "$OUT/inference_${TAG}_7b.json" --markdown "" 2>&1 | grep -v "Warning\|MatMul8bitLt" | tee "$OUT/inference_${TAG}_7b.log"
timeout "${RECIPES_LIMIT_S:-200}" python3 recipes_speed.py --device cuda --dtype bfloat16 --presets openvla-7b \
    --batches 1 8 --repeats 5 --json "$OUT/recipes_speed_${TAG}_7b.json" 2>&1 | grep -v "Warning\|MatMul8bitLt" \
    | tee "$OUT/recipes_speed_${TAG}_7b.log"
