/* Token sampling on the device (kvl_cuda_sample, contract in lm_ops.h):
 * the CPU sampler's pipeline (src/engine/sampler.c) without the repetition
 * penalty: temperature -> top-k -> softmax -> min-p / top-p (the shorter
 * prefix of the sorted candidates) -> renormalised draw; temperature <= 0
 * is greedy (kvl_cuda_argmax's rule). One block of 512 threads per row:
 *  1. candidates: NaN and -inf dropped, +inf as FLT_MAX, scaled by the f32
 *     1/temperature (overflow clamped to +-FLT_MAX), exactly as the CPU;
 *  2. top-k by radix select on an order-preserving 32-bit key (4 passes of
 *     8 bits with a shared histogram); ties at the k-th key taken lowest id
 *     first (a scan in id order), the CPU's total order;
 *  3. the <= k survivors bitonic-sorted in shared memory (value desc, id
 *     asc), exp(l - max) in double, an inclusive scan for the cumulative
 *     mass, min-p and top-p cut as the CPU, the draw u * sum against the
 *     cumulative sums.
 * The uniform u of row b comes from splitmix64 of (seed, counter[b], b);
 * counter[b] (device memory) is incremented by the draw, so replays of a
 * CUDA graph draw fresh numbers. Same candidate set and probabilities as
 * the CPU (up to double rounding of the sums); the CPU's xoshiro stream is
 * not reproduced, so single draws differ. */
#include <float.h>
#include <math.h>
#include <stdint.h>

#include "cuda/cuda_util.cuh"
#include "cuda/lm_ops.h"

#define SAMPLE_THREADS 512 /* 2 candidate slots per thread (1024 threads spill at 64 registers) */
#define SAMPLE_KMAX 1024

