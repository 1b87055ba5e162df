#!/usr/bin/env bash
# Session restore vs re-prefill (docs/RESULTS.md, "Session restore and the
# Redis tier"): builds build/bench_restore, starts a redis-server of its own
# on 127.0.0.1 at a free port (--save '' --appendonly no, stopped on exit),
# and runs the benchmark under the shared benchmark lock, printing the load
# before and after.
# Usage: bench/restore.sh [lengths (1024,4096,8192)] [codecs (f16,int8)] [reps (5)] [threads (0)]
# Env: KVL_MODEL (default ~/.cache/kvlite/SmolLM2-135M-Instruct.Q4_1.gguf),
#      TEXT (default WikiText-2 test from ../shared/data or /work/shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${KVL_MODEL:-$HOME/.cache/kvlite/SmolLM2-135M-Instruct.Q4_1.gguf}"
TEXT="${TEXT:-}"
for d in ../shared/data /work/shared/data; do
    [ -z "$TEXT" ] && [ -f "$d/wikitext-2/test.txt" ] && TEXT="$d/wikitext-2/test.txt"
done
[ -n "$TEXT" ] || { echo "restore.sh: no TEXT and no wikitext-2/test.txt in ../shared/data" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "restore.sh: redis-server not found (scripts/install_deps.sh)" >&2; exit 1; }
make -j2 build/bench_restore >/dev/null
TMP=$(mktemp -d "${TMPDIR:-/tmp}/kvl_restore.XXXXXX")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >"$TMP/redis.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$TMP"' EXIT
for _ in $(seq 1 100); do [ "$(redis-cli -p "$PORT" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), model $(basename "$MODEL"), text $TEXT"
echo "load before: $(uptime)"
flock /tmp/kvlite-bench.lock build/bench_restore "$MODEL" "$TEXT" "$TMP/sessions" "redis://127.0.0.1:$PORT" \
    "${1:-1024,4096,8192}" "${2:-f16,int8}" "${3:-5}" "${4:-0}"
echo "load after: $(uptime)"
