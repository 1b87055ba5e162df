/* Paged decode attention kernels for kivi2z lists (sealed 2-bit KIVI pages
 * with compact parameters, then open f16 pages; attn_kernel.cuh). */
#include "cuda/attn_kernel.cuh"

kvl_cuda_split_fn kvl_cuda_pick_kivi2z(int D, int G, int variant) {
    return variant ? NULL : kvl_cuda_pick_pair<kvl_pair_kivi<2> >(D, G);
}
