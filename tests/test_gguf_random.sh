#!/usr/bin/env bash
# `kvlite gguf-random` from the command line: bad flags exit 2 with a message
# naming the problem; the tiny preset written, `--check` loads it and runs a
# forward pass (finite logits), and `kvlite run` generates from it greedily.
set -u
BIN=${KVLITE_BIN:-build/kvlite}
d=$(mktemp -d); trap 'rm -rf "$d"' EXIT
pass=0; fail=0
ok() { if [ "$1" = 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $2"; fi; }
expect_usage() { # expected message, flags...
    local want=$1; shift
    local out rc
    out=$("$BIN" gguf-random "$@" 2>&1); rc=$?
    [ $rc = 2 ] && printf '%s' "$out" | grep -q -- "$want"; ok $? "gguf-random $* -> rc $rc: $out (want '$want')"
}
expect_usage "unknown preset 'nope'" --preset nope -o "$d/x.gguf"
expect_usage "preset is required" -o "$d/x.gguf"
expect_usage "-o FILE is required" --preset tiny
expect_usage "unknown --type 'q6_k'" --preset tiny -o "$d/x.gguf" --type q6_k
expect_usage "heads 3 must divide dim 256" --preset tiny -o "$d/x.gguf" --heads 3
expect_usage "kv-heads 3 must divide heads 4" --preset tiny -o "$d/x.gguf" --kv-heads 3
expect_usage "vocab 10 out of range" --preset tiny -o "$d/x.gguf" --vocab 10
expect_usage "needs a value" --preset tiny -o "$d/x.gguf" --seed
expect_usage "unknown flag '--bogus'" --preset tiny -o "$d/x.gguf" --bogus 1
[ ! -e "$d/x.gguf" ]; ok $? "a rejected command wrote a file"
out=$("$BIN" gguf-random --preset tiny --type q4_1 --seed 7 -o "$d/t.gguf" --check 8 2>&1); rc=$?
[ $rc = 0 ] && printf '%s' "$out" | grep -q "logits finite yes"; ok $? "write + check: rc $rc: $out"
out=$("$BIN" run -m "$d/t.gguf" -p "hello" -n 6 --temp 0 --ids 2>&1); rc=$?
[ $rc = 0 ] && printf '%s' "$out" | grep -qE "generated ids:( [0-9]+){6}"; ok $? "run on the file: rc $rc: $out"
echo "test_gguf_random.sh: $pass passed, $fail failed, 0 skipped"
[ $fail = 0 ]
