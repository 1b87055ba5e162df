#!/usr/bin/env bash
# One call on the GPU machine: the device tests, then the kvlite (and
# optionally PyTorch SDPA) decode-attention benchmarks, logs and JSON under
# $OUT (or ./out). Uses the binaries of build-cuda/pack/bins.tgz (made here by
# bench/cuda/pack.sh, carried with the call) or of build-cuda/cuda/ when they
# run there (built on the CPU machine with the same nvcc), else builds them
# with make CUDA=1.
#   bash bench/cuda/device_run.sh [test] [bench] [old] [sdpa] [sweep] [ncu]   (default: test bench)
# BENCH_ARGS: extra arguments of bench_attn (e.g. "--codecs f16,int4z --ctx 32768").
# old: the CUDA-core kernels the tensor-core ones replaced (int4z variant 2,
# kivi2z variant 1), same shapes (OLD_ARGS: extra arguments), into old.json.
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
what=${*:-test bench}
has() { case " $what " in *" $1 "*) return 0;; esac; return 1; }
date -u +"date: %Y-%m-%dT%H:%M:%SZ" | tee "$OUT/env.log"
{ git log -1 --format='tree: %h %s' 2>/dev/null; git branch --show-current 2>/dev/null; } | tee -a "$OUT/env.log"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw,memory.used,memory.total --format=csv 2>&1 | tee -a "$OUT/env.log"
{ nvcc --version | tail -2; command -v make gcc; } 2>&1 | tee -a "$OUT/env.log"
[ -f build-cuda/pack/bins.tgz ] && tar xzf build-cuda/pack/bins.tgz
if ! [ -x build-cuda/cuda/test_cuda ] || ldd build-cuda/cuda/test_cuda build-cuda/cuda/bench_attn | grep -q 'not found'; then
    make -j16 CUDA=1 build-cuda/cuda/test_cuda build-cuda/cuda/bench_attn 2>&1 | tail -5
fi
rc=0
if has test; then
    echo "=== test_cuda"
    { time build-cuda/cuda/test_cuda; } > "$OUT/test.log" 2>&1 || rc=1
    grep -E "FAIL|passed|real" "$OUT/test.log" | tail -25
fi
if has bench; then
    echo "=== bench_attn"
    args=(--json "$OUT/kvlite.json")
    has sweep && args+=(--sweep)
    # shellcheck disable=SC2206
    args+=(${BENCH_ARGS:-})
    build-cuda/cuda/bench_attn "${args[@]}" 2>&1 | tee "$OUT/bench.log" || rc=1
fi
if has old; then
    echo "=== bench_attn, replaced kernels"
    # shellcheck disable=SC2206
    oa=(--no-capacity ${OLD_ARGS:-})
    { build-cuda/cuda/bench_attn --codecs int4z --variant 2 --json "$OUT/old_int4z.json" "${oa[@]}" &&
      build-cuda/cuda/bench_attn --codecs kivi2z --variant 1 --json "$OUT/old_kivi2z.json" "${oa[@]}"; } 2>&1 | tee "$OUT/old.log" || rc=1
    # one file back (a call returns at most 8): [int4z run, kivi2z run]
    { printf '['; cat "$OUT/old_int4z.json"; printf ','; cat "$OUT/old_kivi2z.json"; printf ']\n'; } > "$OUT/old.json" &&
        rm -f "$OUT/old_int4z.json" "$OUT/old_kivi2z.json"
fi
if has sdpa; then
    echo "=== sdpa"
    PYTHONUNBUFFERED=1 python3 bench/cuda/sdpa.py --json "$OUT/sdpa.json" 2>&1 | tee "$OUT/sdpa.log" || rc=1
fi
if has ncu; then # hardware counters of the split kernels at batch 16, 32K (NCU_CODECS)
    echo "=== ncu"
    for c in ${NCU_CODECS:-int4z kivi2z}; do
        timeout 150 ncu --clock-control none --section SpeedOfLight --section Occupancy --section WarpStateStats \
            -k regex:decode_split --launch-skip 10 --launch-count 1 \
            build-cuda/cuda/bench_attn --codecs "$c" --ctx 32768 --batch 16 --reps 3 --no-capacity > "$OUT/ncu_$c.log" 2>&1
        echo "--- $c"; grep -E "Duration|DRAM Throughput|Compute \(SM\)|Achieved Occupancy|Registers Per|Issued Warp|No Eligible" "$OUT/ncu_$c.log" | head -12
    done
fi
nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu --format=csv 2>&1 | tee -a "$OUT/env.log"
exit $rc
