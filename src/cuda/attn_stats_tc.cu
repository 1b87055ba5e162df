/* Statistics instantiations (ST = true) of the tensor-core split kernel
 * (attn_tc.cuh) for f16 and int4z pages: the default kernels of
 * attn_f16_tc.cu / attn_int4z_tc.cu that also write each (query head, row)
 * score and the split's (m, l) for the statistics kernels (attn_stats.cu).
 * Same minimum resident blocks (and f16 warps, TC_WARPS_F16) as the default
 * files. */
#include "cuda/attn_stats.cuh"
#include "cuda/attn_tc.cuh"
#include "cuda/attn_tc_f16.cuh"

template <int D> static kvl_cuda_split_fn pick_f16(int G) {
    return tc_pick_g<tc_fk<D>, tc_fv<D>, tc_fk<D>, tc_fv<D>, false, D, TC_MINB_F16, true, TC_WARPS_F16>(G);
}
template <int D> static kvl_cuda_split_fn pick_i4(int G) {
    return tc_pick_g<tc_i4k<D>, tc_i4v<D>, tc_i4k<D>, tc_i4v<D>, false, D, TC_MINB_INT4Z, true>(G);
}

kvl_cuda_split_fn kvl_cuda_pick_stats_tc_f16(int codec, int D, int G, int P) {
    if (P % 16) return NULL;
    if (codec == KVL_CUDA_CODEC_F16) return D == 64 ? pick_f16<64>(G) : D == 128 ? pick_f16<128>(G) : NULL;
    if (codec == KVL_CUDA_CODEC_INT4Z) return D == 64 ? pick_i4<64>(G) : D == 128 ? pick_i4<128>(G) : NULL;
    return NULL;
}
