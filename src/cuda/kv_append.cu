/* Quantize-on-append on the device: RoPE on the step's q and k heads, then
 * each K and V row encoded straight into its device page in the CPU codec's
 * byte layout (f16, int8, fp8, int4z; src/kv/codec.c, codec_fp8.c,
 * codec_int4.c; the sealing KIVI codecs append f16 rows to their open pages
 * of class 0, sealed later by kv_seal_kivi.cu), one warp per row. The encoders follow the CPU ones operation by operation (IEEE
 * division, products and sums rounded separately, no contraction into fma),
 * so a row encodes to the CPU's bytes for the same input floats. */
#include <math.h>
#include <string.h>

#include <cuda_fp16.h>

#include "cuda/act_q8.cuh" /* kvl_griddep_wait */
#include "cuda/cuda_util.cuh"
#include "cuda/lm_ops.h"
#include "cuda/page_space.cuh"

extern "C" int kvl_cuda_kv_append_supported(const char *codec) {
    return codec && (!strcmp(codec, "f16") || !strcmp(codec, "int8") || !strcmp(codec, "fp8") ||
                     !strcmp(codec, "int4z") || !strcmp(codec, "kivi2z") || !strcmp(codec, "kivi4z"));
}

static __device__ __forceinline__ float clamp16(float f) {
    return f > 65504.f ? 65504.f : (f < -65504.f ? -65504.f : f);
}
static __device__ __forceinline__ uint16_t h_bits(float f) { return __half_as_ushort(__float2half_rn(f)); }
static __device__ __forceinline__ float h_val(uint16_t h) { return __half2float(__ushort_as_half(h)); }
/* smallest half >= f (kvl_q_f16_up) */
static __device__ __forceinline__ uint16_t f16_up(float f) {
    uint16_t h = h_bits(f);
    if (h_val(h) < f) {
        if (h == 0x8000) h = 0x0001;
        else if (h & 0x8000) h--;
        else h++;
    }
    return h;
}
static __device__ __forceinline__ float e5m3(uint32_t b) { return h_val((uint16_t)((b & 0xffu) << 7)); }
static __device__ __forceinline__ uint32_t e5m3_up(float s) {
    if (!(s > 0)) return 0;
    if (s > 57344.f) return 0xF7;
    const uint16_t h = f16_up(s);
    const uint32_t b = (uint32_t)(h >> 7) + ((h & 0x7f) != 0);
    return b > 0xF7 ? 0xF7 : b;
}