/* Order-preserving key of a candidate value (larger value, larger key). */
static __device__ __forceinline__ uint32_t vkey(float v) {
    const uint32_t u = __float_as_uint(v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* The candidate value of logit l (as the CPU sampler), or false if dropped. */
static __device__ __forceinline__ bool cand(float l, float inv_t, float *out) {
    if (l != l || l == -INFINITY) return false;
    if (l == INFINITY) l = FLT_MAX;
    l *= inv_t;
    if (isinf(l)) l = l > 0 ? FLT_MAX : -FLT_MAX;
    *out = l;
    return true;
}

static __device__ __forceinline__ uint64_t smix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* sum over the block (all threads call; result in every thread) */
template <typename T> static __device__ T block_sum(T v, T *red) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    T t = 0;
    for (int i = 0; i < SAMPLE_THREADS / 32; i++) t += red[i];
    return t;
}

__global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_k(const float *__restrict__ x, int cols, kvl_cuda_sample_params p, uint64_t seed, uint64_t *ctr,
             int32_t *out) {
    __shared__ unsigned hist[256];
    __shared__ float cv[SAMPLE_KMAX];
    __shared__ int ci[SAMPLE_KMAX];
    __shared__ double ce[SAMPLE_KMAX];
    __shared__ int red_i[SAMPLE_THREADS / 32];
    __shared__ uint32_t s_prefix;
    __shared__ int s_need, s_n;
    const float *xr = x + (size_t)blockIdx.x * cols;
    const int tid = threadIdx.x;
    const float inv_t = 1.0f / p.temperature;
    int k = p.top_k;
    /* 2. radix select of the k-th largest key among the candidates */
    int nvalid = 0;
    for (int j = tid; j < cols; j += SAMPLE_THREADS) {
        float v;
        nvalid += cand(xr[j], inv_t, &v);
    }
    nvalid = block_sum<int>(nvalid, red_i);
    if (nvalid == 0) { /* every logit NaN or -inf: the CPU's argmax (first non-NaN: the -inf tie; all NaN: 0) */
        if (tid == 0) s_n = cols;
        __syncthreads();
        for (int j = tid; j < cols; j += SAMPLE_THREADS)
            if (xr[j] == xr[j]) atomicMin(&s_n, j);
        __syncthreads();
        if (tid == 0) out[blockIdx.x] = s_n < cols ? s_n : 0;
        return;
    }
    const bool all = nvalid <= k; /* the CPU skips top-k then: every candidate */
    if (all) k = nvalid;
    uint32_t prefix = 0, mask = 0;
    int need = k; /* candidates still to take at or below the prefix */
    if (!all) {
#pragma unroll 1
        for (int shift = 24; shift >= 0; shift -= 8) {
            for (int i = tid; i < 256; i += SAMPLE_THREADS) hist[i] = 0;
            __syncthreads();
            for (int j = tid; j < cols; j += SAMPLE_THREADS) {
                float v;
                if (!cand(xr[j], inv_t, &v)) continue;
                const uint32_t kk = vkey(v);
                if ((kk & mask) == prefix) atomicAdd(&hist[(kk >> shift) & 255], 1u);
            }
            __syncthreads();
            if (tid == 0) {
                int acc = 0, d = 255;
                for (; d > 0; d--) {
                    if (acc + (int)hist[d] >= need) break;
                    acc += (int)hist[d];
                }
                s_prefix = prefix | ((uint32_t)d << shift);
                s_need = need - acc;
            }
            __syncthreads();
            prefix = s_prefix, need = s_need;
            mask |= 255u << shift;
            __syncthreads();
        }
    }
    /* gather: keys above the threshold (all candidates when `all`), then the
     * `need` lowest ids whose key equals it */
    if (tid == 0) s_n = 0;
    __syncthreads();
    for (int j = tid; j < cols; j += SAMPLE_THREADS) {
        float v;
        if (!cand(xr[j], inv_t, &v)) continue;
        if (all || vkey(v) > prefix) {
            const int slot = atomicAdd(&s_n, 1);
            cv[slot] = v, ci[slot] = j;
        }
    }
    __syncthreads();
    if (!all) {
        int taken = 0;
        for (int j0 = 0; j0 < cols && taken < need; j0 += SAMPLE_THREADS) { /* tiles in id order */
            const int j = j0 + tid;
            float v = 0;
            const bool eq = j < cols && cand(xr[j], inv_t, &v) && vkey(v) == prefix;
            const unsigned bal = __ballot_sync(0xffffffffu, eq);
            if ((tid & 31) == 0) red_i[tid >> 5] = __popc(bal);
            __syncthreads();
            int before = taken;
            for (int w = 0; w < (tid >> 5); w++) before += red_i[w];
            before += __popc(bal & ((1u << (tid & 31)) - 1u));
            if (eq && before < need) {
                const int slot = s_n + (before - taken);
                cv[slot] = v, ci[slot] = j;
            }
            int tile = 0;
            for (int w = 0; w < SAMPLE_THREADS / 32; w++) tile += red_i[w];
            __syncthreads();
            if (tid == 0) s_n += min(tile, need - taken);
            taken += min(tile, need - taken);
            __syncthreads();
        }
    }
    const int n = k;
    /* 3. sort the n candidates: value desc, id asc; padding sorts last */
    for (int i = tid; i < SAMPLE_KMAX; i += SAMPLE_THREADS)
        if (i >= n) cv[i] = -INFINITY, ci[i] = 0x7fffffff;
    __syncthreads();
#pragma unroll 1
    for (int size = 2; size <= SAMPLE_KMAX; size <<= 1)
#pragma unroll 1
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = tid; i < SAMPLE_KMAX; i += SAMPLE_THREADS) { /* pair (i, i ^ stride) by its lower index */
                const int jx = i ^ stride;
                if (jx > i) {
                    const bool desc = (i & size) == 0;
                    const float a = cv[i], b = cv[jx];
                    const int ia = ci[i], ib = ci[jx];
                    const bool a_first = a > b || (a == b && ia < ib);
                    if (desc != a_first) cv[i] = b, cv[jx] = a, ci[i] = ib, ci[jx] = ia;
                }
            }
            __syncthreads();
        }
    const double maxl = cv[0];
    for (int i = tid; i < SAMPLE_KMAX; i += SAMPLE_THREADS) ce[i] = i < n ? exp((double)cv[i] - maxl) : 0.0;
    __syncthreads();
