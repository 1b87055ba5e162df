/* Paged decode attention for int8 and fp8 pages (per-token scales) with
 * scores and value sums on the tensor cores (attn_tc.cuh with
 * attn_tc_b8.cuh), up to 4 query heads per kv-head; the default int8 / fp8
 * kernels where they exist (attn_decode.cu falls back to the CUDA-core
 * kernels of attn_int8.cu / attn_fp8.cu otherwise, and keeps them as
 * variant 7). */
#include "cuda/attn_tc.cuh"
#include "cuda/attn_tc_b8.cuh"

/* three blocks per SM: the rings take 4 x 4 x (192 + 32 D) bytes = 69 KB at D 128 */

template <int D, bool FP8> static kvl_cuda_split_fn pick_g(int G) {
    typedef tc_bk<D, FP8> K;
    typedef tc_bv<D, FP8> V;
    return tc_pick_g<K, V, K, V, false, D, TC_MINB_B8>(G);
}

kvl_cuda_split_fn kvl_cuda_pick_int8_tc(int D, int G, int P) {
    if (P % 16) return NULL;
    return D == 64 ? pick_g<64, false>(G) : D == 128 ? pick_g<128, false>(G) : NULL;
}

kvl_cuda_split_fn kvl_cuda_pick_fp8_tc(int D, int G, int P) {
    if (P % 16) return NULL;
    return D == 64 ? pick_g<64, true>(G) : D == 128 ? pick_g<128, true>(G) : NULL;
}
