/* The small per-token kernels of the decode step: embedding lookup (a row of
 * the repacked embedding matrix dequantized), RMSNorm, SwiGLU, RoPE angles,
 * greedy argmax, and the position entries of benchmark pages. Each mirrors
 * its CPU reference in src/cpu/ops.c and src/engine/sampler.c (same
 * formulas, double where the CPU uses double). */
#include <math.h>

#include <cuda_fp16.h>

#include "cuda/act_q8.cuh"
#include "cuda/cuda_util.cuh"
#include "cuda/lm_ops.h"
#include "cuda/page_space.cuh"

static __device__ __forceinline__ float wval(const kvl_cuda_wmat &w, int64_t r, int64_t j) {
    const int64_t nb = w.cols / 32, b = j / 32, k = j % 32;
    switch (w.fmt) {
    case KVL_CUDA_WF_F16: return __half2float(((const __half *)w.q)[r * w.cols + j]);
    case KVL_CUDA_WF_Q8_0:
        return __half2float(((const __half *)w.s)[r * nb + b]) * (float)((const int8_t *)w.q)[r * w.cols + j];
    default: {
        const uint8_t byte = ((const uint8_t *)w.q)[r * (w.cols / 2) + b * 16 + (k & 15)];
        const int c = k < 16 ? byte & 15 : byte >> 4;
        if (w.fmt == KVL_CUDA_WF_Q4_0) {
            const float d = __half2float(((const __half *)w.s)[r * nb + b]);
            return d * (float)(c - 8);
        }
        const __half2 dm = ((const __half2 *)w.s)[r * nb + b];
        return __low2float(dm) * (float)c + __high2float(dm);
    }
    }
}

__global__ void embed_k(kvl_cuda_wmat w, const int32_t *tok, float *x) {
    const int64_t r = tok[blockIdx.x];
    for (int64_t j = threadIdx.x; j < w.cols; j += blockDim.x) x[blockIdx.x * w.cols + j] = wval(w, r, j);
}

extern "C" kvl_status kvl_cuda_embed(const kvl_cuda_wmat *emb, const int32_t *tok, int n, float *x, void *stream,
                                     kvl_err *err) {
    if (n < 1) return kvl_err_set(err, KVL_ERR_ARG, "cuda embed: n %d", n);
    embed_k<<<n, 256, 0, (cudaStream_t)stream>>>(*emb, tok, x);
    KVL_CUDA_TRY(cudaGetLastError(), "cuda embed launch");
    return KVL_OK;
}

/* one block of RMS_THREADS per row (1024: at batch 1 one block does the
 * whole row, so its loads and the 8-bit blocks' warp reductions are spread
 * over 32 warps; with 256 threads a 4096-wide row took ~14 us on the H200);
 * double sum of squares (the CPU's); q != NULL: y also as 8-bit blocks, one
 * warp per block of 32 */
#define RMS_THREADS 1024
__global__ void rmsnorm_k(const float *x, const float *w, float *y, int cols, float eps, int8_t *q, float2 *ds) {
    kvl_griddep_trigger(); /* the matvec after it may start loading weights */
    __shared__ double part[RMS_THREADS / 32];
    const float *xr = x + (size_t)blockIdx.x * cols;
    double ss = 0;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) ss += (double)xr[j] * xr[j];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    __syncthreads();
    double t = 0;
    for (int i = 0; i < RMS_THREADS / 32; i++) t += part[i];
    const float s = (float)(1.0 / sqrt(t / cols + eps));
    if (!q) {
        for (int j = threadIdx.x; j < cols; j += blockDim.x) y[(size_t)blockIdx.x * cols + j] = xr[j] * s * w[j];
        return;
    }
    const int lane = threadIdx.x & 31, nbk = cols / 32;
    for (int b = threadIdx.x >> 5; b < nbk; b += blockDim.x >> 5) {
        const int j = 32 * b + lane;
        const float v = xr[j] * s * w[j];
        y[(size_t)blockIdx.x * cols + j] = v;
        kvl_q8_block_warp(v, lane, q + (size_t)blockIdx.x * cols + 32 * b, ds + (size_t)blockIdx.x * nbk + b);
    }
}

