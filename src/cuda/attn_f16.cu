/* Paged decode attention kernels for f16 pages (attn_kernel.cuh), with the
 * tuning variants of the Llama-3-8B shape (D 128, G 4): (rows per tile,
 * minimum resident blocks, load hints). */
#include "cuda/attn_kernel.cuh"

typedef kvl_pair<kvl_cuda_f16, kvl_cuda_f16> pair_f16;

kvl_cuda_split_fn kvl_cuda_pick_f16(int D, int G, int P, int variant) {
    switch (variant) {
    case 0: return kvl_cuda_pick_pair<pair_f16>(D, G);
    case 1: return D == 128 && G == 4 ? decode_split_kernel<pair_f16, 128, 4, 2, 1, 0> : NULL;
    case 2: return D == 128 && G == 4 ? decode_split_kernel<pair_f16, 128, 4, 8, 1, 0> : NULL;
    case 3: return D == 128 && G == 4 ? decode_split_kernel<pair_f16, 128, 4, 4, 1, 0> : NULL;
    case 4: return D == 128 && G == 4 ? decode_split_kernel<pair_f16, 128, 4, 2, 6, 0> : NULL;
    case 5: return D == 128 && G == 4 ? decode_split_kernel<pair_f16, 128, 4, 4, 5, 1> : NULL; /* + L2::256B prefetch */
    case 6: return D == 128 && G == 4 ? decode_split_kernel<pair_f16, 128, 4, 4, 5, 2> : NULL; /* + L1::no_allocate */
    }
    return NULL;
}
