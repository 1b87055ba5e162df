#!/usr/bin/env bash
# Real transfers for `kvlite eval stream --redis` behind a throttled link:
# a network namespace of its own (root needed) with a redis-server on its
# loopback, whose rate a shaper changes every trace step (tc tbf) following
# TRACE once the requests start (the chunks are published unshaped first).
# Everything is removed on exit.
#
#   bench/stream_netem.sh TRACE OUT.json [eval stream flags...]
#   e.g. bench/stream_netem.sh bench/traces/bursty.txt bench/results/stream-real.json \
#        -m MODEL -f TEXT --prefix 1024 --slo-ms 2000 --requests 15 --spacing-ms 1000
set -eu
cd "$(dirname "$0")/.."
TRACE=$1
OUT=$2
shift 2
BIN=${KVLITE_BIN:-build/kvlite}
NS=kvlstream$$
PORT=6390
LOG=$(mktemp)
SHAPER=
cleanup() {
    [ -n "$SHAPER" ] && kill "$SHAPER" 2>/dev/null || true
    ip netns pids "$NS" 2>/dev/null | xargs -r kill 2>/dev/null || true
    sleep 0.2
    ip netns del "$NS" 2>/dev/null || true
    rm -f "$LOG"
}
trap cleanup EXIT
command -v tc >/dev/null && command -v ip >/dev/null || { echo "stream_netem: needs iproute2 (ip, tc)" >&2; exit 1; }
ip netns add "$NS"
# loopback's 64 KB MTU would make single packets larger than the shaper's
# burst (tbf drops those): a 1500-byte MTU as on a real link
ip -n "$NS" link set lo mtu 1500
ip -n "$NS" link set lo up
ip netns exec "$NS" redis-server --port $PORT --bind 127.0.0.1 --save '' --appendonly no --daemonize no >/dev/null 2>&1 &
for _ in $(seq 100); do ip netns exec "$NS" redis-cli -p $PORT ping >/dev/null 2>&1 && break; sleep 0.05; done
ip netns exec "$NS" tc qdisc add dev lo root tbf rate 10gbit burst 1mb latency 1s

# the shaper: one tc change per trace sample (100 ms), repeating the trace
shape() {
    local rates
    rates=$(grep -v '^#' "$TRACE" | grep -v '^[[:space:]]*$')
    while :; do
        for r in $rates; do
            local t0
            t0=$(date +%s%N)
            # burst: at least 10 ms of the rate, not below 16 KB
            local kbit burst
            kbit=$(awk -v r="$r" 'BEGIN { k = int(r * 1000); if (k < 8) k = 8; print k }')
            burst=$(awk -v k="$kbit" 'BEGIN { b = int(k * 1000 / 8 / 100); if (b < 16384) b = 16384; print b }')
            ip netns exec "$NS" tc qdisc change dev lo root tbf rate "${kbit}kbit" burst "$burst" latency 1s
            local dt=$((($(date +%s%N) - t0) / 1000))
            [ $dt -lt 100000 ] && sleep "0.$(printf '%06d' $((100000 - dt)))"
        done
    done
}

ip netns exec "$NS" "$BIN" eval stream --bandwidth "$TRACE" --redis "redis://127.0.0.1:$PORT" --json "$@" >"$OUT" 2>"$LOG" &
EVAL=$!
until grep -q "real transfers through" "$LOG" 2>/dev/null; do
    kill -0 $EVAL 2>/dev/null || break
    sleep 0.05
done
shape &
SHAPER=$!
rc=0
wait $EVAL || rc=$?
cat "$LOG" >&2
exit $rc