/* The 8-bit path's RMSNorm with every value loaded once, into registers:
 * thread t holds the float4 groups t, t + RMS_THREADS, ... of the row (up to
 * RMSV_MAX), the norm weights loaded before the wait for the producer of x;
 * the 8 consecutive threads holding a 32-value block quantize it together
 * (amax and code sum over 3 shuffles: the arithmetic of kvl_q8_block_warp,
 * the same codes). rmsnorm_k re-read x and w from L2 per 32-value block and
 * quantized one block per warp at a time (~5 us a call in the 8B graph).
 * A programmatic dependent launch: it lets the matvec after it launch at
 * once and waits for the kernel before it (kvl_griddep_wait) before it
 * reads x. */
#define RMSV_MAX 4 /* float4 groups per thread: cols <= 16 RMS_THREADS */
__global__ void __launch_bounds__(RMS_THREADS)
    rmsnorm_q8v_k(const float *__restrict__ x, const float *__restrict__ w, float *__restrict__ y, int cols, float eps,
                  int8_t *__restrict__ q, float2 *__restrict__ ds) {
    kvl_griddep_trigger();
    __shared__ double part[RMS_THREADS / 32];
    const size_t row = blockIdx.x;
    const int ng = cols / 4, lane = threadIdx.x & 31, nb = cols / 32;
    const float4 *xr = reinterpret_cast<const float4 *>(x + row * cols);
    const float4 *wr = reinterpret_cast<const float4 *>(w);
    float4 wv[RMSV_MAX], xv[RMSV_MAX];
#pragma unroll
    for (int k = 0; k < RMSV_MAX; k++) {
        const int g = threadIdx.x + k * RMS_THREADS;
        wv[k] = g < ng ? __ldg(wr + g) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
    kvl_griddep_wait(); /* x is the previous kernel's output */
    double ss = 0;
#pragma unroll
    for (int k = 0; k < RMSV_MAX; k++) {
        const int g = threadIdx.x + k * RMS_THREADS;
        xv[k] = g < ng ? __ldcg(xr + g) : make_float4(0.f, 0.f, 0.f, 0.f);
        ss += (double)xv[k].x * xv[k].x + (double)xv[k].y * xv[k].y + (double)xv[k].z * xv[k].z +
              (double)xv[k].w * xv[k].w;
    }
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if (lane == 0) part[threadIdx.x >> 5] = ss;
    __syncthreads();
    double t = 0;
    for (int i = 0; i < RMS_THREADS / 32; i++) t += part[i];
    const float s = (float)(1.0 / sqrt(t / cols + eps));
#pragma unroll
    for (int k = 0; k < RMSV_MAX; k++) {
        if ((int)(threadIdx.x & ~31u) + k * RMS_THREADS >= ng) break; /* uniform per warp */
        const int g = threadIdx.x + k * RMS_THREADS;
        const bool on = g < ng;
        const float v[4] = {xv[k].x * s * wv[k].x, xv[k].y * s * wv[k].y, xv[k].z * s * wv[k].z,
                            xv[k].w * s * wv[k].w};
        if (on) reinterpret_cast<float4 *>(y + row * cols)[g] = make_float4(v[0], v[1], v[2], v[3]);
        float amax = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
        for (int o = 4; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int c[4], cs = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) c[i] = __float2int_rn(v[i] * id), cs += c[i];
        for (int o = 4; o > 0; o >>= 1) cs += __shfl_xor_sync(0xffffffffu, cs, o);
        if (on) {
            reinterpret_cast<uint32_t *>(q + row * cols)[g] = (uint32_t)(c[0] & 0xff) | (uint32_t)(c[1] & 0xff) << 8 |
                                                              (uint32_t)(c[2] & 0xff) << 16 |
                                                              (uint32_t)(c[3] & 0xff) << 24;
            if ((lane & 7) == 0) ds[row * nb + g / 8] = make_float2(__half2float(__float2half_rn(d)), (float)cs);
        }
    }
}

/* a launch of blocks x threads with programmatic dependent launch when pdl (at: attribute storage) */
static cudaLaunchConfig_t pdl_launch(unsigned blocks, unsigned threads, size_t smem, int pdl, cudaStream_t st,
                                     cudaLaunchAttribute (&at)[1]) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(blocks), cfg.blockDim = dim3(threads), cfg.dynamicSmemBytes = smem, cfg.stream = st;
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at, cfg.numAttrs = pdl ? 1 : 0;
    return cfg;
}

