/* Paged decode attention kernels for int4z pages (4-bit, groups of 32 with
 * e5m3 scale and int8 zero point; attn_kernel.cuh). No tuning variants. */
#include "cuda/attn_kernel.cuh"

kvl_cuda_split_fn kvl_cuda_pick_int4z(int D, int G, int P, int variant) {
    return variant ? NULL : kvl_cuda_pick_pair<kvl_pair<kvl_cuda_int4z, kvl_cuda_int4z> >(D, G);
}
