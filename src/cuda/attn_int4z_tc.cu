/* Paged decode attention for int4z pages with scores and value sums on the
 * tensor cores (attn_tc.cuh: tc_i4k keys, tc_i4v values), up to 4 query
 * heads per kv-head; the default int4z kernel where it exists
 * (attn_decode.cu falls back to attn_int4z.cu's kernels otherwise). */
#include "cuda/attn_tc.cuh"


template <int D> static kvl_cuda_split_fn pick_g(int G) {
    typedef tc_i4k<D> K;
    typedef tc_i4v<D> V;
    return tc_pick_g<K, V, K, V, false, D, TC_MINB_INT4Z>(G);
}

kvl_cuda_split_fn kvl_cuda_pick_int4z_tc(int D, int G, int P) {
    if (P % 16) return NULL;
    return D == 64 ? pick_g<64>(G) : D == 128 ? pick_g<128>(G) : NULL;
}
