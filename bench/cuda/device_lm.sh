#!/usr/bin/env bash
# The CUDA forward pass on the GPU machine, in two consecutive calls while
# the machine stays warm (the 98 MB model travels in two pieces of < 64 MiB):
#   call 1: bash bench/cuda/device_lm.sh build PIECE_A
#           keeps piece A in /tmp/kvl-model, copies this tree to /tmp/kvl-wt,
#           builds the device programs there (make CUDA=1, PCRE2 from
#           devdeps/ linked statically: the machine has none) and runs
#           test_cuda_lm, test_cuda_seal and test_cuda_prefill (the kernels
#           against the CPU references), then,
#           if BENCH_8B_ARGS is set, bench_lm with those arguments (no model
#           needed: e.g. "--no-model --gemv --8b-q4 --ctx-max 131072");
#   call 2: bash bench/cuda/device_lm.sh run PIECE_B SHA256
#           joins the pieces, checks the sha256, runs test_cuda_e2e (greedy
#           tokens vs the CPU exact path) and bench_lm (decode tok/s,
#           SmolLM2-135M and an 8B-shaped llama against the roofline).
# Or in one call without the model:
#   bash bench/cuda/device_lm.sh gguf
#           builds kvlite and bench_lm there, writes the random Llama-3-8B
#           GGUF (kvlite gguf-random --preset llama3-8b, GGUF_TYPE q8_0 by
#           default) to /tmp and runs bench_lm --gguf on it (the model loader
#           path) with BENCH_GGUF_ARGS (default --8b-lean: the descriptor
#           path's 8B beside it); RUN_LM_TEST=1 runs test_cuda_lm first,
#           RUN_E2E_TINY=1 test_cuda_e2e on a random tiny GGUF; PIECE_A=FILE
#           keeps a model piece for a `run` call next (SKIP_BENCH=1 there:
#           the tests only); GGUF_8B=0 skips the 8B GGUF and runs
#           bench_lm --no-model $BENCH_8B_ARGS (default --8b-lean) instead.
#           Needs devdeps/ (pcre2.h, libpcre2-8.a) in the staged tree.
# Logs under $OUT.
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
step=$1
wt=/tmp/kvl-wt md=/tmp/kvl-model
mk() { make -C "$wt" -j16 CUDA=1 PCRE_CFLAGS="-I$wt/devdeps" CUDA_PCRE_STATIC="$wt/devdeps/libpcre2-8.a" \
    NVCC_PCRE_STATIC="$wt/devdeps/libpcre2-8.a" "$@"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,memory.used --format=csv 2>&1 | tee -a "$OUT/env.log"
if [ "$step" = build ]; then
    mkdir -p "$md" && cp "$2" "$md/a" && ls -la "$md"
    rm -rf "$wt" && cp -r "$(pwd)" "$wt"
    { time mk build-cuda/cuda/test_cuda_lm build-cuda/cuda/test_cuda_e2e build-cuda/cuda/bench_lm build-cuda/cuda/test_cuda \
        build-cuda/cuda/test_cuda_seal build-cuda/cuda/test_cuda_prefill; } > "$OUT/build.log" 2>&1
    rc=$?; tail -4 "$OUT/build.log"; grep -E "error|warning" "$OUT/build.log" | head -20
    [ $rc = 0 ] || exit 1
    timeout 240 "$wt/build-cuda/cuda/test_cuda_lm" > "$OUT/test_lm.log" 2>&1; rc=$?
    grep -E "FAIL|note|passed" "$OUT/test_lm.log" | head -40
    timeout 120 "$wt/build-cuda/cuda/test_cuda_seal" > "$OUT/test_seal.log" 2>&1 || rc=1
    grep -E "FAIL|seal|note|passed" "$OUT/test_seal.log" | head -30
    timeout 200 "$wt/build-cuda/cuda/test_cuda_prefill" > "$OUT/test_prefill.log" 2>&1 || rc=1
    grep -E "FAIL|note|passed" "$OUT/test_prefill.log" | head -30
    if [ -n "${BENCH_8B_ARGS:-}" ]; then
        # shellcheck disable=SC2086
        timeout 300 "$wt/build-cuda/cuda/bench_lm" --json "$OUT/bench_8b.json" $BENCH_8B_ARGS > "$OUT/bench_8b.log" 2>&1 || rc=1
        grep -vE "^\| [0-9]+x[0-9]+ " "$OUT/bench_8b.log" | tail -60
    fi
    nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu --format=csv 2>&1 | tee -a "$OUT/env.log"
    exit $rc
fi
if [ "$step" = run ]; then
    cat "$md/a" "$2" > "$md/model.gguf" && ls -la "$md/model.gguf"
    echo "$3  $md/model.gguf" | sha256sum -c - || exit 1
    rc=0
    if [ "${RUN_MAKE_TEST:-0}" = 1 ]; then # make test-cuda itself: test_cuda_lm, test_cuda_e2e, test_cuda
        KVL_MODEL=$md/model.gguf timeout 400 make -C "$wt" CUDA=1 PCRE_CFLAGS="-I$wt/devdeps" \
            CUDA_PCRE_STATIC="$wt/devdeps/libpcre2-8.a" NVCC_PCRE_STATIC="$wt/devdeps/libpcre2-8.a" test-cuda \
            > "$OUT/test_cuda_all.log" 2>&1 || rc=1
        grep -E "FAIL|note: (exact|8-bit|CPU)|passed" "$OUT/test_cuda_all.log" | head -40
        if [ $rc != 0 ]; then # a failure stops the recipe: the attention tests on their own
            timeout 200 "$wt/build-cuda/cuda/test_cuda" > "$OUT/test_attn.log" 2>&1; tail -1 "$OUT/test_attn.log"
        fi
    else
        KVL_MODEL=$md/model.gguf "$wt/build-cuda/cuda/test_cuda_e2e" > "$OUT/test_e2e.log" 2>&1 || rc=1
        grep -E "FAIL|note|passed" "$OUT/test_e2e.log" | head -30
    fi
    if [ "${SKIP_BENCH:-0}" != 1 ]; then
        timeout 240 "$wt/build-cuda/cuda/bench_lm" --model "$md/model.gguf" --json "$OUT/bench_lm.json" ${BENCH_LM_ARGS:-} 2>&1 | tee "$OUT/bench_lm.log" || rc=1
    fi
    if [ "${RUN_ATTN_TEST:-0}" = 1 ]; then "$wt/build-cuda/cuda/test_cuda" > "$OUT/test_attn.log" 2>&1 || rc=1; tail -2 "$OUT/test_attn.log"; fi
    nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu --format=csv 2>&1 | tee -a "$OUT/env.log"
    exit $rc
fi
if [ "$step" = gguf ]; then # one call, no model piece: the random 8B GGUF written there and benched through the loader
    if [ -n "${PIECE_A:-}" ]; then mkdir -p "$md" && cp "$PIECE_A" "$md/a" && ls -la "$md"; fi # for a `run` call next
    rm -rf "$wt" && cp -r "$(pwd)" "$wt"
    targets="build-cuda/kvlite build-cuda/cuda/bench_lm build-cuda/cuda/test_cuda_e2e"
    [ "${RUN_LM_TEST:-0}" = 1 ] && targets="$targets build-cuda/cuda/test_cuda_lm"
    # shellcheck disable=SC2086
    { time mk PCRE_LIBS="$wt/devdeps/libpcre2-8.a" $targets; } > "$OUT/build.log" 2>&1
    rc=$?; tail -4 "$OUT/build.log"; grep -E "error|warning" "$OUT/build.log" | head -20
    [ $rc = 0 ] || exit 1
    if [ "${RUN_LM_TEST:-0}" = 1 ]; then
        timeout 240 "$wt/build-cuda/cuda/test_cuda_lm" > "$OUT/test_lm.log" 2>&1 || rc=1
        grep -E "FAIL|passed" "$OUT/test_lm.log" | head -20
    fi
    if [ "${RUN_E2E_TINY:-0}" = 1 ]; then # the e2e test through a random tiny GGUF (greedy tokens vs the CPU)
        "$wt/build-cuda/kvlite" gguf-random --preset tiny --seed 3 -o /tmp/kvl-tiny.gguf
        KVL_MODEL=/tmp/kvl-tiny.gguf timeout 120 "$wt/build-cuda/cuda/test_cuda_e2e" > "$OUT/test_e2e_tiny.log" 2>&1 || rc=1
        grep -E "FAIL|note|passed" "$OUT/test_e2e_tiny.log" | head -20
    fi
    if [ "${GGUF_8B:-1}" = 0 ]; then # no 8B GGUF: the descriptor path's 8B rows (bench_lm --no-model $BENCH_8B_ARGS)
        # shellcheck disable=SC2086
        timeout 200 "$wt/build-cuda/cuda/bench_lm" --no-model --json "$OUT/bench_8b.json" ${BENCH_8B_ARGS:---8b-lean} \
            > "$OUT/bench_8b.log" 2>&1 || rc=1
        grep -vE "^\| [0-9]+x[0-9]+ " "$OUT/bench_8b.log" | tail -40
        exit $rc
    fi
    g=/tmp/kvl-8b-${GGUF_TYPE:-q8_0}.gguf
    { time "$wt/build-cuda/kvlite" gguf-random --preset llama3-8b --type "${GGUF_TYPE:-q8_0}" --seed 1 -o "$g"; } 2>&1 | tee "$OUT/gguf_write.log"
    ls -la "$g"; df -h /tmp | tail -1; free -g | head -2
    # shellcheck disable=SC2086
    timeout 400 "$wt/build-cuda/cuda/bench_lm" --no-model --gguf "$g" ${BENCH_GGUF_ARGS:---8b-lean} \
        --json "$OUT/bench_gguf.json" 2>&1 | tee "$OUT/bench_gguf.log" || rc=1
    nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu --format=csv 2>&1 | tee -a "$OUT/env.log"
    exit $rc
fi
echo "usage: device_lm.sh build PIECE_A | run PIECE_B SHA256 | gguf"; exit 2
