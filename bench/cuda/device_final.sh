#!/usr/bin/env bash
# The evening's final call (2026-12-02): device_run.sh test bench old sdpa,
# then the 21:11 binary (commit 4673aed, packed as
# build-cuda/pack/bench_attn_4673aed.gz) on the int4z / kivi2z shapes of the
# last change, for a same-call comparison (stdout only; its JSON under $OUT
# only if the tests of the current binary failed: then it is the fallback).
set -uo pipefail
OUT=${OUT:-out}
gunzip -c build-cuda/pack/bench_attn_4673aed.gz > /tmp/bench_attn_4673aed && chmod +x /tmp/bench_attn_4673aed
bash bench/cuda/device_run.sh test bench old sdpa 2>&1 | grep -v '^note'
echo "=== 4673aed (21:11 binary), same call"
if grep -q ' 0 failed' "$OUT/test.log"; then
    /tmp/bench_attn_4673aed --codecs int4z,kivi2z --ctx 32768,131072 --batch 1,16 --no-capacity
else
    echo "current binary failed its tests: 4673aed as the fallback"
    rm -f "$OUT/bench.log"
    /tmp/bench_attn_4673aed --codecs int4z,kivi2z --no-capacity --json "$OUT/fallback.json"
fi
