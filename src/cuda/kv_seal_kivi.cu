/* Sealing on the device for the KIVI codecs kivi2z / kivi4z (K kivi2z /
 * kivi4z per channel over the page's P tokens, V kivi2zv / kivi4zv per
 * token in groups of 32 channels; src/kv/codec_kivi.c, layouts
 * src/kv/codec_kivi.h): a full open page (class 0, f16 K and V rows) is
 * repacked into its sealed page (class 1, the same index), and the list's
 * page table entry gets the sealed page's id, so the next call's attention
 * reads the codes. The arithmetic is codec_kivi.c's group_params / code_of
 * / group_sse operation by operation (doubles where it uses doubles, IEEE
 * intrinsics so nothing contracts into an FMA, the same sequential sums),
 * so a sealed page is byte-identical to the CPU seal of the same open page
 * (kvl_kv_seal: positions copied, padding zero).
 *
 * One block per (entry, layer, kv-head) of a call; each entry carries a
 * range of page indices to seal (planned on the host per call from the
 * slot's length: kvl_cuda_lm; empty for most entries), so the launch shape
 * depends on the number of entries only and the kernel sits in the call's
 * CUDA graph. Within a page: the f16 segment in shared memory, one thread
 * per K channel (parameters over P tokens) or per V (token, group), codes
 * into a byte array, then each thread packs whole 16-bit slots. */
#include <cuda_fp16.h>

#include "cuda/cuda_util.cuh"
#include "cuda/lm_ops.h"
#include "cuda/page_space.cuh"

#define SEAL_THREADS 128

/* byte geometry of the pool's open (0) and sealed (1) pages */
typedef struct kvl_cuda_seal_geom {
    int D, P;
    size_t koff0, voff0, koff1, voff1, kseg, vseg, page_bytes1;
} kvl_cuda_seal_geom;
#define KIVI_VG_D 32 /* KIVI_VG: channels per V group */

static __device__ __forceinline__ float hval(uint16_t h) { return __half2float(__ushort_as_half(h)); }
/* open_val: inf -> +-65504, NaN -> 0 */
static __device__ __forceinline__ float open_val(uint16_t h) {
    if ((h & 0x7c00u) == 0x7c00u) return (h & 0x3ffu) ? 0.0f : ((h & 0x8000u) ? -65504.0f : 65504.0f);
    return hval(h);
}
static __device__ __forceinline__ float e5m3(uint32_t b) { return hval((uint16_t)((b & 0xffu) << 7)); }

/* f16_up: smallest half >= x (0 < x <= 65504), capped at 0x7bff, by the CPU's search */
static __device__ uint16_t f16_up_d(double x) {
    if (!(x > 0)) return 0;
    uint16_t h = __half_as_ushort(__float2half_rn((float)x));
    if (h > 0x7bffu) h = 0x7bffu;
    while (h > 0 && (double)hval((uint16_t)(h - 1)) >= x) h--;
    while (h < 0x7bffu && (double)hval(h) < x) h++;
    return h;
}
/* e5m3_up: smallest e5m3 byte with scale >= x, capped at 0xF7 */
static __device__ uint32_t e5m3_up_d(double x) {
    if (!(x > 0)) return 0;
    if (x > 57344.0) return 0xF7;
    uint32_t b = f16_up_d(x) >> 7;
    while (b < 0xF7 && (double)e5m3(b) < x) b++;
    return b;
}

/* group_sse: squared error of x[0..cnt) (stride xs) against (s, z) */
static __device__ __forceinline__ double group_sse(const uint16_t *x, int xs, int cnt, int maxq, float s, float z) {
    const double sd = (double)s, mn = __dmul_rn(-(double)z, sd);
    double e = 0;
    for (int i = 0; i < cnt; i++) {
        const double v = (double)open_val(x[i * xs]);
        double q = s > 0 ? rint(__ddiv_rn(__dsub_rn(v, mn), sd)) : 0;
        q = q < 0 ? 0 : (q > maxq ? maxq : q);
        const double d = __dsub_rn(v, __dadd_rn(mn, __dmul_rn(q, sd)));
        e = __dadd_rn(e, __dmul_rn(d, d));
    }
    return e;
}

/* group_params (compact parameters): the scale byte and zero point of
 * x[0..cnt) (stride xs); *s, *mn: the decoder's values. */
