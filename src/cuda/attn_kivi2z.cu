/* Paged decode attention kernels for kivi2z lists (sealed 2-bit KIVI pages
 * with compact parameters, then open f16 pages; attn_kernel.cuh), the
 * CUDA-core kernels: kvl_cuda_attn_tuning.variant 1, and the kernel for
 * G > 4; the default up to 4 heads is attn_kivi2z_tc.cu. */
#include "cuda/attn_kernel.cuh"

/* pages of 32 tokens and more: key tiles of 32 rows (4 rows per thread at D
 * 128), else 16 */
kvl_cuda_split_fn kvl_cuda_pick_kivi2z(int D, int G, int P, int variant) {
    if (variant) return NULL;
    return P >= 32 ? kvl_cuda_pick_pair<kvl_pair_kivi<2, 5, 32> >(D, G) : kvl_cuda_pick_pair<kvl_pair_kivi<2, 5, 16> >(D, G);
}
