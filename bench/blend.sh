#!/bin/sh
# CacheBlend timing for docs/RESULTS.md ("CacheBlend"): eval rag at 6
# chunks x 512 tokens, chunks in RAM (ratio sweep) and from the disk tier
# (RAM budget 0). Each run holds the bench lock. ONLY=disk512 runs one.
# usage: bench/blend.sh [OUTDIR]   (KVL_MODEL = the GGUF model)
set -eu
M=${KVL_MODEL:?set KVL_MODEL}
OUT=${1:-bench/results/blend}
mkdir -p "$OUT"
K=./build/kvlite
run() { name=$1; shift; [ -n "${ONLY:-}" ] && [ "$ONLY" != "$name" ] && return 0; uptime > "$OUT/$name.load"; flock /tmp/kvlite-bench.lock "$K" eval rag -m "$M" --json "$@" > "$OUT/$name.json" 2> "$OUT/$name.txt"; uptime >> "$OUT/$name.load"; cat "$OUT/$name.txt"; }
# test seeds (0..): ratio sweep, chunks in RAM
run ram512 --chunks 6 --chunk-tokens 512 --seeds 2 --questions 3 --blend-ratio 0.05,0.15,0.3,0.5,1
# the disk tier only (RAM budget 0)
D=$(mktemp -d /tmp/kvl_blend_disk.XXXXXX)
run disk512 --chunks 6 --chunk-tokens 512 --seeds 1 --questions 3 --blend-ratio 0.15 --blend-store "$D" --blend-ram 0
rm -rf "$D"
# answer quality where the full prefill can answer: bench/blend_quality.sh
# the RAM tier again with the current commit (fresh selection-layer rows, six-relation facts)
run ram512b --chunks 6 --chunk-tokens 512 --seeds 2 --questions 3 --blend-ratio 0.05,0.15,0.3,0.5
