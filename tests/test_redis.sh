#!/usr/bin/env bash
# CLI tests of the Redis tier against a redis-server this script starts on
# 127.0.0.1 at a free port (--save '' --appendonly no, stopped on exit):
# `run --redis` reuses prompt chunks from Redis in a new process (same text
# as without a cache), with --prefix-cache too after the disk tier is wiped;
# Redis never up: exactly one warning line, the request succeeds, same text;
# a bad URL is a usage error; the build without hiredis (kvlite-nohiredis)
# fails with "built without hiredis"; `chat --session NAME --redis URL`:
# two processes continue one session (restored > 0, computed less), the
# session is listed as key kvlite:session:NAME, a garbage value is refused
# with one line, Redis killed between two turns of one chat: both turns
# answered, one warning line, exit 0 (tiny model; the default model too
# when KVL_MODEL is set). Without redis-server: skip (CI=true: fail).
# Ends with "N passed, N failed".
set -u
BIN="${KVLITE_BIN:-${BUILD:-build}/kvlite}"
NOHI="$(dirname "$BIN")/kvlite-nohiredis"
MODEL="${KVL_MODEL:-}"
TINY=tests/data/tiny/llama_q.gguf
TMP=$(mktemp -d "${TMPDIR:-/tmp}/kvl_redis.XXXXXX")
SERVER_PID=
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
finish() { echo "test_redis.sh: $pass passed, $fail failed"; [ "$fail" -eq 0 ]; exit $?; }
skip_or_fail() {
    if [ "${CI:-}" = true ]; then bad "$1 (CI=true: scripts/install_deps.sh installs it)"; else echo "skip: test_redis.sh: $1"; fi
    finish
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start_server() { # port: starts redis-server, waits for PING (10 s)
    redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >"$TMP/redis.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    return 1
}
stop_server() {
    [ -n "$SERVER_PID" ] && kill -9 "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=
}
run_cli() { # ARGS...: exit code in $rc, output in $TMP/out, $TMP/err
    timeout 600 "$BIN" "$@" >"$TMP/out" 2>"$TMP/err" </dev/null
    rc=$?
}

# ---- the build without hiredis ----------------------------------------------------------
nohi=
if [ -x "$NOHI" ]; then nohi=$NOHI
elif timeout 60 "$BIN" run -m "$TINY" -p hi -n 1 --redis redis://127.0.0.1:1 2>&1 | grep -q "built without hiredis"; then
    nohi=$BIN
    "$BIN" run -m "$TINY" -p hi -n 1 --redis redis://127.0.0.1:1 >/dev/null 2>&1
    skip_or_fail "$BIN is built without hiredis (libhiredis-dev missing)"
fi
if [ -n "$nohi" ]; then
    timeout 60 "$nohi" run -m "$TINY" -p hi -n 1 --redis redis://127.0.0.1:1 >"$TMP/out" 2>"$TMP/err"
    rc=$?
    if [ "$rc" -eq 1 ] && [ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -q "^kvlite: .*built without hiredis" "$TMP/err" && [ ! -s "$TMP/out" ]; then ok; else
        bad "kvlite-nohiredis run --redis: exit $rc, $(head -c 300 "$TMP/err")"; fi
    timeout 60 "$nohi" run -m "$TINY" -p hi -n 2 --temp 0 >"$TMP/out" 2>"$TMP/err"
    if [ $? -eq 0 ] && [ -s "$TMP/out" ]; then ok; else bad "kvlite-nohiredis run without --redis: $(head -c 300 "$TMP/err")"; fi
fi

command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || skip_or_fail "redis-server / redis-cli not found"
PORT=
for _ in 1 2 3 4 5; do
    p=$(free_port)
    if start_server "$p"; then PORT=$p; break; fi
    stop_server
done
[ -n "$PORT" ] || { bad "cannot start redis-server: $(tail -3 "$TMP/redis.log")"; finish; }
URL="redis://127.0.0.1:$PORT"
DEAD="redis://127.0.0.1:$(free_port)"

# ---- run --redis ------------------------------------------------------------------------
printf 'The quick brown fox jumps over the lazy dog. %.0s' $(seq 1 30) >"$TMP/long.txt"
run_cli run -m "$TINY" -f "$TMP/long.txt" -n 8 --temp 0
ref=$(cat "$TMP/out")
run_cli run -m "$TINY" -f "$TMP/long.txt" -n 8 --temp 0 --redis "$URL" --stats
if [ "$rc" -eq 0 ] && grep -q "redis tier: .* [1-9][0-9]* chunks written" "$TMP/err" && [ "$(cat "$TMP/out")" = "$ref" ]; then ok; else
    bad "run --redis (first): exit $rc, $(grep -iE 'redis|prefix|kvlite' "$TMP/err")"; fi
run_cli run -m "$TINY" -f "$TMP/long.txt" -n 8 --temp 0 --redis "$URL" --stats
if [ "$rc" -eq 0 ] && grep -Eq "prefix cache: *reused [1-9][0-9]+ of" "$TMP/err" && grep -q "redis tier: *[1-9][0-9]* hits" "$TMP/err" &&
    [ "$(cat "$TMP/out")" = "$ref" ]; then ok; else
    bad "run --redis (reuse in a new process): exit $rc, $(grep -iE 'redis|prefix|kvlite' "$TMP/err")"; fi
# with a disk tier whose files are gone: the chunks come from Redis
run_cli run -m "$TINY" -f "$TMP/long.txt" -n 8 --temp 0 --redis "$URL" --prefix-cache "$TMP/pc" --stats
rm -rf "$TMP/pc"
run_cli run -m "$TINY" -f "$TMP/long.txt" -n 8 --temp 0 --redis "$URL" --prefix-cache "$TMP/pc" --stats
if [ "$rc" -eq 0 ] && grep -q "0 from disk" "$TMP/err" && grep -q "redis tier: *[1-9][0-9]* hits" "$TMP/err" &&
    [ "$(cat "$TMP/out")" = "$ref" ]; then ok; else
    bad "run --redis --prefix-cache: exit $rc, $(grep -iE 'redis|prefix|kvlite' "$TMP/err")"; fi
# garbage under every chunk key: rejected, recomputed, same text
for k in $(redis-cli -p "$PORT" --scan --pattern 'kvlite:chunk:*'); do
    head -c 3000 README.md | redis-cli -p "$PORT" -x set "$k" >/dev/null
done
run_cli run -m "$TINY" -f "$TMP/long.txt" -n 8 --temp 0 --redis "$URL" --stats
if [ "$rc" -eq 0 ] && grep -q "reused 0 of .* 1 rejected" "$TMP/err" && [ "$(cat "$TMP/out")" = "$ref" ]; then ok; else
    bad "run --redis with garbage chunks: exit $rc, $(grep -iE 'redis|prefix|kvlite' "$TMP/err")"; fi
# never up: one line, the request succeeds
run_cli run -m "$TINY" -f "$TMP/long.txt" -n 8 --temp 0 --redis "$DEAD"
if [ "$rc" -eq 0 ] && [ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -q "^kvlite: prefix cache: redis $DEAD: cannot connect" "$TMP/err" &&
    [ "$(cat "$TMP/out")" = "$ref" ]; then ok; else
    bad "run --redis never up: exit $rc, $(head -c 400 "$TMP/err")"; fi
run_cli run -m "$TINY" -p hi --redis http://127.0.0.1:1
if [ "$rc" -eq 2 ] && grep -q "^kvlite: --redis: .* is not a redis://" "$TMP/err"; then ok; else bad "run --redis bad URL: exit $rc"; fi
run_cli run -m "$TINY" -p hi --redis redis://127.0.0.1:0
if [ "$rc" -eq 1 ] && grep -q "port must be" "$TMP/err" && [ "$(wc -l <"$TMP/err")" -eq 1 ]; then ok; else bad "run --redis port 0: exit $rc, $(cat "$TMP/err")"; fi
run_cli chat -m "$TINY" --redis "$URL"
if [ "$rc" -eq 2 ] && grep -q "needs --session" "$TMP/err"; then ok; else bad "chat --redis without --session: exit $rc"; fi

# ---- chat --session --redis ---------------------------------------------------------------
chat_session() { # model name: two processes continue one session through Redis
    local m=$1 name=$2
    printf 'Hello there\nWhat is two plus two?\n' | timeout 600 "$BIN" chat -m "$m" --temp 0 -n 12 --session "$name" --redis "$URL" \
        >"$TMP/out" 2>"$TMP/err"
    rc=$?
    local c1
    c1=$(sed -nE "s/^session $name: restored 0 tokens, computed ([0-9]+)\$/\\1/p" "$TMP/err")
    if [ "$rc" -eq 0 ] && [ -n "$c1" ] && [ "$(redis-cli -p "$PORT" exists "kvlite:session:$name")" = 1 ]; then ok; else
        bad "chat --session --redis (first process, $m): exit $rc, $(head -c 300 "$TMP/err")"; return; fi
    printf 'And three?\n' | timeout 600 "$BIN" chat -m "$m" --temp 0 -n 12 --session "$name" --redis "$URL" >"$TMP/out" 2>"$TMP/err"
    rc=$?
    local r2 c2
    r2=$(sed -nE "s/^session $name: restored ([0-9]+) tokens, computed ([0-9]+)\$/\\1/p" "$TMP/err")
    c2=$(sed -nE "s/^session $name: restored ([0-9]+) tokens, computed ([0-9]+)\$/\\2/p" "$TMP/err")
    if [ "$rc" -eq 0 ] && [ "${r2:-0}" -gt 0 ] && [ -n "$c2" ] && grep -q "^session $name: restored $r2 tokens, 4 messages" "$TMP/err"; then ok; else
        bad "chat --session --redis (second process, $m): exit $rc, restored '$r2' computed '$c2': $(head -c 300 "$TMP/err")"; fi
}
chat_session "$TINY" tiny-chat
if [ -n "$MODEL" ] && [ -f "$MODEL" ]; then chat_session "$MODEL" model-chat; else echo "skip: test_redis.sh: chat on the default model needs KVL_MODEL"; fi

# a garbage session value: one line, exit 1
head -c 5000 README.md | redis-cli -p "$PORT" -x set kvlite:session:junk >/dev/null
printf 'hi\n' | timeout 120 "$BIN" chat -m "$TINY" --temp 0 -n 4 --session junk --redis "$URL" >"$TMP/out" 2>"$TMP/err"
rc=$?
if [ "$rc" -eq 1 ] && [ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -q "^kvlite: session junk: .*magic" "$TMP/err"; then ok; else
    bad "chat with a garbage session: exit $rc, $(head -c 300 "$TMP/err")"; fi
# Redis never up: warned once, the chat answers, nothing saved
printf 'hi\nagain\n' | timeout 120 "$BIN" chat -m "$TINY" --temp 0 -n 4 --session down --redis "$DEAD" >"$TMP/out" 2>"$TMP/err"
rc=$?
if [ "$rc" -eq 0 ] && [ "$(grep -c '^kvlite:' "$TMP/err")" -eq 1 ] && grep -q "continuing without the session" "$TMP/err" &&
    [ "$(wc -l <"$TMP/out")" -eq 2 ]; then ok; else bad "chat --redis never up: exit $rc, $(head -c 300 "$TMP/err")"; fi

# Redis killed between turns of one chat: every turn answered, one warning, exit 0
mkfifo "$TMP/in"
timeout 300 "$BIN" chat -m "$TINY" --temp 0 -n 6 --session killed --redis "$URL" <"$TMP/in" >"$TMP/out" 2>"$TMP/err" &
chat_pid=$!
exec 3>"$TMP/in"
echo "first turn" >&3
for _ in $(seq 1 600); do
    [ "$(redis-cli -p "$PORT" exists kvlite:session:killed 2>/dev/null)" = 1 ] && break
    sleep 0.1
done
stop_server
echo "second turn" >&3
echo "third turn" >&3
exec 3>&-
wait "$chat_pid"
rc=$?
if [ "$rc" -eq 0 ] && [ "$(grep -c '^kvlite: session killed: save failed' "$TMP/err")" -eq 1 ] && [ "$(wc -l <"$TMP/out")" -eq 3 ]; then ok; else
    bad "chat with Redis killed mid-run: exit $rc, $(wc -l <"$TMP/out") answers, $(head -c 400 "$TMP/err")"; fi
finish
