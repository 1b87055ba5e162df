#!/usr/bin/env bash
# Second device call of 2026-12-02: page sizes 16 / 64 next to 32, and
# hardware counters (ncu) of the f16 and int8 split kernels at batch 16, 32K.
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
for P in 16 64; do
    build-cuda/cuda/bench_attn --P $P --ctx 4096,32768 --batch 1,16 2>&1 | tee "$OUT/bench_P$P.log"
done
for c in f16 int8; do
    timeout 150 ncu --clock-control none --section SpeedOfLight --section Occupancy --section WarpStateStats \
        --section SchedulerStats --section MemoryWorkloadAnalysis -k regex:decode_split --launch-skip 10 --launch-count 1 \
        build-cuda/cuda/bench_attn --codecs $c --ctx 32768 --batch 16 --reps 3 > "$OUT/ncu_$c.log" 2>&1
    grep -E "Duration|DRAM Throughput|Compute \(SM\)|Achieved Occupancy|Registers|Issued Warp|No Eligible|Stall|cycles per issued|Warp Cycles|L2 Hit|Mem Busy|Max Bandwidth" "$OUT/ncu_$c.log" | head -30
done