extern "C" kvl_status kvl_cuda_rmsnorm(const float *x, const float *w, float *y, int n, int cols, float eps,
                                       void *stream, kvl_err *err) {
    if (n < 1 || cols < 1) return kvl_err_set(err, KVL_ERR_ARG, "cuda rmsnorm: n %d cols %d", n, cols);
    rmsnorm_k<<<n, RMS_THREADS, 0, (cudaStream_t)stream>>>(x, w, y, cols, eps, NULL, NULL);
    KVL_CUDA_TRY(cudaGetLastError(), "cuda rmsnorm launch");
    return KVL_OK;
}

extern "C" kvl_status kvl_cuda_rmsnorm_q8(const float *x, const float *w, float *y, int8_t *q, float *ds, int n,
                                          int cols, float eps, void *stream, kvl_err *err) {
    if (n < 1 || cols < 32 || cols % 32 || !q || !ds)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda rmsnorm q8: n %d cols %d", n, cols);
    return kvl_cuda_rmsnorm_q8_ex(x, w, y, q, ds, n, cols, eps, 1, 0, stream, err);
}

extern "C" kvl_status kvl_cuda_rmsnorm_q8_ex(const float *x, const float *w, float *y, int8_t *q, float *ds, int n,
                                             int cols, float eps, int regs, int pdl, void *stream, kvl_err *err) {
    if (n < 1 || cols < 32 || cols % 32 || !q || !ds)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda rmsnorm q8: n %d cols %d", n, cols);
    cudaStream_t st = (cudaStream_t)stream;
    if (regs && cols <= 4 * RMSV_MAX * RMS_THREADS) {
        cudaLaunchAttribute at[1];
        cudaLaunchConfig_t cfg = pdl_launch((unsigned)n, RMS_THREADS, 0, pdl, st, at);
        cudaLaunchKernelEx(&cfg, rmsnorm_q8v_k, x, w, y, cols, eps, q, reinterpret_cast<float2 *>(ds));
    } else {
        rmsnorm_k<<<n, RMS_THREADS, 0, st>>>(x, w, y, cols, eps, q, reinterpret_cast<float2 *>(ds));
    }
    KVL_CUDA_TRY(cudaGetLastError(), "cuda rmsnorm q8 launch");
    return KVL_OK;
}

__global__ void swiglu_k(const float *gu, float *h, int n, int F) {
    const size_t total = (size_t)n * F;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t t = i / F, j = i % F;
        const float g = gu[t * 2 * F + j], u = gu[t * 2 * F + F + j];
        h[i] = g / (1.0f + expf(-g)) * u;
    }
}

/* F % 32 == 0 and blocks of 256: a warp's 32 values are one 8-bit block of
 * one row, and the whole warp runs every iteration (total % 32 == 0) */
__global__ void swiglu_q8_k(const float *gu, float *h, int8_t *q, float2 *ds, int n, int F) {
    kvl_griddep_trigger();
    kvl_griddep_wait(); /* launched as a programmatic dependent launch: gu is the previous kernel's output */
    const size_t total = (size_t)n * F;
    const int lane = threadIdx.x & 31;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t t = i / F, j = i % F;
        const float g = gu[t * 2 * F + j], u = gu[t * 2 * F + F + j];
        const float v = g / (1.0f + expf(-g)) * u;
        h[i] = v;
        kvl_q8_block_warp(v, lane, q + (i - lane), ds + i / 32);
    }
}

extern "C" kvl_status kvl_cuda_swiglu_q8(const float *gu, float *h, int8_t *q, float *ds, int n, int F,
                                         void *stream, kvl_err *err) {
    return kvl_cuda_swiglu_q8_ex(gu, h, q, ds, n, F, 0, stream, err);
}

extern "C" kvl_status kvl_cuda_swiglu_q8_ex(const float *gu, float *h, int8_t *q, float *ds, int n, int F, int pdl,
                                            void *stream, kvl_err *err) {
    if (n < 1 || F < 32 || F % 32 || !q || !ds) return kvl_err_set(err, KVL_ERR_ARG, "cuda swiglu q8: n %d F %d", n, F);
    const size_t total = (size_t)n * F;
    unsigned grid = (unsigned)((total + 255) / 256);
    if (grid > 4096) grid = 4096;
    cudaLaunchAttribute at[1];
    cudaLaunchConfig_t cfg = pdl_launch(grid, 256, 0, pdl, (cudaStream_t)stream, at);
    cudaLaunchKernelEx(&cfg, swiglu_q8_k, gu, h, q, reinterpret_cast<float2 *>(ds), n, F);
    KVL_CUDA_TRY(cudaGetLastError(), "cuda swiglu q8 launch");
    return KVL_OK;
}

