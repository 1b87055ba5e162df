#!/usr/bin/env bash
# The tensor-core prefill GEMM on the GPU machine in ONE call, no model file
# travelling (2026-12-03): run from the tree root (devdeps/ with pcre2.h and
# libpcre2-8.a beside src/, as device_lm.sh expects):
#   bash bench/cuda/device_gemm.sh
# builds test_cuda_gemm, bench_lm, test_cuda_e2e and the CLI (make CUDA=1,
# -j16), runs test_cuda_gemm (the GEMM against the host and the matvec; the
# forward pass with the GEMM and the logits tail), test_cuda_e2e on a random
# tiny GGUF (greedy tokens vs the CPU, the GEMM on in the prompt's call),
# then bench_lm --prefill-gemm: the GEMM alone on the 8B's matrices against
# the matvec, the 8B-shaped prefill and kvl_prefill on a random GGUF of
# SmolLM2-135M's shape (30 layers, 576, 9/3 heads, ffn 1536, vocab 49152,
# tied; every matrix Q4_1, where the real file's embedding is Q8_0) with
# the GEMM off / on / on + logits tail. Logs under $OUT (5 files).
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
wt=$(pwd)
mk() { make -C "$wt" -j16 CUDA=1 PCRE_CFLAGS="-I$wt/devdeps" CUDA_PCRE_STATIC="$wt/devdeps/libpcre2-8.a" \
    NVCC_PCRE_STATIC="$wt/devdeps/libpcre2-8.a" PCRE_LIBS="$wt/devdeps/libpcre2-8.a" "$@"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,memory.used --format=csv > "$OUT/env.log" 2>&1
{ time mk build-cuda/cuda/test_cuda_gemm build-cuda/cuda/bench_lm build-cuda/cuda/test_cuda_e2e build-cuda/kvlite; } \
    > "$OUT/build.log" 2>&1
rc=$?; tail -3 "$OUT/build.log"; grep -E "error|warning" "$OUT/build.log" | head -20
[ $rc = 0 ] || exit 1
timeout 150 build-cuda/cuda/test_cuda_gemm > "$OUT/tests.log" 2>&1 || rc=1
grep -E "FAIL|note|passed" "$OUT/tests.log" | head -30
build-cuda/kvlite gguf-random --preset tiny --seed 3 -o /tmp/kvl-tiny.gguf > /dev/null 2>&1
KVL_MODEL=/tmp/kvl-tiny.gguf timeout 150 build-cuda/cuda/test_cuda_e2e >> "$OUT/tests.log" 2>&1 || rc=1
grep -E "FAIL|note|passed" "$OUT/tests.log" | tail -25
{ time build-cuda/kvlite gguf-random --preset tiny --layers 30 --dim 576 --heads 9 --kv-heads 3 --ffn 1536 --vocab 49152 \
    --tied 1 --ctx 65536 --type q4_1 --seed 5 -o /tmp/kvl-smol.gguf; } >> "$OUT/env.log" 2>&1
timeout 300 build-cuda/cuda/bench_lm --model /tmp/kvl-smol.gguf --prefill-gemm --json "$OUT/bench.json" \
    > "$OUT/bench.log" 2>&1 || rc=1
cat "$OUT/bench.log"
nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu --format=csv >> "$OUT/env.log" 2>&1
exit $rc
