/* Statistics instantiations (ST = true) of the CUDA-core split kernel
 * (attn_kernel.cuh) for the shapes the tensor-core kernels do not take:
 * G = 5..8 query heads per kv-head (f16, int8, fp8, int4z), the default
 * kernels of attn_<codec>.cu that also write the scores and the split's
 * (m, l) for the statistics kernels (attn_stats.cu). */
#include "cuda/attn_kernel.cuh"
#include "cuda/attn_stats.cuh"

template <class CP, int D, int G> static kvl_cuda_split_fn one() {
    typedef typename CP::K K;
    return decode_split_kernel<CP, D, G, default_unroll<K, G>::v, default_minb<CP, G>::v, 0, true>;
}
template <class CP, int D> static kvl_cuda_split_fn pick_g(int G) {
    switch (G) {
    case 5: return one<CP, D, 5>();
    case 6: return one<CP, D, 6>();
    case 7: return one<CP, D, 7>();
    case 8: return one<CP, D, 8>();
    }
    return NULL;
}
template <class CP> static kvl_cuda_split_fn pick_d(int D, int G) {
    return D == 64 ? pick_g<CP, 64>(G) : D == 128 ? pick_g<CP, 128>(G) : NULL;
}

kvl_cuda_split_fn kvl_cuda_pick_stats_core(int codec, int D, int G) {
    switch (codec) {
    case KVL_CUDA_CODEC_F16: return pick_d<kvl_pair<kvl_cuda_f16, kvl_cuda_f16> >(D, G);
    case KVL_CUDA_CODEC_INT8: return pick_d<kvl_pair<kvl_cuda_int8, kvl_cuda_int8> >(D, G);
    case KVL_CUDA_CODEC_FP8: return pick_d<kvl_pair<kvl_cuda_fp8, kvl_cuda_fp8> >(D, G);
    case KVL_CUDA_CODEC_INT4Z: return pick_d<kvl_pair<kvl_cuda_int4z, kvl_cuda_int4z> >(D, G);
    }
    return NULL;
}
