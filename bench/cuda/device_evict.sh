#!/usr/bin/env bash
# Eviction policies on the GPU machine (tests/cuda/test_cuda_evict.c), in
# two consecutive calls while the machine stays warm (the model travels in
# two pieces, as bench/cuda/device_lm.sh):
#   call 1: bash bench/cuda/device_evict.sh build PIECE_A
#           copies this tree to /tmp/kvl-wt, builds kvlite, test_cuda_evict,
#           test_cuda_stats and test_cuda_e2e (make CUDA=1 -j16, PCRE2 from
#           devdeps/), writes a random tiny GGUF and runs test_cuda_evict
#           (with the benchmark), test_cuda_stats and test_cuda_e2e on it;
#   call 2: bash bench/cuda/device_evict.sh run PIECE_B SHA256
#           joins the pieces and runs test_cuda_evict with the benchmark
#           (KVL_EVICT_BENCH=1) on SmolLM2.
# Logs under $OUT.
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
wt=/tmp/kvl-wt md=/tmp/kvl-model
mk() { make -C "$wt" -j16 CUDA=1 PCRE_LIBS="$wt/devdeps/libpcre2-8.a" PCRE_CFLAGS="-I$wt/devdeps" CUDA_PCRE_STATIC="$wt/devdeps/libpcre2-8.a" \
    NVCC_PCRE_STATIC="$wt/devdeps/libpcre2-8.a" "$@"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,memory.used --format=csv 2>&1 | tee -a "$OUT/env.log"
if [ "$1" = build ]; then
    mkdir -p "$md" && cp "$2" "$md/a"
    rm -rf "$wt" && cp -r "$(pwd)" "$wt"
    { time mk build-cuda/kvlite build-cuda/cuda/test_cuda_evict build-cuda/cuda/test_cuda_stats \
        build-cuda/cuda/test_cuda_e2e; } > "$OUT/build.log" 2>&1
    rc=$?; tail -4 "$OUT/build.log"; grep -E "error|warning" "$OUT/build.log" | head -20
    [ $rc = 0 ] || exit 1
    "$wt/build-cuda/kvlite" gguf-random --preset tiny --seed 3 -o /tmp/kvl-tiny.gguf > /dev/null || exit 1
    KVL_EVICT_BENCH=1 KVL_MODEL=/tmp/kvl-tiny.gguf timeout 150 "$wt/build-cuda/cuda/test_cuda_evict" \
        > "$OUT/test_evict_tiny.log" 2>&1 || rc=1
    grep -E "FAIL|CHECK|bench|passed" "$OUT/test_evict_tiny.log" | head -40
    timeout 90 "$wt/build-cuda/cuda/test_cuda_stats" > "$OUT/test_stats.log" 2>&1 || rc=1
    tail -2 "$OUT/test_stats.log"
    timeout 60 "$wt/build-cuda/kvlite" run -m /tmp/kvl-tiny.gguf --device cuda --kv-policy h2o --kv-keep 32 \
        -p "one two three four five six seven eight nine ten" -n 48 --stats > "$OUT/cli_tiny.log" 2>&1 || rc=1
    tail -4 "$OUT/cli_tiny.log"
    KVL_MODEL=/tmp/kvl-tiny.gguf timeout 100 "$wt/build-cuda/cuda/test_cuda_e2e" > "$OUT/test_e2e_tiny.log" 2>&1 || rc=1
    grep -E "FAIL|CHECK|refused|passed" "$OUT/test_e2e_tiny.log" | head -12
    exit $rc
fi
if [ "$1" = run ]; then
    cat "$md/a" "$2" > "$md/model.gguf"
    echo "$3  $md/model.gguf" | sha256sum -c - || exit 1
    KVL_EVICT_BENCH=1 KVL_MODEL=$md/model.gguf timeout 300 "$wt/build-cuda/cuda/test_cuda_evict" \
        > "$OUT/test_evict_smollm2.log" 2>&1; rc=$?
    grep -E "FAIL|CHECK|bench|passed" "$OUT/test_evict_smollm2.log" | head -60
    timeout 60 "$wt/build-cuda/kvlite" run -m "$md/model.gguf" --device cuda --kv-policy h2o --kv-keep 64 \
        -p "The history of the printing press begins in the fifteenth century, when" -n 200 --stats \
        > "$OUT/cli_smollm2.log" 2>&1 || rc=1
    tail -6 "$OUT/cli_smollm2.log"
    nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu --format=csv 2>&1 | tee -a "$OUT/env.log"
    exit $rc
fi
