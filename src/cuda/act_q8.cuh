/* Device side of the 8-bit activation blocks that the integer matvec
 * (gemv.cu, kvl_cuda_gemv_q8) reads: one warp quantizes one block of 32
 * values, one value per lane, with the arithmetic of the CPU's q8_block
 * (src/cpu/quant.c): d = amax / 127, id = 1 / d, code = round-to-nearest-even
 * (v * id), d stored rounded to f16 (as the CPU's Q8_0 / Q8_1 blocks keep
 * it), plus the exact sum of the codes (the CPU's Q8_1 s). Same inputs give
 * the same codes and scales as the CPU default path. Included by gemv.cu and
 * lm_ops.cu (the fused RMSNorm / SwiGLU producers). Also the two halves of
 * programmatic dependent launch between those producers and the matvec. */
#ifndef KVL_CUDA_ACT_Q8_CUH
#define KVL_CUDA_ACT_Q8_CUH

#include <cuda_fp16.h>
#include <stdint.h>

/* All 32 lanes of the warp call this together with their value v of one
 * block; lane l writes q[l]; lane 0 writes *ds = (d as f16 -> f32, sum of
 * the 32 codes). */
static __device__ __forceinline__ void kvl_q8_block_warp(float v, int lane, int8_t *q /* [32] */,
                                                         float2 *ds /* [1] */) {
    float amax = fabsf(v);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    const int c = __float2int_rn(v * id);
    int s = c;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    q[lane] = (int8_t)c;
    if (lane == 0) *ds = make_float2(__half2float(__float2half_rn(d)), (float)s);
}

/* Programmatic dependent launch (sm_90; no-ops elsewhere and in kernels
 * launched without the attribute): a producer kernel lets the next kernel
 * of the stream start early (kvl_griddep_trigger, at its start), the
 * consumer issues its independent loads (weights) and then waits for the
 * producer's completion and memory (kvl_griddep_wait) before it reads the
 * producer's output or writes anything. */
static __device__ __forceinline__ void kvl_griddep_trigger(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
static __device__ __forceinline__ void kvl_griddep_wait(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

#endif
