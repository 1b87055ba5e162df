#!/usr/bin/env bash
# CacheGen format benchmark (issue 10, items 4 and 6): `kvlite kv eval` on
# WikiText-2 test (prefix of PREFIX tokens restored from each CacheGen level,
# from int8 / int4 / kivi2 pages and zstd of int8 pages; continuation of CONT
# tokens scored against the f16 cache): bits/value, KLD, top-1, delta-ppl,
# encode/decode MB/s, rANS vs zstd on the same symbols. The default path and
# --exact (f32 activations: differences below the ~3e-3 KLD floor of 8-bit
# activations). Timings run under flock /tmp/kvlite-bench.lock (shared machine).
#   bench/cachegen.sh [OUT]    (default bench/results/cachegen; ~15 min on 2 cores)
# Tuning used wiki valid: DATA=.../valid.txt bench/cachegen.sh OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-bench/results/cachegen}"
MODEL="${KVL_MODEL:-$HOME/.cache/kvlite/SmolLM2-135M-Instruct.Q4_1.gguf}"
DATA="${DATA:-$(ls -d ../shared/data /work/shared/data 2>/dev/null | head -1)/wikitext-2/test.txt}"
PREFIX="${PREFIX:-2048}"
CONT="${CONT:-256}"
EXACT_PREFIX="${EXACT_PREFIX:-1024}"
mkdir -p "$OUT"
[ -x build/kvlite ] || make -j2 all >/dev/null
log() { echo "[cachegen.sh $(date +%H:%M:%S)] $*" >&2; }
run() { # NAME ARGS...
    local name=$1
    shift
    [ -s "$OUT/$name.jsonl" ] && return 0
    log "$name: $*"
    { echo "{\"kind\":\"machine\",\"uptime\":\"$(uptime)\",\"date\":\"$(date -u +%FT%TZ)\"}"
      flock /tmp/kvlite-bench.lock ./build/kvlite kv eval -m "$MODEL" -f "$DATA" "$@" --json; } >"$OUT/$name.jsonl.tmp" 2>"$OUT/$name.log" &&
        mv "$OUT/$name.jsonl.tmp" "$OUT/$name.jsonl" || log "FAILED $name (see $OUT/$name.log)"
}
run default --prefix "$PREFIX" --cont "$CONT"
run exact --prefix "$EXACT_PREFIX" --cont "$CONT" --exact --baselines int8,int4
log "done: $OUT"
