#!/usr/bin/env bash
# Third device call of 2026-12-02: load cache hints (kernel variants 5, 6)
# against the default kernel (0), every shape, f16 and int8, after the tests.
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
build-cuda/cuda/test_cuda > "$OUT/test.log" 2>&1; grep -E "passed|FAIL|CHECK" "$OUT/test.log" | tail -5
build-cuda/cuda/bench_attn --sweep --variants 0,5,6 2>&1 | tee "$OUT/bench_hints.log" | grep -E "^\||sweep|copy"
