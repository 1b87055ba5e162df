/* Paged decode attention kernels for fp8 pages (e4m3, per-token scale;
 * attn_kernel.cuh). No tuning variants. */
#include "cuda/attn_kernel.cuh"

kvl_cuda_split_fn kvl_cuda_pick_fp8(int D, int G, int P, int variant) {
    return variant ? NULL : kvl_cuda_pick_pair<kvl_pair<kvl_cuda_fp8, kvl_cuda_fp8> >(D, G);
}
