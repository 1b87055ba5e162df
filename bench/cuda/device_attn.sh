#!/usr/bin/env bash
# One call on the GPU machine for the decode-attention kernels (2026-12-03b):
# builds bench_attn from this tree (the default kernels), then copies of the
# build with experiment macros (attn_tc.cuh: KVL_TC_EXPT, TC_STAGES_*,
# TC_MINB_*), only the tensor-core objects rebuilt, and runs each binary on
# its shapes; ncu on a few launches; logs tarred into $OUT/attn.tgz.
#   bash bench/cuda/device_attn.sh            (from the tree root, devdeps/ there)
# VARIANTS: "name|macros|bench_attn args;..." (default: the experiments below)
# NCU: "codec:batch:ctx ..." launches to profile (split kernel), empty: none
# TEST_VARIANTS: variants whose test_cuda and test_cuda_stats are built and run too (default s6)
# SDPA=1: also bench/cuda/sdpa.py (SDPA_ARGS) in the same run (SDPA_FIRST=1:
# right after the default binary, before the variants, so a run cut short
# keeps it)
set -uo pipefail
OUT=${OUT:-out}
L=$OUT/logs
mkdir -p "$L"
T=$(pwd)
{ date -u +"date: %Y-%m-%dT%H:%M:%SZ"; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv; nvcc --version | tail -1; } 2>&1 | tee "$L/env.log"
BASE_ARGS=${BASE_ARGS:---codecs f16,int8,int4z,kivi2z --ctx 32832,131072 --batch 1,16 --no-capacity --reps 20}
E_ARGS="--codecs f16,int4z,kivi2z --ctx 32832 --batch 1,16 --no-capacity --reps 20"
VARIANTS=${VARIANTS-"s6|-DTC_STAGES_F16=6 -DTC_STAGES_B8=6 -DTC_STAGES_INT4Z=6 -DTC_STAGES_KIVI2Z=6|$BASE_ARGS;e1|-DKVL_TC_EXPT=1|$E_ARGS;e2|-DKVL_TC_EXPT=2|$E_ARGS;e3|-DKVL_TC_EXPT=3|$E_ARGS;e4|-DKVL_TC_EXPT=4|$E_ARGS;m3|-DTC_MINB_INT4Z=3 -DTC_MINB_KIVI2Z=3|--codecs int4z,kivi2z --ctx 32832,131072 --batch 1,16 --no-capacity --reps 20"}
NCU=${NCU-"int4z:16:32832 int4z:1:32832 f16:1:32832"}
t0=$(date +%s)
run_sdpa() {
    echo "=== sdpa ($(( $(date +%s) - t0 )) s)"
    # shellcheck disable=SC2086
    PYTHONUNBUFFERED=1 python3 bench/cuda/sdpa.py ${SDPA_ARGS:-} --json "$L/sdpa.json" 2>&1 | tee "$L/sdpa.log" | grep -E '^\| (flash|cudnn) |copy'
}
make -j16 CUDA=1 build-cuda/cuda/bench_attn build-cuda/cuda/test_cuda build-cuda/cuda/test_cuda_stats > "$L/build.log" 2>&1 || { tail -30 "$L/build.log"; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"
# variant builds in the background (CPU) while the default binary runs (GPU);
# BASE_TAR (a tar of another tree, e.g. git archive of main): built whole as
# variant "base", run with BASE_ARGS (before / after in one run)
IFS=';' read -ra VS <<< "$VARIANTS"
if [ -n "${BASE_TAR:-}" ] && [ -f "$BASE_TAR" ]; then
    (rm -rf /tmp/v_base && mkdir -p /tmp/v_base && tar xf "$BASE_TAR" -C /tmp/v_base && cd /tmp/v_base &&
        make -j8 CUDA=1 build-cuda/cuda/bench_attn) > "$L/build_base.log" 2>&1 &
    VS=("base||$BASE_ARGS" "${VS[@]}")
fi
for v in "${VS[@]}"; do
    IFS='|' read -r name macros args <<< "$v"
    [ "$name" = base ] && continue
    (rm -rf "/tmp/v_$name" && cp -a "$T" "/tmp/v_$name" && cd "/tmp/v_$name" &&
        rm -f build-cuda/src/cuda/attn_*_tc.o build-cuda/src/cuda/attn_stats_tc*.o build-cuda/src/cuda/attn_decode.o &&
        make -j4 CUDA=1 CUDA_ARCH="-gencode=arch=compute_90a,code=sm_90a $macros" build-cuda/cuda/bench_attn \
            $(case " ${TEST_VARIANTS-s6} " in *" $name "*) echo build-cuda/cuda/test_cuda build-cuda/cuda/test_cuda_stats;; esac)) > "$L/build_$name.log" 2>&1 &
