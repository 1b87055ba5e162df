#!/usr/bin/env bash
# CacheBlend chunks from the Redis tier: a redis-server of its own on
# 127.0.0.1 at a free port (no persistence, stopped on exit), 6 chunks x 512
# tokens indexed into it, then eval rag with no RAM tier, serial and
# pipelined reads side by side, under the bench lock.
# usage: KVL_MODEL=... bench/blend_redis.sh [OUTDIR] (SEEDS, QUESTIONS: 1, 2)
set -euo pipefail
M=${KVL_MODEL:?set KVL_MODEL}
OUT=${1:-bench/results/blend_redis}
CLI=${KVL_CLI:-build/kvlite}
mkdir -p "$OUT"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >"$OUT/redis.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
for i in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
uptime >"$OUT/redis512.load"
flock /tmp/kvlite-bench.lock "$CLI" eval rag -m "$M" --chunks 6 --chunk-tokens 512 --seeds "${SEEDS:-1}" \
    --questions "${QUESTIONS:-2}" --blend-ratio 0.15 --blend-store "redis://127.0.0.1:$port" --blend-ram 0 \
    --blend-pipeline 0,1 --json >"$OUT/redis512.json" 2>"$OUT/redis512.txt"
uptime >>"$OUT/redis512.load"
grep -v '^rag' "$OUT/redis512.txt"
