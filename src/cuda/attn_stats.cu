/* Attention statistics for the eviction policies on the device (the
 * software analogue of VEDA's voting engine beside the attention array):
 * the split kernels' statistics instantiations (attn_stats_tc*.cu,
 * attn_stats_core.cu: a template flag on the default kernels) write each
 * scaled score s of a (query head, list row) to a scratch row and each
 * split's softmax (m, l); the kernels here turn them into the CPU's
 * accumulators (src/kv/attn.c stats_fold, same semantics):
 *   stats_moments_kernel: per block of KVL_STATS_CHUNK rows of a query's
 *     row, the sum, sum of squares (double, as the CPU) and count of its
 *     finite scores (VOTE's mean and std; only when VOTE is on);
 *   stats_fold_kernel: per block of rows, the query's final max M and sum
 *     L folded from the splits' (m, l) (the attention's own normalizer,
 *     as the merge folds them), p = exp(s - M) / L, and the updates
 *     MASS += p, WSUM += p, WSQ += p^2, LAST = p, WENT -= p log p,
 *     VOTE += 1 for s < a*mean - b*std.
 * Grids (row blocks, query heads, sequences): long lists at batch 1 still
 * fill the device (a block per query row would give 32 blocks). Cost per
 * (row, query head): the score written once and read twice (4 + 8 bytes)
 * plus 8 bytes per accumulator on (read and write). */
#include <math.h>
#include <stdlib.h>

#include "cuda/attn_stats.cuh"
#include "cuda/cuda_util.cuh"

#define ST_THREADS 256

/* accumulator row of (b, qh) of accumulator a */
static __device__ __forceinline__ float *acc_row(const kvl_cuda_attn_stats &st, int a, int b, int qh, int n_head) {
    const int r = st.row ? st.row[b] : b;
    return st.acc[a] + ((size_t)r * n_head + qh) * st.stride;
}

template <class T> static __device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int o = 16; o >= 1; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Block (row block c, query head qh, sequence b): mom[b][qh][c] = (sum s,
 * sum s^2, count) over the block's finite scores. */
__global__ void __launch_bounds__(ST_THREADS)
    stats_moments_kernel(const float *__restrict__ sc, int sc_stride, const int32_t *__restrict__ list_len,
                         const uint8_t *__restrict__ qmask, int n_head, int G, double *__restrict__ mom, int n_chunk) {
    const int c = blockIdx.x, qh = blockIdx.y, b = blockIdx.z, tid = threadIdx.x;
    const int n_head_kv = n_head / G, len = list_len[b * n_head_kv + qh / G], j0 = c * KVL_STATS_CHUNK;
    if (j0 >= len || (qmask && !(qmask[b] & (1u << KVL_CUDA_ACC_VOTE)))) return;
    const int j1 = min(len, j0 + KVL_STATS_CHUNK);
    const float *r = sc + ((size_t)b * n_head + qh) * sc_stride;
    double s1 = 0, s2 = 0, n = 0;
    for (int j = j0 + tid; j < j1; j += ST_THREADS) {
        const float s = r[j];
        if (s != -INFINITY) s1 += s, s2 += (double)s * s, n += 1;
    }
    __shared__ double red[3][ST_THREADS / 32];
    s1 = warp_sum(s1), s2 = warp_sum(s2), n = warp_sum(n);
    if ((tid & 31) == 0) red[0][tid >> 5] = s1, red[1][tid >> 5] = s2, red[2][tid >> 5] = n;
    __syncthreads();
    if (tid < 3) {
        double v = 0;
        for (int w = 0; w < ST_THREADS / 32; w++) v += red[tid][w];
        mom[(((size_t)b * n_head + qh) * n_chunk + c) * 3 + tid] = v;
    }
}

/* Block (row block c, query head qh, sequence b): the accumulator updates
 * of the block's rows (header comment). ml: [B][n_head][n_split][2]. */
