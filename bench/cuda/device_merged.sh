#!/usr/bin/env bash
# The merged tree on the GPU machine in two consecutive calls (the lead's
# end-of-stop check; the 98 MB model travels in two pieces):
#   call 1: bash bench/cuda/device_merged.sh build PIECE_A
#           keeps piece A, copies this tree to /tmp/kvl-wt and builds every
#           CUDA program there (make CUDA=1 -j16: CUDA_BIN and the CLI, PCRE2
#           from devdeps/ linked statically), then bench_lm --no-model
#           $BENCH_8B_ARGS (default: the 8B-shaped decode, f16 and int4z KV,
#           contexts to 32K) against the roofline;
#   call 2: bash bench/cuda/device_merged.sh run PIECE_B SHA256
#           joins and checks the model, runs `make test-cuda` on it (every
#           device test program, nothing rebuilt), then the CLI with an
#           eviction policy on the device.
# Needs devdeps/ (pcre2.h, libpcre2-8.a) in the tree root. Logs under $OUT.
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
wt=/tmp/kvl-wt md=/tmp/kvl-model
mk() { make -C "$wt" CUDA=1 PCRE_CFLAGS="-I$wt/devdeps" CUDA_PCRE_STATIC="$wt/devdeps/libpcre2-8.a" \
    NVCC_PCRE_STATIC="$wt/devdeps/libpcre2-8.a" PCRE_LIBS="$wt/devdeps/libpcre2-8.a" "$@"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,memory.used --format=csv 2>&1 | tee -a "$OUT/env.log"
date -u | tee -a "$OUT/env.log"
case "${1:-}" in
build)
    mkdir -p "$md" && cp "$2" "$md/a"
    rm -rf "$wt" && cp -r "$(pwd)" "$wt"
    bins=$(make -s -C "$wt" CUDA=1 -pn 2>/dev/null | sed -n 's/^CUDA_BIN := //p' | head -1)
    { time mk -j16 $bins build-cuda/kvlite; } > "$OUT/build.log" 2>&1
    rc=$?; tail -3 "$OUT/build.log"; grep -E "error|warning" "$OUT/build.log" | head -20
    [ $rc = 0 ] || exit 1
    # shellcheck disable=SC2086
    timeout 300 "$wt/build-cuda/cuda/bench_lm" --no-model --json "$OUT/bench_8b.json" \
        ${BENCH_8B_ARGS:---8b-lean --8b-kv f16,int4z --ctx-max 32768} > "$OUT/bench_8b.log" 2>&1 || rc=1
    grep -vE "^\| [0-9]+x[0-9]+ " "$OUT/bench_8b.log" | tail -40
    exit $rc ;;
run)
    cat "$md/a" "$2" > "$md/model.gguf" && echo "$3  $md/model.gguf" | sha256sum -c - || exit 1
    rc=0
    { time KVL_MODEL=$md/model.gguf timeout 420 make -C "$wt" CUDA=1 PCRE_CFLAGS="-I$wt/devdeps" \
        CUDA_PCRE_STATIC="$wt/devdeps/libpcre2-8.a" NVCC_PCRE_STATIC="$wt/devdeps/libpcre2-8.a" \
        PCRE_LIBS="$wt/devdeps/libpcre2-8.a" test-cuda; } > "$OUT/test_cuda_all.log" 2>&1 || rc=1
    grep -E "FAIL|passed|^real|Error" "$OUT/test_cuda_all.log" | head -40
    timeout 60 "$wt/build-cuda/kvlite" run -m "$md/model.gguf" --device cuda --kv-policy h2o --kv-keep 64 -n 48 \
        -p "The three most important things about caching are" > "$OUT/cli_h2o.log" 2>&1 || rc=1
    tail -5 "$OUT/cli_h2o.log"
    exit $rc ;;
esac
echo "usage: device_merged.sh build PIECE_A | run PIECE_B SHA256"; exit 2
