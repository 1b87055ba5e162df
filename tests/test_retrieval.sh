#!/usr/bin/env bash
# Smoke tests of `kvlite eval needle|passkey|multikey` on a tiny grid
# (256-token prompts, two or three depths, one seed): usage errors exit 2 with
# one line; --json parses and holds the documented fields, consistent with
# each other (cell count, lengths within 2%, scores recomputed from the
# answers, KV bytes); --plot writes a valid PNG (CRCs, zlib stream); prefix
# sharing gives the same answers and KV bytes as --no-share; KV flags reach
# the engine (--kv int8 reports fewer bytes per token, --kv-budget turns
# sharing off). Model cases need KVL_MODEL and are skipped without it.
# Ends with "N passed, N failed"; exits non-zero on any failure.
set -u
BIN="${KVLITE_BIN:-${BUILD:-build}/kvlite}"
MODEL="${KVL_MODEL:-}"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/kvl_ret.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

run_cli() {
    timeout 300 "$BIN" "$@" >"$TMP/out" 2>"$TMP/err" </dev/null
    rc=$?
}

# expect_usage NAME ARGS...: exit 2, nothing on stdout, one "kvlite: " line on stderr.
expect_usage() {
    local name=$1
    shift
    run_cli "$@"
    if [ "$rc" -eq 2 ] && [ ! -s "$TMP/out" ] && [ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -q '^kvlite: ' "$TMP/err"; then
        ok
    else
        bad "$name: exit $rc, stdout $(wc -c <"$TMP/out") bytes, stderr: $(head -c 300 "$TMP/err")"
    fi
}

if [ ! -x "$BIN" ]; then
    echo "test_retrieval: $BIN not found (build it first)" >&2
    echo "0 passed, 1 failed"
    exit 1
fi

# ---- usage (no model needed) -------------------------------------------------------------
expect_usage "needle without -m" eval needle
expect_usage "bad --lengths" eval needle -m x.gguf --lengths 1024,abc
expect_usage "empty --lengths item" eval needle -m x.gguf --lengths 1024,,2048
expect_usage "depth over 100" eval passkey -m x.gguf --depths 0,101
expect_usage "duplicate depth" eval passkey -m x.gguf --depths 50,50
expect_usage "zero seeds" eval passkey -m x.gguf --seeds 0
expect_usage "--keys on needle" eval needle -m x.gguf --keys 3
expect_usage "--needle on passkey" eval passkey -m x.gguf --needle hi
expect_usage "--needle without --answer" eval needle -m x.gguf --needle "The x is 5." --question "What is x?"
expect_usage "unknown eval" eval haystack -m x.gguf
run_cli eval passkey -m x.gguf --plot "$TMP/no/such/dir/p.png"
if [ "$rc" -eq 1 ] && grep -q "cannot write plot" "$TMP/err" && [ ! -s "$TMP/out" ]; then ok; else
    bad "unwritable --plot must fail before the run: exit $rc: $(head -c 300 "$TMP/err")"; fi
for t in needle passkey multikey; do
    run_cli eval $t --help
    if [ "$rc" -eq 0 ] && grep -q "usage: kvlite eval $t" "$TMP/out" && grep -q -- "--lengths" "$TMP/out"; then ok; else
        bad "eval $t --help: exit $rc"; fi
done

if [ -z "$MODEL" ] || [ ! -f "$MODEL" ]; then
    echo "skip: retrieval runs need the model: KVL_MODEL not set or missing"
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    exit
fi

# check_json TASK NCELLS [python assertions on d]: validates the documented schema.
check_json() {
    local task=$1 ncells=$2 extra=${3:-True}
    python3 - "$TMP/out" "$task" "$ncells" "$extra" <<'EOF'
import json, re, sys
d = json.load(open(sys.argv[1]))
task, ncells, extra = sys.argv[2], int(sys.argv[3]), sys.argv[4]
for k in ["task", "model", "kv", "bytes_per_token", "kv_bytes_peak", "kv_bytes_end", "lengths", "depths",
          "seeds", "score", "by_length", "by_depth", "kv_by_length", "cells", "seconds", "prefix_sharing"]:
    assert k in d, "missing " + k
assert d["task"] == task, d["task"]
cells = d["cells"]
assert len(cells) == ncells == len(d["lengths"]) * len(d["depths"]) * d["seeds"], len(cells)
assert d["bytes_per_token"] > 0 and d["kv_bytes_peak"] >= d["kv_bytes_end"] > 0
def score(ans, exp):  # independent numeric exact match (answers with 1,234 / 1.5 forms are not rechecked)
    if re.search(r"\d[.,]\d", ans): return None
    return exp in re.findall(r"(?<!\d)\d+(?!\d)", ans)
right = 0
for c in cells:
    for k in ["length", "tokens", "depth", "seed", "needle_token_pos", "expected", "answer", "correct",
              "kv_bytes_peak", "kv_bytes_end", "depth_actual"]:
        assert k in c, "cell missing " + k
    assert abs(c["tokens"] - c["length"]) * 50 <= c["length"], (c["tokens"], c["length"])
    assert 0 < c["needle_token_pos"] < c["tokens"]
    assert c["kv_bytes_end"] >= c["tokens"] * d["bytes_per_token"] * 0.99, "KV bytes below the prompt's"
    assert c["kv_bytes_peak"] <= d["kv_bytes_peak"]
    assert isinstance(c["correct"], bool)
    if c["expected"].isdigit() and score(c["answer"], c["expected"]) is not None:
        assert c["correct"] == score(c["answer"], c["expected"]), c
    right += c["correct"]
assert abs(d["score"] - right / ncells) < 1e-9
assert set(d["by_length"]) == {str(x) for x in d["lengths"]}
assert eval(extra), extra
EOF
}

png_ok() {
    python3 - "$1" <<'EOF'
import struct, sys, zlib
b = open(sys.argv[1], "rb").read()
assert b[:8] == b"\x89PNG\r\n\x1a\n"
p, idat, w = 8, b"", 0
while p < len(b):
    n, = struct.unpack(">I", b[p:p + 4]); t = b[p + 4:p + 8]; body = b[p + 8:p + 8 + n]
    assert zlib.crc32(t + body) & 0xFFFFFFFF == struct.unpack(">I", b[p + 8 + n:p + 12 + n])[0], t
    if t == b"IHDR": w, h = struct.unpack(">II", body[:8])
    if t == b"IDAT": idat += body
    p += 12 + n
raw = zlib.decompress(idat)  # checks the Adler-32 too
assert len(raw) == h * (3 * w + 1) and w > 50 and h > 50
EOF
}

SMALL=(--lengths 256 --seeds 1)

run_cli eval needle -m "$MODEL" "${SMALL[@]}" --depths 0,50,100 --json --plot "$TMP/needle.png"
if [ "$rc" -eq 0 ] && check_json needle 3 'd["prefix_sharing"] and d["kv"] == "f16"'; then ok; else
    bad "eval needle --json: exit $rc: $(head -c 400 "$TMP/err")"; fi
cp "$TMP/out" "$TMP/needle_shared.json"
if grep -q "score" "$TMP/err" && grep -q "KV peak" "$TMP/err"; then ok; else bad "eval needle: no table on stderr"; fi
if [ -f "$TMP/needle.png" ] && png_ok "$TMP/needle.png"; then ok; else bad "eval needle --plot: invalid PNG"; fi

run_cli eval needle -m "$MODEL" "${SMALL[@]}" --depths 0,50,100 --json --no-share
if [ "$rc" -eq 0 ] && check_json needle 3 'not d["prefix_sharing"]' &&
    python3 - "$TMP/needle_shared.json" "$TMP/out" <<'EOF'; then ok; else bad "prefix sharing changes answers or KV bytes"; fi
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
keys = ["tokens", "needle_token_pos", "expected", "answer", "correct", "kv_bytes_peak", "kv_bytes_end"]
assert [[c[k] for k in keys] for c in a["cells"]] == [[c[k] for k in keys] for c in b["cells"]]
assert a["prefill_tokens"] < b["prefill_tokens"]
EOF

run_cli eval passkey -m "$MODEL" "${SMALL[@]}" --depths 0,100 --json
if [ "$rc" -eq 0 ] && check_json passkey 2 'd["haystack"] is None and d["score"] >= 0.5'; then ok; else
    bad "eval passkey --json: exit $rc: $(head -c 400 "$TMP/err")"; fi
bpt_f16=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_per_token"])' <"$TMP/out" 2>/dev/null)

run_cli eval passkey -m "$MODEL" "${SMALL[@]}" --depths 0,100 --json --kv int8 --kv-budget 64M
if [ "$rc" -eq 0 ] && check_json passkey 2 "d['kv'] == 'int8' and d['bytes_per_token'] < ${bpt_f16:-0} and not d['prefix_sharing'] and d['kv_budget'] == 64 << 20"; then
    ok; else bad "eval passkey --kv int8 --kv-budget: exit $rc: $(head -c 400 "$TMP/err") $(head -c 300 "$TMP/out")"; fi

run_cli eval multikey -m "$MODEL" "${SMALL[@]}" --depths 0,100 --keys 3 --json
if [ "$rc" -eq 0 ] && check_json multikey 2 'd["keys"] == 3 and all("distractor" in c for c in d["cells"])'; then ok; else
    bad "eval multikey --json: exit $rc: $(head -c 400 "$TMP/err")"; fi

run_cli eval needle -m "$MODEL" "${SMALL[@]}" --depths 50 --json --needle "The best thing to do in Quillbrook is to eat a sandwich." \
    --question "What is the best thing to do in Quillbrook?" --answer "eat a sandwich"
if [ "$rc" -eq 0 ] && check_json needle 1 'd["cells"][0]["expected"] == "eat a sandwich"'; then ok; else
    bad "eval needle custom needle: exit $rc: $(head -c 400 "$TMP/err")"; fi

run_cli eval needle -m "$MODEL" --lengths 32 --depths 0 --seeds 1
if [ "$rc" -eq 1 ] && grep -q "too short" "$TMP/err"; then ok; else bad "too-short length: exit $rc: $(head -c 300 "$TMP/err")"; fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
