#!/usr/bin/env bash
# Attention statistics and KV compaction on the GPU machine, one call (no
# model needed): copies this tree to /tmp/kvl-wt, builds test_cuda_stats,
# test_cuda and bench_attn there (they link src/kv, src/util, src/cpu and
# src/cuda only), runs test_cuda_stats (kvl_cuda_attn_run_stats and
# kvl_cuda_kv_compact against kvl_kv_attend / kvl_kv_drop), test_cuda when
# RUN_ATTN_TEST=1 (the decode attention, whose kernels gained the template
# flag), and bench_attn with BENCH_ARGS when set (e.g. "--codecs f16,int8
# --ctx 4096,32768 --batch 1,16 --stats mass,all --no-capacity": each row
# with statistics off, then on). Logs under $OUT.
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
wt=/tmp/kvl-wt
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,memory.used --format=csv 2>&1 | tee -a "$OUT/env.log"
date -u | tee -a "$OUT/env.log"
rm -rf "$wt" && cp -r "$(pwd)" "$wt"
{ time make -C "$wt" -j16 CUDA=1 build-cuda/cuda/test_cuda_stats build-cuda/cuda/test_cuda build-cuda/cuda/bench_attn; } \
    > "$OUT/build.log" 2>&1
rc=$?
tail -4 "$OUT/build.log"
grep -E "error|warning" "$OUT/build.log" | head -20
[ $rc = 0 ] || exit 1
timeout 240 "$wt/build-cuda/cuda/test_cuda_stats" > "$OUT/test_stats.log" 2>&1 || rc=1
grep -E "FAIL|refused|comparisons|passed" "$OUT/test_stats.log" | head -40
tail -2 "$OUT/test_stats.log"
if [ "${RUN_ATTN_TEST:-0}" = 1 ]; then
    timeout 240 "$wt/build-cuda/cuda/test_cuda" > "$OUT/test_attn.log" 2>&1 || rc=1
    grep -E "FAIL" "$OUT/test_attn.log" | head -20
    tail -2 "$OUT/test_attn.log"
fi
if [ -n "${BENCH_ARGS:-}" ]; then
    date -u | tee -a "$OUT/env.log"
    # shellcheck disable=SC2086
    timeout 300 "$wt/build-cuda/cuda/bench_attn" $BENCH_ARGS --json "$OUT/bench_stats.json" 2>&1 | tee "$OUT/bench_stats.log" || rc=1
fi
nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu --format=csv 2>&1 | tee -a "$OUT/env.log"
exit $rc
