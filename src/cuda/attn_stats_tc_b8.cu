/* Statistics instantiations (ST = true) of the tensor-core split kernel
 * (attn_tc.cuh with attn_tc_b8.cuh) for int8 and fp8 pages: attn_b8_tc.cu's
 * kernels that also write the scores and the split's (m, l) for the
 * statistics kernels (attn_stats.cu). Same minimum resident blocks. */
#include "cuda/attn_stats.cuh"
#include "cuda/attn_tc.cuh"
#include "cuda/attn_tc_b8.cuh"

template <int D, bool FP8> static kvl_cuda_split_fn pick_b8(int G) {
    typedef tc_bk<D, FP8> K;
    typedef tc_bv<D, FP8> V;
    return tc_pick_g<K, V, K, V, false, D, TC_MINB_B8, true>(G);
}

kvl_cuda_split_fn kvl_cuda_pick_stats_tc_b8(int codec, int D, int G, int P) {
    if (P % 16) return NULL;
    const bool fp8 = codec == KVL_CUDA_CODEC_FP8;
    if (codec != KVL_CUDA_CODEC_INT8 && !fp8) return NULL;
    if (D == 64) return fp8 ? pick_b8<64, true>(G) : pick_b8<64, false>(G);
    if (D == 128) return fp8 ? pick_b8<128, true>(G) : pick_b8<128, false>(G);
    return NULL;
}