static __device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
static __device__ __forceinline__ float warp_min(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fminf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* kvl_fp8_e4m3_encode (codec_fp8.c): OCP e4m3, ties to even, saturating at
 * +-448, NaN -> 0; the same float operations (all exact but the roundings
 * named there). */
static __device__ __forceinline__ uint8_t fp8_e4m3(float v) {
    const uint8_t sign = signbit(v) ? 0x80 : 0;
    const float a = fabsf(v);
    if (!(a == a)) return 0;
    if (a >= 448.0f) return sign | 0x7E;
    if (a < 0.015625f) return sign | (uint8_t)rintf(__fmul_rn(a, 512.0f));
    int e;
    const float f = frexpf(a, &e);
    int mq = (int)rintf(__fmul_rn(__fsub_rn(__fmul_rn(f, 2.0f), 1.0f), 8.0f));
    e -= 1;
    if (mq == 8) mq = 0, e++;
    const int code = (e + 7) << 3 | mq;
    return sign | (uint8_t)(code > 0x7E ? 0x7E : code);
}

/* row r of a segment of P rows, x [D] in shared memory; one warp */
template <int C> static __device__ void encode_row(uint8_t *seg, int D, int P, int r, const float *x, int lane) {
    if (C == KVL_CUDA_CODEC_F16) {
        __half *row = (__half *)(seg + (size_t)r * D * 2);
        for (int j = lane; j < D; j += 32) row[j] = __float2half_rn(x[j]);
    } else if (C == KVL_CUDA_CODEC_INT8) {
        float amax = 0;
        for (int j = lane; j < D; j += 32) amax = fmaxf(amax, fabsf(x[j]));
        amax = warp_max(amax);
        const float scale = __fdiv_rn(amax, 127.0f);
        const float inv = scale > 0 ? __fdiv_rn(1.0f, scale) : 0.0f;
        int8_t *row = (int8_t *)(seg + (size_t)P * 4 + (size_t)r * D);
        for (int j = lane; j < D; j += 32) {
            float v = rintf(__fmul_rn(x[j], inv));
            v = v > 127 ? 127 : (v < -127 ? -127 : v == v ? v : 0);
            row[j] = (int8_t)v;
        }
        if (lane == 0) ((float *)seg)[r] = scale;
    } else if (C == KVL_CUDA_CODEC_FP8) { /* f32 scale[P], then P rows of D e4m3 bytes (codec_fp8.c f8_encode) */
        float amax = 0;
        for (int j = lane; j < D; j += 32) amax = fmaxf(amax, fabsf(x[j]));
        amax = warp_max(amax);
        if (!(amax <= 3.0e38f)) amax = 3.0e38f;
        const float scale = __fdiv_rn(amax, 448.0f);
        uint8_t *row = seg + (size_t)P * 4 + (size_t)r * D;
        for (int j = lane; j < D; j += 32) row[j] = scale > 0 ? fp8_e4m3(__fdiv_rn(x[j], scale)) : 0;
        if (lane == 0) ((float *)seg)[r] = scale;
    } else { /* int4z: groups of 32, e5m3 scale + int8 zero point, then D/2 code bytes */
        const int ng = D / 32;
        uint8_t *row = seg + (size_t)r * (size_t)(2 * ng + D / 2);
        uint8_t *codes = row + 2 * ng;
        for (int g = 0; g < ng; g++) {
            const float v = clamp16(x[32 * g + lane]);
            float mn = warp_min(v), mx = warp_max(v);
            if (!(mn <= mx)) mn = mx = 0; /* all NaN */
            uint32_t sb = e5m3_up(fmaxf(__fdiv_rn(__fsub_rn(mx, mn), 15.0f), __fdiv_rn(fmaxf(fabsf(mn), fabsf(mx)), 112.0f)));
            float z = 0;
            for (int it = 0; it < 64; it++) {
                const float s = e5m3(sb);
                z = s > 0 ? ceilf(__fdiv_rn(-mn, s)) : 0;
                z = z > 127 ? 127 : (z < -128 ? -128 : z);
                const float m = __fmul_rn(-z, s);
                if ((m <= mn && __fadd_rn(m, __fmul_rn(15.0f, s)) >= mx) || sb >= 0xF7) break;
                sb++;
            }
            const float s = e5m3(sb);
            const float m = __fmul_rn(-(float)(int8_t)(int)z, s);
            float c = s > 0 ? rintf(__fdiv_rn(__fsub_rn(v, m), s)) : 0;
            c = c > 0 ? (c > 15 ? 15 : c) : 0; /* NaN -> 0 */
            const int ci = (int)c;
            const int hi = __shfl_down_sync(0xffffffffu, ci, 16);
            if (lane < 16) codes[16 * g + lane] = (uint8_t)(ci | (hi << 4));
            if (lane == 0) row[2 * g] = (uint8_t)sb, row[2 * g + 1] = (uint8_t)(int8_t)(int)z;
        }
    }
}

template <int C>
__global__ void append_k(kvl_cuda_page_space sp, size_t koff, size_t voff, int P, kvl_cuda_append_args a) {
    extern __shared__ float kv_s[]; /* [2][n_head_kv][hd]: roped k, then v */
    kvl_griddep_wait(); /* with a.pdl: qkv is the previous kernel's output */
    const int e = blockIdx.x, hd = a.hd, half = hd / 2, nh = a.n_head, nkv = a.n_head_kv;
    const float *src = a.qkv + (size_t)e * (nh + 2 * nkv) * hd;
    const float *cs = a.cs + (size_t)e * hd;
    for (int i = threadIdx.x; i < (nh + nkv) * half; i += blockDim.x) {
        const int h = i / half, j = i % half;
        const int ia = a.neox ? j : 2 * j, ib = a.neox ? j + half : 2 * j + 1;
        const float c = cs[2 * j], s = cs[2 * j + 1];
        const float x0 = src[h * hd + ia], x1 = src[h * hd + ib];
        const float r0 = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
        const float r1 = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
        float *dst = h < nh ? a.q_out + ((size_t)e * nh + h) * hd : kv_s + (h - nh) * hd;
        dst[ia] = r0, dst[ib] = r1;
    }
    for (int i = threadIdx.x; i < nkv * hd; i += blockDim.x) kv_s[nkv * hd + i] = src[(nh + nkv) * hd + i];
    __syncthreads();
    const int pos = a.pos[e], slot = a.slot[e], lane = threadIdx.x & 31;
    for (int t = threadIdx.x >> 5; t < 2 * nkv; t += blockDim.x >> 5) {
        const int h = t >> 1, isv = t & 1;
        const int row = a.row ? a.row[(size_t)e * nkv + h] : pos; /* eviction: the list's next row */
        const uint32_t id = (uint32_t)((((int64_t)slot * a.n_layer + a.layer) * nkv + h) * a.pages_per_list + row / P);
        uint8_t *page = (uint8_t *)kvl_cuda_page_addr(sp, id);
        if (!isv && lane == 0) ((int32_t *)page)[row % P] = pos;
        encode_row<C>(page + (isv ? voff : koff), hd, P, row % P, kv_s + (isv * nkv + h) * hd, lane);
    }
}

extern "C" kvl_status kvl_cuda_kv_append(kvl_cuda_pool *p, const kvl_cuda_append_args *a, void *stream,
                                         kvl_err *err) {
    if (a->n < 1 || a->hd != p->D || a->hd % 32)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda append: n %d, head_dim %d (pool %d)", a->n, a->hd, p->D);
    const size_t smem = sizeof(float) * 2 * (size_t)a->n_head_kv * a->hd;
    /* 1024 threads: an 8B-shaped layer's 40 heads x 64 RoPE pairs take 3
     * iterations of independent loads per thread instead of 20 (with 128
     * threads the kernel was latency-bound at ~14 us per layer on the H200) */
    const int nt = 1024;
    cudaStream_t st = (cudaStream_t)stream;
    const kvl_cuda_class &c = p->cls[0];
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(a->n), cfg.blockDim = dim3(nt), cfg.dynamicSmemBytes = smem, cfg.stream = st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at, cfg.numAttrs = a->pdl ? 1 : 0;
    switch (p->codec) {
    case KVL_CUDA_CODEC_F16: cudaLaunchKernelEx(&cfg, append_k<KVL_CUDA_CODEC_F16>, p->space, c.koff, c.voff, p->P, *a); break;
    case KVL_CUDA_CODEC_INT8: cudaLaunchKernelEx(&cfg, append_k<KVL_CUDA_CODEC_INT8>, p->space, c.koff, c.voff, p->P, *a); break;
    case KVL_CUDA_CODEC_FP8: cudaLaunchKernelEx(&cfg, append_k<KVL_CUDA_CODEC_FP8>, p->space, c.koff, c.voff, p->P, *a); break;
    case KVL_CUDA_CODEC_INT4Z: cudaLaunchKernelEx(&cfg, append_k<KVL_CUDA_CODEC_INT4Z>, p->space, c.koff, c.voff, p->P, *a); break;
    case KVL_CUDA_CODEC_KIVI2Z:
    case KVL_CUDA_CODEC_KIVI4Z: /* open pages (class 0): f16 rows, ids as the other codecs' */
        cudaLaunchKernelEx(&cfg, append_k<KVL_CUDA_CODEC_F16>, p->space, c.koff, c.voff, p->P, *a);
        break;
    default:
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED,
                           "cuda: this KV codec has no append kernel yet (have: f16, int8, fp8, int4z, kivi2z, kivi4z)");
    }
    KVL_CUDA_TRY(cudaGetLastError(), "cuda append launch");
    return KVL_OK;
}
