#!/usr/bin/env bash
# One call on the GPU machine: the device tests, then the kvlite and PyTorch
# SDPA decode-attention benchmarks, logs and JSON under $OUT (or ./out).
# Uses the binaries in build-cuda/ when they run there (built on the CPU
# machine with the same nvcc), else builds them with make CUDA=1.
#   bash bench/cuda/device_run.sh [test] [bench] [sdpa] [sweep]   (default: test bench sdpa)
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
what=${*:-test bench sdpa}
has() { case " $what " in *" $1 "*) return 0;; esac; return 1; }
date -u +"date: %Y-%m-%dT%H:%M:%SZ" | tee "$OUT/env.log"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv 2>&1 | tee -a "$OUT/env.log"
{ nvcc --version | tail -2; command -v make gcc; } 2>&1 | tee -a "$OUT/env.log"
if ! [ -x build-cuda/cuda/test_cuda ] || ldd build-cuda/cuda/test_cuda build-cuda/cuda/bench_attn | grep -q 'not found'; then
    make -j16 CUDA=1 build-cuda/cuda/test_cuda build-cuda/cuda/bench_attn 2>&1 | tail -5
fi
rc=0
if has test; then
    echo "=== test_cuda"
    # the make target builds the library and the test from source there; if
    # that machine cannot build it (e.g. no PCRE2 headers), run the carried binary
    if ! { time make -j16 CUDA=1 test-cuda; } > "$OUT/test.log" 2>&1; then
        tail -20 "$OUT/test.log"
        echo "make CUDA=1 test-cuda failed there; the carried build-cuda/cuda/test_cuda instead:"
        build-cuda/cuda/test_cuda 2>&1 | tee -a "$OUT/test.log" || rc=1
    fi
    grep -E "passed|real|error" "$OUT/test.log" | tail -5
fi
if has bench; then
    echo "=== bench_attn"
    args=(--json "$OUT/kvlite.json")
    has sweep && args+=(--sweep)
    build-cuda/cuda/bench_attn "${args[@]}" 2>&1 | tee "$OUT/bench.log" || rc=1
fi
if has sdpa; then
    echo "=== sdpa"
    PYTHONUNBUFFERED=1 python3 bench/cuda/sdpa.py --json "$OUT/sdpa.json" 2>&1 | tee "$OUT/sdpa.log" || rc=1
fi
if has ncu; then # hardware counters of the split and merge kernels at batch 1, 32K (f16)
    echo "=== ncu"
    timeout 120 ncu --clock-control none --section SpeedOfLight --section Occupancy --section LaunchStats \
        -k regex:'decode_split|merge' --launch-skip 10 --launch-count 2 \
        build-cuda/cuda/bench_attn --codecs f16 --ctx 32768 --batch 1 --reps 3 2>&1 | tee "$OUT/ncu.log" | tail -80
fi
nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu --format=csv 2>&1 | tee -a "$OUT/env.log"
exit $rc
