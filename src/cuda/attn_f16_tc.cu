/* Paged decode attention for f16 pages with scores and value sums on the
 * tensor cores (attn_tc.cuh with attn_tc_f16.cuh: tiles through the
 * per-warp cp.async ring, ldmatrix / ldmatrix.trans into the mma), up to 4
 * query heads per kv-head; the default f16 kernel where it exists
 * (attn_decode.cu falls back to attn_f16.cu's CUDA-core kernel otherwise,
 * and keeps that one as variant 7). */
#include "cuda/attn_tc.cuh"
#include "cuda/attn_tc_f16.cuh"

/* TC_WARPS_F16 warps, TC_STAGES_F16 ring stages of 64 + 64 D bytes per
 * warp, TC_STEP_F16 tiles per step, TC_MINB_F16 blocks per SM
 * (attn_tc_frag.cuh / attn_tc.cuh; default 4 warps x 4 stages = 132 KB at
 * D 128: one block per SM); no register cap */

template <int D> static kvl_cuda_split_fn pick_g(int G) {
    typedef tc_fk<D> K;
    typedef tc_fv<D> V;
    return tc_pick_g<K, V, K, V, false, D, TC_MINB_F16, false, TC_WARPS_F16>(G);
}

kvl_cuda_split_fn kvl_cuda_pick_f16_tc(int D, int G, int P) {
    if (P % 16) return NULL;
    return D == 64 ? pick_g<64>(G) : D == 128 ? pick_g<128>(G) : NULL;
}
