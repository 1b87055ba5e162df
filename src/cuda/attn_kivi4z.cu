/* Paged decode attention kernels for kivi4z lists (sealed 4-bit KIVI pages
 * with compact parameters, then open f16 pages; attn_kernel.cuh). */
#include "cuda/attn_kernel.cuh"

/* pages of 32 tokens and more: key tiles of 32 rows (4 rows per thread at D
 * 128), else 16 */
kvl_cuda_split_fn kvl_cuda_pick_kivi4z(int D, int G, int P, int variant) {
    if (variant) return NULL;
    return P >= 32 ? kvl_cuda_pick_pair<kvl_pair_kivi<4, 5, 32> >(D, G) : kvl_cuda_pick_pair<kvl_pair_kivi<4, 5, 16> >(D, G);
}