static __device__ __forceinline__ void group_params(const uint16_t *x, int xs, int cnt, int bits, int mse, uint8_t *sb_out,
                                    uint8_t *z_out, float *s_out, float *mn_out) {
    float lo = open_val(x[0]), hi = lo;
    for (int i = 1; i < cnt; i++) {
        const float v = open_val(x[i * xs]);
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    const int maxq = (1 << bits) - 1;
    const double amax = fmax(fabs((double)lo), fabs((double)hi));
    uint32_t sb = e5m3_up_d(fmax(__ddiv_rn(__dsub_rn((double)hi, (double)lo), (double)maxq),
                                 __ddiv_rn(amax, (double)(127 - maxq))));
    float zf = 0;
    for (;;) {
        const float sv = e5m3(sb);
        zf = sv > 0 ? ceilf(__fdiv_rn(-lo, sv)) : 0;
        zf = zf > 127 ? 127 : (zf < -128 ? -128 : zf);
        const float m = __fmul_rn(-zf, sv);
        if ((m <= lo && __fadd_rn(m, __fmul_rn((float)maxq, sv)) >= hi) || sb >= 0xF7) break;
        sb++;
    }
    if (mse) {
        double best = group_sse(x, xs, cnt, maxq, e5m3(sb), zf);
        const uint32_t sb_cov = sb;
        for (int d = 0; d <= 3 && best > 0; d++) { /* KIVI_Z_STEPS */
            if ((uint32_t)d > sb_cov) break;
            const uint32_t cb = sb_cov - d;
            const float sv = e5m3(cb);
            if (!(sv > 0)) break;
            const float r = __fdiv_rn(-lo, sv);
            const float zc[4] = {ceilf(r), floorf(r), rintf(r),
                                 rintf(__fadd_rn(__fdiv_rn(-__fadd_rn(lo, hi), __fmul_rn(2.0f, sv)),
                                                 __fmul_rn((float)maxq, 0.5f)))};
            for (int k = 0; k < 4; k++) {
                const float zk = zc[k] > 127 ? 127 : (zc[k] < -128 ? -128 : zc[k]);
                const double e = group_sse(x, xs, cnt, maxq, sv, zk);
                if (e < best) best = e, sb = cb, zf = zk;
            }
        }
    }
    const int8_t z8 = (int8_t)zf;
    *sb_out = (uint8_t)sb;
    *z_out = (uint8_t)z8;
    *s_out = e5m3(sb);
    *mn_out = __fmul_rn(-(float)z8, *s_out);
}

/* code_of */
static __device__ __forceinline__ uint8_t code_of(uint16_t h, float s, float mn, int maxq) {
    double q = s > 0 ? rint(__ddiv_rn(__dsub_rn((double)open_val(h), (double)mn), (double)s)) : 0;
    q = q < 0 ? 0 : (q > maxq ? maxq : q);
    return (uint8_t)q;
}

/* one page: open (class 0) -> sealed (class 1); xs [P*D] halves, cs [P*D] codes */
template <int BITS>
static __device__ void seal_page(uint8_t *dst, const uint8_t *src, const kvl_cuda_seal_geom &g, int mse, uint16_t *xs,
                                 uint8_t *cs) {
    constexpr int F = 32 / BITS, MAXQ = (1 << BITS) - 1;
    const int D = g.D, P = g.P, tid = threadIdx.x, nt = blockDim.x;
    /* positions, and zero padding between / after the segments */
    for (int i = tid; i < P; i += nt) ((int32_t *)dst)[i] = ((const int32_t *)src)[i];
    for (size_t b = (size_t)P * 4 + tid; b < g.koff1; b += nt) dst[b] = 0;
    for (size_t b = g.koff1 + g.kseg + tid; b < g.voff1; b += nt) dst[b] = 0;
    for (size_t b = g.voff1 + g.vseg + tid; b < g.page_bytes1; b += nt) dst[b] = 0;
    for (int side = 0; side < 2; side++) {
        const uint16_t *seg = (const uint16_t *)(src + (side ? g.voff0 : g.koff0));
        for (int i = tid; i < P * D; i += nt) xs[i] = seg[i];
        __syncthreads();
        uint8_t *out = dst + (side ? g.voff1 : g.koff1);
        if (!side) { /* K: per channel over the page's tokens */
            const size_t cb = (size_t)((P + 7) / 8) * ((D + F - 1) / F) * 32;
            for (int j = tid; j < D; j += nt) {
                uint8_t sb, z8;
                float s, mn;
                group_params(xs + j, D, P, BITS, mse, &sb, &z8, &s, &mn);
                out[cb + j] = sb, out[cb + D + j] = z8;
                for (int i = 0; i < P; i++) cs[i * D + j] = code_of(xs[i * D + j], s, mn, MAXQ);
            }
            __syncthreads();
            /* chunk (tb, jc), slot 2k + e, field f: token 8 tb + k, channel F jc + 2 f + e */
            const int njc = (D + F - 1) / F;
            for (int t = tid; t < (int)(cb / 2); t += nt) {
                const int ch = t / 16, sl = t % 16, tb = ch / njc, jc = ch % njc, i = 8 * tb + sl / 2;
                uint32_t w = 0;
                for (int f = 0; f < F / 2; f++) {
                    const int j = F * jc + 2 * f + (sl & 1);
                    if (i < P && j < D) w |= (uint32_t)cs[i * D + j] << (BITS * f);
                }
                ((uint16_t *)out)[t] = (uint16_t)w;
            }
        } else { /* V: per token, groups of 32 channels */
            const int ng = (D + KIVI_VG_D - 1) / KIVI_VG_D, ntc = (P + F - 1) / F;
            const size_t cb = (size_t)((D + 7) / 8) * ntc * 32;
            for (int gi = tid; gi < ng * P; gi += nt) {
                const int gr = gi / P, i = gi % P, j0 = gr * KIVI_VG_D;
                const int cnt = D - j0 < KIVI_VG_D ? D - j0 : KIVI_VG_D;
                uint8_t sb, z8;
                float s, mn;
                group_params(xs + i * D + j0, 1, cnt, BITS, mse, &sb, &z8, &s, &mn);
                out[cb + gi] = sb, out[cb + (size_t)ng * P + gi] = z8; /* index gr * P + i */
                for (int k = 0; k < cnt; k++) cs[i * D + j0 + k] = code_of(xs[i * D + j0 + k], s, mn, MAXQ);
            }
            __syncthreads();
            /* chunk (kb, tc), slot 2k + e, field f: channel 8 kb + k, token F tc + 2 f + e */
            for (int t = tid; t < (int)(cb / 2); t += nt) {
                const int ch = t / 16, sl = t % 16, kb = ch / ntc, tc = ch % ntc, j = 8 * kb + sl / 2;
                uint32_t w = 0;
                for (int f = 0; f < F / 2; f++) {
                    const int i = F * tc + 2 * f + (sl & 1);
                    if (i < P && j < D) w |= (uint32_t)cs[i * D + j] << (BITS * f);
                }
                ((uint16_t *)out)[t] = (uint16_t)w;
            }
        }
        __syncthreads(); /* xs, cs reused */
    }
}

template <int BITS>
__global__ void seal_k(kvl_cuda_page_space sp, kvl_cuda_seal_geom g, kvl_cuda_seal_args a) {
    extern __shared__ uint16_t seal_s[]; /* [P*D] halves, then [P*D] code bytes */
    const int b = blockIdx.x, h = b % a.n_head_kv, l = (b / a.n_head_kv) % a.n_layer, e = b / (a.n_head_kv * a.n_layer);
    const int from = a.seal_from[e], to = a.seal_to[e];
    if (from >= to) return;
    const int64_t base = (((int64_t)a.slot[e] * a.n_layer + l) * a.n_head_kv + h) * a.pages_per_list;
    uint8_t *cs = (uint8_t *)(seal_s + (size_t)g.P * g.D);
    for (int pg = from; pg < to && pg < a.pages_per_list; pg++) {
        const uint32_t open_id = (uint32_t)(base + pg), seal_id = (1u << KVL_CUDA_CLASS_SHIFT) | open_id;
        seal_page<BITS>((uint8_t *)kvl_cuda_page_addr(sp, seal_id), kvl_cuda_page_addr(sp, open_id), g, a.mse, seal_s,
                        cs);
        if (threadIdx.x == 0) a.page_ids[base + pg] = seal_id;
    }
}

extern "C" kvl_status kvl_cuda_kv_seal(kvl_cuda_pool *p, const kvl_cuda_seal_args *a, void *stream, kvl_err *err) {
    if (p->codec != KVL_CUDA_CODEC_KIVI2Z && p->codec != KVL_CUDA_CODEC_KIVI4Z)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda seal: the pool's codec does not seal (have: kivi2z, kivi4z)");
    if (a->n < 1 || a->n_layer < 1 || a->n_head_kv < 1 || a->pages_per_list < 1 || !p->cls[1].n_pages)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda seal: %d entries, %d layers, %d kv-heads, %d pages per list", a->n,
                           a->n_layer, a->n_head_kv, a->pages_per_list);
    kvl_cuda_seal_geom g = {p->D, p->P, p->cls[0].koff, p->cls[0].voff, p->cls[1].koff, p->cls[1].voff,
                            p->cls[1].kseg, p->cls[1].vseg, p->cls[1].page_bytes};
    const size_t smem = (size_t)p->P * p->D * 3;
    cudaStream_t st = (cudaStream_t)stream;
    const dim3 grid((unsigned)(a->n * a->n_layer * a->n_head_kv));
    if (p->codec == KVL_CUDA_CODEC_KIVI2Z) {
        if (smem > 48 * 1024)
            KVL_CUDA_TRY(cudaFuncSetAttribute(seal_k<2>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                         "cuda seal: shared memory");
        seal_k<2><<<grid, SEAL_THREADS, smem, st>>>(p->space, g, *a);
    } else {
        if (smem > 48 * 1024)
            KVL_CUDA_TRY(cudaFuncSetAttribute(seal_k<4>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                         "cuda seal: shared memory");
        seal_k<4><<<grid, SEAL_THREADS, smem, st>>>(p->space, g, *a);
    }
    KVL_CUDA_TRY(cudaGetLastError(), "cuda seal launch");
    return KVL_OK;
}
