#!/bin/sh
# CacheBlend answer quality (no timing: not under the bench lock) where the
# full prefill can answer: 6 chunks x 128 tokens; test seeds 0.., and K vs V
# selection and the full-layer count on valid seeds 1000...
# usage: bench/blend_quality.sh [OUTDIR]   (KVL_MODEL = the GGUF model)
set -eu
M=${KVL_MODEL:?set KVL_MODEL}
OUT=${1:-bench/results/blend}
mkdir -p "$OUT"
q() { name=$1; shift; ./build/kvlite eval rag -m "$M" --json "$@" > "$OUT/$name.json" 2> "$OUT/$name.txt"; cat "$OUT/$name.txt"; }
q valid128_v --chunks 6 --chunk-tokens 128 --seeds 2 --questions 4 --seed-base 1000 --blend-ratio 0.15 --blend-select v
q valid128_k --chunks 6 --chunk-tokens 128 --seeds 2 --questions 4 --seed-base 1000 --blend-ratio 0.15 --blend-select k
q test128 --chunks 6 --chunk-tokens 128 --seeds 4 --questions 4 --blend-ratio 0.05,0.15,0.3,0.5,1
q test128_k --chunks 6 --chunk-tokens 128 --seeds 4 --questions 4 --blend-ratio 0.15 --blend-select k
