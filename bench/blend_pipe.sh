#!/bin/sh
# CacheBlend pipelining (issue 11 item 4; docs/RESULTS.md "CacheBlend
# pipelining"): eval rag at 6 chunks x 512 tokens from the disk tier only
# (RAM budget 0: every prompt reads its 6 chunk files), r = 0.15, the
# serial reader (blend@0.15/serial: every layer read and verified before
# the pass) and the pipelined one (blend@0.15: layers streamed by an I/O
# thread during the pass) alternating per question, in four settings:
# warm (page cache), cold (--blend-cold: files dropped from the page cache
# before each prompt), and reads capped at 100 and 25 MB/s
# (--blend-read-mbps: the reader sleeps to that rate; an emulated slower
# tier, e.g. a network store, not a real one). One chunk store for all
# runs (indexed once). Each run holds the bench lock; uptime before/after.
# ONLY=name runs one; SEEDS/QUESTIONS/SEED_BASE override (valid seeds: SEED_BASE=1000);
# KVL_CLI = the kvlite binary (default ./build/kvlite).
# usage: bench/blend_pipe.sh [OUTDIR]   (KVL_MODEL = the GGUF model)
# tables: bench/blend_pipe_report.py OUTDIR
set -eu
M=${KVL_MODEL:?set KVL_MODEL}
OUT=${1:-bench/results/blend_pipe}
SEEDS=${SEEDS:-3}
QUESTIONS=${QUESTIONS:-2}
SEED_BASE=${SEED_BASE:-0}
STORE=${STORE:-/tmp/kvl_blend_pipe_store}
mkdir -p "$OUT" "$STORE"
K=${KVL_CLI:-./build/kvlite}
run() {
    name=$1; shift
    [ -n "${ONLY:-}" ] && [ "$ONLY" != "$name" ] && return 0
    flock /tmp/kvlite-bench.lock sh -c 'uptime > "$0.load"; "$@" > "$0.json" 2> "$0.txt"; s=$?; uptime >> "$0.load"; exit $s' \
        "$OUT/$name" "$K" eval rag -m "$M" --json --chunks 6 --chunk-tokens 512 --seeds "$SEEDS" --seed-base "$SEED_BASE" \
        --questions "$QUESTIONS" --blend-ratio 0.15 --blend-store "$STORE" --blend-ram 0 --blend-pipeline 0,1 "$@"
    cat "$OUT/$name.txt"
}
run warm
run cold --blend-cold
run cap100 --blend-read-mbps 100
run cap25 --blend-read-mbps 25