#pragma unroll 1
    for (int o = 1; o < SAMPLE_KMAX; o <<= 1) { /* inclusive scan, slots tid and tid + 512 */
        const int i0 = tid, i1 = tid + SAMPLE_THREADS;
        const double a0 = i0 >= o ? ce[i0 - o] : 0.0, a1 = i1 >= o ? ce[i1 - o] : 0.0;
        __syncthreads();
        ce[i0] += a0, ce[i1] += a1;
        __syncthreads();
    }
    const double z = ce[n - 1];
    const int i0 = tid, i1 = tid + SAMPLE_THREADS;
    /* min-p keeps l - max >= log(min_p) (a prefix), top-p the first prefix
     * with cumulative mass >= top_p: the shorter of the two */
    int keep = n;
    if (p.min_p > 0.0f) {
        const double thr = p.min_p >= 1.0f ? 0.0 : log((double)p.min_p);
        keep = block_sum<int>((i0 < n && (double)cv[i0] - maxl >= thr) + (i1 < n && (double)cv[i1] - maxl >= thr),
                              red_i);
    }
    if (p.top_p < 1.0f) {
        const double tp = (double)p.top_p;
        const int cut = block_sum<int>((i0 < keep && ce[i0] / z < tp) + (i1 < keep && ce[i1] / z < tp), red_i) + 1;
        keep = min(keep, cut);
    }
    const double sum = ce[keep - 1];
    uint64_t c = ctr[blockIdx.x];
    const uint64_t r = smix(seed ^ smix(c * 0x2545F4914F6CDD1Dull + (uint64_t)blockIdx.x));
    const double u = (double)(r >> 11) * 0x1.0p-53 * sum;
    /* first i with u < cum_i */
    const int pick = block_sum<int>((i0 < keep && ce[i0] <= u) + (i1 < keep && ce[i1] <= u), red_i);
    if (tid == 0) {
        out[blockIdx.x] = ci[pick < keep ? pick : keep - 1];
        ctr[blockIdx.x] = c + 1;
    }
}

extern "C" kvl_status kvl_cuda_sample(const float *x, int n, int cols, const kvl_cuda_sample_params *p, uint64_t seed,
                                      uint64_t *counter, int32_t *out, void *stream, kvl_err *err) {
    if (n < 1 || cols < 1 || !p || !out) return kvl_err_set(err, KVL_ERR_ARG, "cuda sample: n %d cols %d", n, cols);
    if (!(p->temperature > 0.0f)) return kvl_cuda_argmax(x, n, cols, out, stream, err);
    if (p->top_k < 1 || p->top_k > SAMPLE_KMAX)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED,
                           "cuda sample: top_k %d unsupported on the device (1..%d; 0 = off needs a full sort)",
                           p->top_k, SAMPLE_KMAX);
    if (p->top_p != p->top_p || p->min_p != p->min_p || !counter)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda sample: NaN top_p / min_p or no counter");
    sample_k<<<n, SAMPLE_THREADS, 0, (cudaStream_t)stream>>>(x, cols, *p, seed, counter, out);
    KVL_CUDA_TRY(cudaGetLastError(), "cuda sample launch");
    return KVL_OK;
}

/* The CPU sampler's repetition penalty (sampler.c, apply_repeat_penalty) on
 * row x [cols]: each distinct token of the window once, l > 0 ? l / pen :
 * l * pen (IEEE division and product: the CPU's floats). hist: device
 * [0] = count, then the ids; ids outside [0, cols) skipped. One block. */
__global__ void penalty_k(float *x, int cols, const int32_t *hist, float pen) {
    const int n = hist[0];
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const int t = hist[1 + i];
        if (t < 0 || t >= cols) continue;
        bool dup = false;
        for (int j = 0; j < i && !dup; j++) dup = hist[1 + j] == t; /* the first occurrence applies it */
        if (dup) continue;
        const float l = x[t];
        x[t] = l > 0.0f ? l / pen : l * pen;
    }
}

extern "C" kvl_status kvl_cuda_repeat_penalty(float *x, int cols, const int32_t *hist, float penalty, void *stream,
                                              kvl_err *err) {
    if (cols < 1 || !x || !hist || !(penalty > 0.0f))
        return kvl_err_set(err, KVL_ERR_ARG, "cuda repeat penalty: cols %d penalty %g", cols, (double)penalty);
    penalty_k<<<1, 256, 0, (cudaStream_t)stream>>>(x, cols, hist, penalty);
    KVL_CUDA_TRY(cudaGetLastError(), "cuda repeat penalty launch");
    return KVL_OK;
}
