/* Pieces shared by the integer matvec kernels on 8-bit activation blocks
 * (gemv.cu: kvl_cuda_gemv_q8; gemv_norm.cu: the same matvec with the
 * RMSNorm and quantization of its input in the prologue): the block shape,
 * 16-byte weight loads through or around L1, the 16-code dot product, and
 * the launch configuration with programmatic dependent launch. */
#ifndef KVL_CUDA_GEMV_Q8_CUH
#define KVL_CUDA_GEMV_Q8_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#define GEMV_WARPS 8 /* warps per block */

/* 16 weight code bytes: H = 0 read-only through L1, 1 bypassing L1 (the
 * activations stay there) */
template <int H> static __device__ __forceinline__ uint4 ldw16(const void *p) {
    if constexpr (H == 0) {
        return __ldg(reinterpret_cast<const uint4 *>(p));
    } else {
        uint4 v;
        asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
            : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
            : "l"(p));
        return v;
    }
}

static __device__ __forceinline__ int dp4a16(uint4 w, uint4 a, int s) {
    s = __dp4a((int)w.x, (int)a.x, s);
    s = __dp4a((int)w.y, (int)a.y, s);
    s = __dp4a((int)w.z, (int)a.z, s);
    return __dp4a((int)w.w, (int)a.w, s);
}

/* Launch configuration of a matvec kernel: grid blocks of GEMV_WARPS warps
 * on st, smem bytes of dynamic shared memory, a programmatic dependent
 * launch of the stream's previous kernel when pdl is set (at: storage for
 * the attribute, alive until the launch). */
static inline cudaLaunchConfig_t kvl_gemv_launch_config(unsigned grid, size_t smem, int pdl, cudaStream_t st,
                                                        cudaLaunchAttribute (&at)[1]) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(grid);
    cfg.blockDim = dim3(GEMV_WARPS * 32);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = pdl ? 1 : 0;
    return cfg;
}

#endif
