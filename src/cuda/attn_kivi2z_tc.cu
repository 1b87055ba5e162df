/* Paged decode attention for kivi2z lists with scores and value sums on the
 * tensor cores (attn_tc.cuh: sealed pages tc_k2k keys / tc_k2v values, open
 * f16 pages tc_hk / tc_hv in the same channel order), up to 4 query heads
 * per kv-head; the default kivi2z kernel where it exists (attn_decode.cu
 * falls back to attn_kivi2z.cu's kernels otherwise). */
#include "cuda/attn_tc.cuh"


template <int D> static kvl_cuda_split_fn pick_g(int G) {
    typedef tc_k2k<D> K;
    typedef tc_k2v<D> V;
    typedef tc_hk<D> OK;
    typedef tc_hv<D> OV;
    return tc_pick_g<K, V, OK, OV, true, D, TC_MINB_KIVI2Z>(G);
}

kvl_cuda_split_fn kvl_cuda_pick_kivi2z_tc(int D, int G, int P) {
    if (P % 16) return NULL;
    return D == 64 ? pick_g<64>(G) : D == 128 ? pick_g<128>(G) : NULL;
}
