#!/bin/sh
# CacheBlend answer quality (no timing: not under the bench lock) where the
# full prefill can answer: 6 chunks x 128 tokens; test seeds 0.., and K vs V
# selection and the full-layer count on valid seeds 1000...
# usage: bench/blend_quality.sh [OUTDIR]   (KVL_MODEL = the GGUF model; SELECT_RUNS=1 adds the
# selection-variant runs into bench/results/blend_select)
set -eu
M=${KVL_MODEL:?set KVL_MODEL}
OUT=${1:-bench/results/blend}
mkdir -p "$OUT"
q() { name=$1; shift; ./build/kvlite eval rag -m "$M" --json "$@" > "$OUT/$name.json" 2> "$OUT/$name.txt"; cat "$OUT/$name.txt"; }
q valid128_v --chunks 6 --chunk-tokens 128 --seeds 2 --questions 4 --seed-base 1000 --blend-ratio 0.15 --blend-select v
q valid128_k --chunks 6 --chunk-tokens 128 --seeds 2 --questions 4 --seed-base 1000 --blend-ratio 0.15 --blend-select k
q test128 --chunks 6 --chunk-tokens 128 --seeds 4 --questions 4 --blend-ratio 0.05,0.15,0.3,0.5,1
q test128_k --chunks 6 --chunk-tokens 128 --seeds 4 --questions 4 --blend-ratio 0.15 --blend-select k
# Selection variants and the noise floor (2026-12-02 evening): 24 questions per point.
# valid seeds 1000-1005 (to choose), then test seeds 0-5 (to report).
if [ "${SELECT_RUNS:-0}" = 1 ]; then
    S=bench/results/blend_select
    mkdir -p "$S"
    r() { name=$1; shift; ./build/kvlite eval rag -m "$M" --json --chunks 6 --chunk-tokens 128 --seeds 6 --questions 4 "$@" > "$S/$name.json" 2> "$S/$name.txt"; cat "$S/$name.txt"; }
    r v_base --seed-base 1000 --blend-ratio 0.15
    r v_qv --seed-base 1000 --blend-ratio 0.15 --blend-select qv
    r v_q --seed-base 1000 --blend-ratio 0.15 --blend-select q
    r v_l3 --seed-base 1000 --blend-ratio 0.15 --blend-layers 3
    r v_q35 --seed-base 1000 --blend-ratio 0.3,0.5 --blend-select q
    r v_floor --seed-base 1000 --blend-ratio 0.15,0.3,0.5 --floor
    r t_v --seed-base 0 --blend-ratio 0.05,0.15,0.3,0.5
    r t_q --seed-base 0 --blend-ratio 0.15 --blend-select q
    r t_qv --seed-base 0 --blend-ratio 0.15 --blend-select qv
fi