done
echo "=== default"
{ time build-cuda/cuda/test_cuda; } > "$L/test.log" 2>&1; grep -E "FAIL|passed|real|tensor-core kernel:" "$L/test.log" | tail -8
{ time timeout 120 build-cuda/cuda/test_cuda_stats; } > "$L/test_stats.log" 2>&1; grep -E "FAIL|passed|real" "$L/test_stats.log" | tail -8
# shellcheck disable=SC2086
build-cuda/cuda/bench_attn $BASE_ARGS --json "$L/new.json" 2>&1 | tee "$L/new.log" | grep -E '^\| |copy|read-only'
for n in $NCU; do
    IFS=':' read -r c b x <<< "$n"
    timeout 120 ncu --clock-control none --section SpeedOfLight --section Occupancy --section WarpStateStats \
        --section SchedulerStats --section LaunchStats -k regex:tc_split --launch-skip 5 --launch-count 1 \
        build-cuda/cuda/bench_attn --codecs "$c" --ctx "$x" --batch "$b" --reps 3 --no-capacity > "$L/ncu_${c}_${b}x$x.log" 2>&1
    echo "--- ncu $n"
    grep -E "Duration|DRAM Throughput|Memory Throughput|Compute \(SM\) Th|Achieved Occupancy|Theoretical Occ|Registers Per|Issued Warp|No Eligible|Issue Slots Busy|Active Warps Per|Eligible Warps|Warp Cycles Per Issued|Block Limit" "$L/ncu_${c}_${b}x$x.log" | head -20
done
[ "${SDPA:-0}" = 1 ] && [ "${SDPA_FIRST:-0}" = 1 ] && run_sdpa
wait
echo "variants built ($(( $(date +%s) - t0 )) s)"
for v in "${VS[@]}"; do
    IFS='|' read -r name macros args <<< "$v"
    echo "=== $name ($macros) ($(( $(date +%s) - t0 )) s)"
    if ! [ -x "/tmp/v_$name/build-cuda/cuda/bench_attn" ]; then tail -20 "$L/build_$name.log"; continue; fi
    if [ -x "/tmp/v_$name/build-cuda/cuda/test_cuda" ]; then
        { time "/tmp/v_$name/build-cuda/cuda/test_cuda"; } > "$L/test_$name.log" 2>&1; grep -E "FAIL|passed|real|tensor-core kernel:" "$L/test_$name.log" | tail -8
    fi
    if [ -x "/tmp/v_$name/build-cuda/cuda/test_cuda_stats" ]; then
        { time timeout 120 "/tmp/v_$name/build-cuda/cuda/test_cuda_stats"; } > "$L/test_stats_$name.log" 2>&1; grep -E "FAIL|passed|real" "$L/test_stats_$name.log" | tail -8
    fi
    # shellcheck disable=SC2086
    "/tmp/v_$name/build-cuda/cuda/bench_attn" $args --json "$L/$name.json" 2>&1 | tee "$L/$name.log" | grep -E '^\| [a-z]'
done
[ "${SDPA:-0}" = 1 ] && [ "${SDPA_FIRST:-0}" != 1 ] && run_sdpa
# instruction mix of the tensor-core kernels (D 128, G 4), default build
for o in attn_int4z_tc attn_kivi2z_tc attn_f16_tc; do
    cuobjdump -sass "build-cuda/src/cuda/$o.o" > "$L/sass_$o.txt" 2>&1
    awk '/Function :/ {f = $3} /^ +\/\*[0-9a-f]+\*\// && f ~ /Li128ELi4ELi/ {n[f]++; split($2, op, "."); c[f, op[1]]++}
         END {for (f in n) {printf "%s: %d", substr(f, 1, 60), n[f]; for (k in c) {split(k, kk, SUBSEP); if (kk[1] == f && c[k] >= 20) printf " %s %d", kk[2], c[k]} print ""}}' \
        "$L/sass_$o.txt" | tee -a "$L/sass_counts.log"
done
[ -d /tmp/v_base ] && for o in attn_int4z_tc attn_kivi2z_tc; do cuobjdump -sass "/tmp/v_base/build-cuda/src/cuda/$o.o" > "$L/sass_base_$o.txt" 2>&1; done
nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu --format=csv 2>&1 | tee -a "$L/env.log"
echo "total $(( $(date +%s) - t0 )) s"
tar czf "$OUT/attn.tgz" -C "$OUT" logs && rm -rf "$L"