extern "C" kvl_status kvl_cuda_swiglu(const float *gu, float *h, int n, int F, void *stream, kvl_err *err) {
    if (n < 1 || F < 1) return kvl_err_set(err, KVL_ERR_ARG, "cuda swiglu: n %d F %d", n, F);
    const size_t total = (size_t)n * F;
    unsigned grid = (unsigned)((total + 255) / 256);
    if (grid > 4096) grid = 4096;
    swiglu_k<<<grid, 256, 0, (cudaStream_t)stream>>>(gu, h, n, F);
    KVL_CUDA_TRY(cudaGetLastError(), "cuda swiglu launch");
    return KVL_OK;
}

/* (value, index) better: larger value, then lower index; NaN never wins */
static __device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
    if (v != v) return false;
    if (bi < 0 || bv != bv) return true;
    return v > bv || (v == bv && i < bi);
}

__global__ void argmax_k(const float *x, int cols, int32_t *out) {
    __shared__ float sv[32];
    __shared__ int si[32];
    const float *xr = x + (size_t)blockIdx.x * cols;
    float bv = 0;
    int bi = -1;
    for (int j = threadIdx.x; j < cols; j += blockDim.x)
        if (better(xr[j], j, bv, bi)) bv = xr[j], bi = j;
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (oi >= 0 && better(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
    if ((threadIdx.x & 31) == 0) sv[threadIdx.x >> 5] = bv, si[threadIdx.x >> 5] = bi;
    __syncthreads();
    if (threadIdx.x == 0) {
        float v = 0;
        int b = -1;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++)
            if (si[w] >= 0 && better(sv[w], si[w], v, b)) v = sv[w], b = si[w];
        out[blockIdx.x] = b < 0 ? 0 : b;
    }
}

extern "C" kvl_status kvl_cuda_argmax(const float *x, int n, int cols, int32_t *out, void *stream, kvl_err *err) {
    if (n < 1 || cols < 1) return kvl_err_set(err, KVL_ERR_ARG, "cuda argmax: n %d cols %d", n, cols);
    argmax_k<<<n, 1024, 0, (cudaStream_t)stream>>>(x, cols, out);
    KVL_CUDA_TRY(cudaGetLastError(), "cuda argmax launch");
    return KVL_OK;
}

__global__ void rope_cs_k(const int32_t *pos, const float *freq, int half, float *cs) {
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const double a = (double)pos[blockIdx.x] * freq[i];
        cs[((size_t)blockIdx.x * half + i) * 2] = (float)cos(a);
        cs[((size_t)blockIdx.x * half + i) * 2 + 1] = (float)sin(a);
    }
}

extern "C" kvl_status kvl_cuda_rope_cs(const int32_t *pos, const float *freq, int n, int hd, float *cs, void *stream,
                                       kvl_err *err) {
    if (n < 1 || hd < 2) return kvl_err_set(err, KVL_ERR_ARG, "cuda rope: n %d hd %d", n, hd);
    rope_cs_k<<<n, 64, 0, (cudaStream_t)stream>>>(pos, freq, hd / 2, cs);
    KVL_CUDA_TRY(cudaGetLastError(), "cuda rope angles launch");
    return KVL_OK;
}

__global__ void set_pos_k(kvl_cuda_page_space sp, uint32_t id0, int64_t n_pages, int ppl, int P) {
    for (int64_t k = blockIdx.x; k < n_pages; k += gridDim.x) {
        int32_t *pos = (int32_t *)kvl_cuda_page_addr(sp, id0 + (uint32_t)k);
        for (int r = threadIdx.x; r < P; r += blockDim.x) pos[r] = (int32_t)((k % ppl) * P + r);
    }
}

extern "C" kvl_status kvl_cuda_pool_set_positions(kvl_cuda_pool *p, uint32_t id0, int64_t n_pages,
                                                  int pages_per_list, void *stream, kvl_err *err) {
    if (n_pages < 1 || pages_per_list < 1) return KVL_OK;
    set_pos_k<<<(unsigned)(n_pages < 65535 ? n_pages : 65535), 64, 0, (cudaStream_t)stream>>>(
        p->space, id0, n_pages, pages_per_list, p->P);
    KVL_CUDA_TRY(cudaGetLastError(), "cuda page positions launch");
    return KVL_OK;
}
