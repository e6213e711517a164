#!/usr/bin/env bash
# The checks for a lent GPU, in one command (benchmarks/gpu_check.py says what it measures):
#
#     snakemake --cores all tokens chat_data          # here, once: the demo data it reads
#     bash benchmarks/gpu_check.sh                    # on the GPU machine: OUT/gpu_check.{json,md,log}
#     bash benchmarks/gpu_check.sh --smoke            # anywhere, tiny sizes (tests/test_gpu_check.py)
#
# With the device tool: carry results/tokenizer, results/tokens, results/chat_data and
# results/sweep_data (the novels' tokenizer/ and tokens/ of benchmarks/scaling_fit.py, for the sweep
# step: docs/scaling.md), and set BENCHMARK_COMMIT to the commit, since the copied tree has no history. Snakemake, DeepSpeed and
# flash-attn need not be there: each step runs a stage's CLI, and the variants that need a missing
# library are left out (the report's next steps say which).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 benchmarks/gpu_check.py --out "$OUT" --work "$WORK/runs" "$@" 2>&1 | tee "$OUT/gpu_check.log"
