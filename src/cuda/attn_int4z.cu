/* Paged decode attention kernels for int4z pages (4-bit, groups of 32 with
 * e5m3 scale and int8 zero point; attn_kernel.cuh), the CUDA-core kernels:
 * key scores on the tensor cores up to 4 heads per kv-head (score_rows_mma;
 * kvl_cuda_attn_tuning.variant 2, and the kernel for G > 4) or on the CUDA
 * cores (variant 1). The default up to 4 heads is attn_int4z_tc.cu. */
#include "cuda/attn_kernel.cuh"

kvl_cuda_split_fn kvl_cuda_pick_int4z(int D, int G, int P, int variant) {
    if (variant == 1) return G <= 4 ? kvl_cuda_pick_pair<kvl_pair<kvl_cuda_int4z, kvl_cuda_int4z, 5, false> >(D, G) : NULL;
    return variant ? NULL : kvl_cuda_pick_pair<kvl_pair<kvl_cuda_int4z, kvl_cuda_int4z> >(D, G);
}