__global__ void __launch_bounds__(ST_THREADS)
    stats_fold_kernel(const kvl_cuda_attn_stats st, unsigned on, const float *__restrict__ sc, int sc_stride,
                      const float *__restrict__ ml, int n_split, const double *__restrict__ mom, int n_chunk,
                      const int32_t *__restrict__ list_len, int n_head, int G) {
    const int c = blockIdx.x, qh = blockIdx.y, b = blockIdx.z, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int n_head_kv = n_head / G, len = list_len[b * n_head_kv + qh / G], j0 = c * KVL_STATS_CHUNK;
    const unsigned mask = st.qmask ? on & st.qmask[b] : on;
    if (j0 >= len || !mask) return;
    __shared__ float sh[ST_THREADS / 32];
    __shared__ double shd[2];
    /* M = max m_i, L = sum exp(m_i - M) l_i over the splits */
    const float *mr = ml + ((size_t)b * n_head + qh) * n_split * 2;
    float m = -INFINITY;
    for (int i = tid; i < n_split; i += ST_THREADS) m = fmaxf(m, mr[2 * i]);
#pragma unroll
    for (int o = 16; o >= 1; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (lane == 0) sh[warp] = m;
    __syncthreads();
    float M = sh[0];
    for (int w = 1; w < ST_THREADS / 32; w++) M = fmaxf(M, sh[w]);
    __syncthreads();
    float l = 0.0f;
    if (M != -INFINITY)
        for (int i = tid; i < n_split; i += ST_THREADS)
            if (mr[2 * i] != -INFINITY) l += expf(mr[2 * i] - M) * mr[2 * i + 1];
    l = warp_sum(l);
    if (lane == 0) sh[warp] = l;
    __syncthreads();
    float L = 0.0f;
    for (int w = 0; w < ST_THREADS / 32; w++) L += sh[w];
    if (!(L > 0.0f)) return; /* the query saw nothing: no update (as the CPU) */
    const float inv = 1.0f / L;
    /* VOTE: threshold from the moments of the whole row */
    float th = -INFINITY;
    const bool vote = mask & (1u << KVL_CUDA_ACC_VOTE);
    if (vote) {
        if (tid == 0) {
            const double *mp = mom + ((size_t)b * n_head + qh) * n_chunk * 3;
            double s1 = 0, s2 = 0, n = 0;
            const int nc = (len + KVL_STATS_CHUNK - 1) / KVL_STATS_CHUNK;
            for (int i = 0; i < nc; i++) s1 += mp[3 * i], s2 += mp[3 * i + 1], n += mp[3 * i + 2];
            shd[0] = n > 0 ? s1 / n : 0;
            shd[1] = n > 0 ? s2 / n - shd[0] * shd[0] : 0;
        }
        __syncthreads();
        const double mean = shd[0], var = shd[1];
        th = (float)(st.vote_a * mean - st.vote_b * sqrt(var > 0 ? var : 0));
    }
    const float *r = sc + ((size_t)b * n_head + qh) * sc_stride;
    float *ms = mask & (1u << KVL_CUDA_ACC_MASS) ? acc_row(st, KVL_CUDA_ACC_MASS, b, qh, n_head) : nullptr;
    float *ws = mask & (1u << KVL_CUDA_ACC_WSUM) ? acc_row(st, KVL_CUDA_ACC_WSUM, b, qh, n_head) : nullptr;
    float *w2 = ws ? acc_row(st, KVL_CUDA_ACC_WSQ, b, qh, n_head) : nullptr;
    float *la = mask & (1u << KVL_CUDA_ACC_LAST) ? acc_row(st, KVL_CUDA_ACC_LAST, b, qh, n_head) : nullptr;
    float *vo = vote ? acc_row(st, KVL_CUDA_ACC_VOTE, b, qh, n_head) : nullptr;
    float *en = mask & (1u << KVL_CUDA_ACC_WENT) ? acc_row(st, KVL_CUDA_ACC_WENT, b, qh, n_head) : nullptr;
    const bool at = st.shared_rows != 0;
    const int j1 = min(len, j0 + KVL_STATS_CHUNK);
    for (int j = j0 + tid; j < j1; j += ST_THREADS) {
        const float s = r[j];
        const float p = s == -INFINITY ? 0.0f : expf(s - M) * inv;
        if (ms) at ? (void)atomicAdd(ms + j, p) : (void)(ms[j] += p);
        if (ws) {
            at ? (void)atomicAdd(ws + j, p) : (void)(ws[j] += p);
            at ? (void)atomicAdd(w2 + j, p * p) : (void)(w2[j] += p * p);
        }
        if (la) la[j] = p;
        /* __logf: ~2^-21 relative (logf's slow path spilled registers); p
         * below FLT_MIN (-p log p < 1e-36, which the CPU adds) is skipped:
         * __logf flushes it to -inf */
        if (en && p >= 1.17549435e-38f) at ? (void)atomicAdd(en + j, -p * __logf(p)) : (void)(en[j] -= p * __logf(p));
        if (vo && s != -INFINITY && s < th) at ? (void)atomicAdd(vo + j, 1.0f) : (void)(vo[j] += 1.0f);
    }
}

/* ---- host side -------------------------------------------------------------------------- */

kvl_status kvl_cuda_stats_ws_create(kvl_cuda_split_fn fn, size_t smem_max, int n_head, int max_seq, int max_len,
                                    size_t ml_cap, kvl_cuda_stats_ws **out, kvl_err *err) {
    *out = NULL;
    kvl_cuda_stats_ws *w = (kvl_cuda_stats_ws *)calloc(1, sizeof *w);
    if (!w) return kvl_err_set(err, KVL_ERR_NOMEM, "cuda attn stats: out of memory");
    w->fn = fn;
    w->max_len = max_len > 0 ? max_len : 1;
    w->n_chunk = (w->max_len + KVL_STATS_CHUNK - 1) / KVL_STATS_CHUNK;
    w->ml_cap = ml_cap;
    const size_t sc_b = sizeof(float) * (size_t)max_seq * n_head * w->max_len, ml_b = sizeof(float) * 2 * ml_cap;
    const size_t mom_b = sizeof(double) * 3 * (size_t)max_seq * n_head * w->n_chunk;
    cudaError_t e = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_max);
    if (e == cudaSuccess) e = cudaMalloc(&w->sc, sc_b);
    if (e == cudaSuccess) e = cudaMalloc(&w->ml, ml_b);
    if (e == cudaSuccess) e = cudaMalloc(&w->mom, mom_b);
    if (e != cudaSuccess) {
        kvl_cuda_stats_ws_free(w);
        return kvl_cuda_status(e, "cuda attn stats: workspace", err);
    }
    w->bytes = sc_b + ml_b + mom_b;
    *out = w;
    return KVL_OK;
}

