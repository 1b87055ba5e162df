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
static_assert(KVL_STATS_CHUNK == 4 * ST_THREADS, "a block's rows: 4 per thread");

/* Programmatic dependent launch: the statistics kernels are scheduled
 * while the kernel before them (split, merge or moments) runs and wait
 * here for its results. */
static __device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

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
    pdl_wait();
    const int c = blockIdx.x, qh = blockIdx.y, b = blockIdx.z, tid = threadIdx.x;
    const int n_head_kv = n_head / G, len = list_len[b * n_head_kv + qh / G], j0 = c * KVL_STATS_CHUNK;
    if (j0 >= len || (qmask && !(qmask[b] & (1u << KVL_CUDA_ACC_VOTE)))) return;
    const int j1 = min(len, j0 + KVL_STATS_CHUNK);
    const float *r = sc + ((size_t)b * n_head + qh) * sc_stride;
    double s1 = 0, s2 = 0, n = 0;
    /* 4 consecutive rows per thread (16-byte loads; sc rows are 16-byte aligned) */
    const int j = j0 + 4 * tid;
    if (j < j1) {
        float v[4];
        if (j + 4 <= j1) {
            const float4 f = *reinterpret_cast<const float4 *>(r + j);
            v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
        } else {
            for (int i = 0; i < 4; i++) v[i] = j + i < j1 ? r[j + i] : -INFINITY;
        }
#pragma unroll
        for (int i = 0; i < 4; i++)
            if (v[i] != -INFINITY) s1 += v[i], s2 += (double)v[i] * v[i], n += 1;
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
 * of the block's rows (header comment). ml: [B][n_head][n_split][2]. vec:
 * no shared rows, the accumulator rows 16-byte aligned (4 rows per thread
 * in 16-byte accesses); else one row per thread at a time. */
__global__ void __launch_bounds__(ST_THREADS)
    stats_fold_kernel(const kvl_cuda_attn_stats st, unsigned on, bool vec, const float *__restrict__ sc, int sc_stride,
                      const float *__restrict__ ml, int n_split, const double *__restrict__ mom, int n_chunk,
                      const int32_t *__restrict__ list_len, int n_head, int G) {
    pdl_wait();
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
    if (vec) {
        /* 4 consecutive rows per thread, every load issued before the math
         * and the stores (16-byte accesses: rows 16-byte aligned) */
        const int j = j0 + 4 * tid;
        if (j + 4 <= j1) {
            const float4 s4 = *reinterpret_cast<const float4 *>(r + j);
            float4 a4[KVL_CUDA_N_ACC];
            const float4 z = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            a4[KVL_CUDA_ACC_MASS] = ms ? *reinterpret_cast<const float4 *>(ms + j) : z;
            a4[KVL_CUDA_ACC_WSUM] = ws ? *reinterpret_cast<const float4 *>(ws + j) : z;
            a4[KVL_CUDA_ACC_WSQ] = ws ? *reinterpret_cast<const float4 *>(w2 + j) : z;
            a4[KVL_CUDA_ACC_VOTE] = vo ? *reinterpret_cast<const float4 *>(vo + j) : z;
            a4[KVL_CUDA_ACC_WENT] = en ? *reinterpret_cast<const float4 *>(en + j) : z;
            const float sv[4] = {s4.x, s4.y, s4.z, s4.w};
            float p[4];
#pragma unroll
            for (int i = 0; i < 4; i++) p[i] = sv[i] == -INFINITY ? 0.0f : expf(sv[i] - M) * inv;
            auto upd = [&](float4 &a, auto f) { a.x = f(a.x, 0), a.y = f(a.y, 1), a.z = f(a.z, 2), a.w = f(a.w, 3); };
            if (ms) upd(a4[KVL_CUDA_ACC_MASS], [&](float x, int i) { return x + p[i]; });
            if (ws) {
                upd(a4[KVL_CUDA_ACC_WSUM], [&](float x, int i) { return x + p[i]; });
                upd(a4[KVL_CUDA_ACC_WSQ], [&](float x, int i) { return x + p[i] * p[i]; });
            }
            if (vo) upd(a4[KVL_CUDA_ACC_VOTE], [&](float x, int i) { return sv[i] != -INFINITY && sv[i] < th ? x + 1.0f : x; });
            if (en) upd(a4[KVL_CUDA_ACC_WENT], [&](float x, int i) { return p[i] >= 1.17549435e-38f ? x - p[i] * __logf(p[i]) : x; });
            if (ms) *reinterpret_cast<float4 *>(ms + j) = a4[KVL_CUDA_ACC_MASS];
            if (ws) *reinterpret_cast<float4 *>(ws + j) = a4[KVL_CUDA_ACC_WSUM];
            if (ws) *reinterpret_cast<float4 *>(w2 + j) = a4[KVL_CUDA_ACC_WSQ];
            if (la) *reinterpret_cast<float4 *>(la + j) = make_float4(p[0], p[1], p[2], p[3]);
            if (vo) *reinterpret_cast<float4 *>(vo + j) = a4[KVL_CUDA_ACC_VOTE];
            if (en) *reinterpret_cast<float4 *>(en + j) = a4[KVL_CUDA_ACC_WENT];
            return;
        }
        if (j >= j1) return;
        /* the list's last rows: the scalar loop over this thread's rows */
        for (int jj = j; jj < j1; jj++) {
            const float s = r[jj];
            const float p = s == -INFINITY ? 0.0f : expf(s - M) * inv;
            if (ms) ms[jj] += p;
            if (ws) ws[jj] += p, w2[jj] += p * p;
            if (la) la[jj] = p;
            if (en && p >= 1.17549435e-38f) en[jj] -= p * __logf(p);
            if (vo && s != -INFINITY && s < th) vo[jj] += 1.0f;
        }
        return;
    }
    /* shared rows (atomics) or an unaligned stride: one row per thread at a time */
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
    w->max_len = ((max_len > 0 ? max_len : 1) + 3) & ~3; /* sc rows 16-byte aligned */
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
    bool vec = !st->shared_rows && (st->stride & 3) == 0;
    for (int a = 0; a < KVL_CUDA_N_ACC; a++) vec = vec && ((uintptr_t)st->acc[a] & 15) == 0;
    if (st->stride < max_len)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda attn stats: row stride %d < the call's longest list %d", st->stride,
                           max_len);
    const dim3 grid((unsigned)((max_len + KVL_STATS_CHUNK - 1) / KVL_STATS_CHUNK), (unsigned)n_head, (unsigned)n_seq);
    const int G = n_head / n_head_kv;
    /* programmatic dependent launches (as the merge): each kernel scheduled
     * while the one before runs, waiting in-kernel (pdl_wait) */
    cudaLaunchConfig_t lc = {};
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    lc.gridDim = grid;
    lc.blockDim = dim3(ST_THREADS);
    lc.stream = s;
    lc.attrs = at;
    lc.numAttrs = 1;
    if (on & 1u << KVL_CUDA_ACC_VOTE)
        KVL_CUDA_TRY(cudaLaunchKernelEx(&lc, stats_moments_kernel, (const float *)w->sc, w->max_len, list_len,
                                        st->qmask, n_head, G, w->mom, w->n_chunk),
                     "cuda attn stats: moments kernel launch");
    KVL_CUDA_TRY(cudaLaunchKernelEx(&lc, stats_fold_kernel, *st, on, vec, (const float *)w->sc, w->max_len,
                                    (const float *)w->ml, n_split, (const double *)w->mom, w->n_chunk, list_len, n_head,
                                    G),
                 "cuda attn stats: fold kernel launch");
    return KVL_OK;
}
