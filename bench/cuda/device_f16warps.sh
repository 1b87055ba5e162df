#!/usr/bin/env bash
# One device call for the f16 tensor-core decode kernel's warps / blocks
# per SM (docs/RESULTS.md, "CUDA f16 decode attention: more warps per SM
# (2026-12-06)"): the default build (4 warps x pair steps, 4-stage ring, one
# block per SM = the kernel of main: same PTX), then PyTorch SDPA on the same
# shapes, then copies of the build with the experiment macros of
# attn_tc_frag.cuh / attn_tc.cuh (each with test_cuda and test_cuda_stats):
#   w2p  2 warps, pairs, 4 stages, 3 blocks per SM (66 KB rings per block)
#   w8s  8 warps, one tile per step, 3 stages (2 in flight), 1 block (198 KB)
#   w4s  4 warps, one tile per step, 3 stages, 2 blocks per SM (99 KB)
#   w2s  2 warps, one tile per step, 3 stages, 4 blocks per SM (50 KB)
#   w6p  6 warps, pairs, 4 stages, 1 block (198 KB)
#   (w2s4 with EXTRA=1: 2 warps x single steps x 4 stages x 3 blocks)
# From the tree root on the device machine; logs in $OUT/attn.tgz.
# LIMIT: seconds for device_attn.sh (default 250; what is not done by then
# is cut, the logs so far still come back).
set -uo pipefail
A="--codecs f16 --ctx 4096,32832,131072 --batch 1,16,64 --no-capacity --reps 20"
V="w2p|-DTC_WARPS_F16=2 -DTC_MINB_F16=3|$A"
V="$V;w8s|-DTC_WARPS_F16=8 -DTC_STEP_F16=1 -DTC_STAGES_F16=3|$A"
V="$V;w4s|-DTC_WARPS_F16=4 -DTC_STEP_F16=1 -DTC_STAGES_F16=3 -DTC_MINB_F16=2|$A"
V="$V;w2s|-DTC_WARPS_F16=2 -DTC_STEP_F16=1 -DTC_STAGES_F16=3 -DTC_MINB_F16=4|$A"
V="$V;w6p|-DTC_WARPS_F16=6|$A"
TV="w2p w8s w4s w2s w6p"
if [ "${EXTRA:-0}" = 1 ]; then
    V="$V;w2s4|-DTC_WARPS_F16=2 -DTC_STEP_F16=1 -DTC_STAGES_F16=4 -DTC_MINB_F16=3|$A"
    TV="$TV w2s4"
fi
OUT=${OUT:-out}
BASE_ARGS="$A" NCU="${NCU:-}" TEST_VARIANTS="$TV" VARIANTS="$V" SDPA=1 SDPA_FIRST=1 \
    SDPA_ARGS="--ctx 4096,32832,131072 --batch 1,16,64 --reps 20" OUT="$OUT" \
    timeout "${LIMIT:-250}" bash bench/cuda/device_attn.sh
[ -f "$OUT/attn.tgz" ] || tar czf "$OUT/attn.tgz" -C "$OUT" logs