void kvl_cuda_stats_ws_free(kvl_cuda_stats_ws *w) {
    if (!w) return;
    cudaFree(w->sc);
    cudaFree(w->ml);
    cudaFree(w->mom);
    free(w);
}

kvl_status kvl_cuda_stats_launch(const kvl_cuda_stats_ws *w, const kvl_cuda_attn_stats *st, int n_seq, int n_head,
                                 int n_head_kv, int n_split, int max_len, const int32_t *list_len, cudaStream_t s,
                                 kvl_err *err) {
    unsigned on = 0;
    for (int a = 0; a < KVL_CUDA_N_ACC; a++)
        if (st->acc[a]) on |= 1u << a;
    if ((on >> KVL_CUDA_ACC_WSUM & 1) != (on >> KVL_CUDA_ACC_WSQ & 1))
        return kvl_err_set(err, KVL_ERR_ARG, "cuda attn stats: WSUM and WSQ go together");
    on &= ~(1u << KVL_CUDA_ACC_WSQ); /* fed with WSUM */
    if (!on || max_len <= 0) return KVL_OK;
    if (st->stride < max_len)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda attn stats: row stride %d < the call's longest list %d", st->stride,
                           max_len);
    const dim3 grid((unsigned)((max_len + KVL_STATS_CHUNK - 1) / KVL_STATS_CHUNK), (unsigned)n_head, (unsigned)n_seq);
    const int G = n_head / n_head_kv;
    if (on & 1u << KVL_CUDA_ACC_VOTE) {
        stats_moments_kernel<<<grid, ST_THREADS, 0, s>>>(w->sc, w->max_len, list_len, st->qmask, n_head, G, w->mom,
                                                         w->n_chunk);
        KVL_CUDA_TRY(cudaGetLastError(), "cuda attn stats: moments kernel launch");
    }
    stats_fold_kernel<<<grid, ST_THREADS, 0, s>>>(*st, on, w->sc, w->max_len, w->ml, n_split, w->mom, w->n_chunk,
                                                  list_len, n_head, G);
    KVL_CUDA_TRY(cudaGetLastError(), "cuda attn stats: fold kernel launch");
    return KVL_OK;
}
