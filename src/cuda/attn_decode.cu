/* Paged decode attention on the device (one query token per sequence, a
 * batch of sequences), reading kvlite's page layout with dequantization fused:
 * the host side (plan, workspace, launches) and the merge kernel. The split
 * kernel is attn_kernel.cuh, instantiated per codec in attn_<codec>.cu.
 * Reference: kvl_kv_attend / kvl_kv_attn_* in src/kv/attn.c (same function;
 * the order of floating-point sums differs, see tests/cuda/test_cuda.c).
 *
 * With more than one split per list the split kernel writes a partial
 * record (m, l, acc[D]) per query head and split, and merge_kernel (blocks
 * of one query head x 32 dims, a programmatic dependent launch) folds the
 * records. kvl_cuda_attn_plan sizes the splits: one wave of resident blocks
 * when that is enough, else whole waves. */
#include <math.h>
#include <stdlib.h>

#include "cuda/attn_kernel.cuh"
#include "cuda/attn_stats.cuh"
#include "cuda/attn_tc.cuh"
#include "cuda/cuda_util.cuh"

#define MERGE_THREADS 256
#define MERGE_WARPS (MERGE_THREADS / 32)

/* Block (b * n_head + query head, 32 dims), MERGE_THREADS threads: fold the
 * n_split partial records (m_i, l_i, acc_i) of the query head for 32 of its
 * dims: M = max m_i, w_i = exp(m_i - M), out = sum w_i acc_i / sum w_i l_i.
 * Weights by all threads; then warp w sums the splits i = w mod MERGE_WARPS,
 * lane = dim (128-byte loads per split), and warp 0 adds the warps' sums.
 * Launched as a programmatic dependent of the split kernel: it may start
 * while the split kernel's last blocks run and waits for their results at
 * griddepcontrol.wait. Shared memory: w [n_split]. */
__global__ void __launch_bounds__(MERGE_THREADS)
    merge_kernel(const float *__restrict__ part, int n_split, int D, float *__restrict__ out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
    extern __shared__ float w[];
    __shared__ float sh[MERGE_WARPS], red[MERGE_WARPS][32];
    const size_t rec = 2 + (size_t)D;
    const float *rp = part + (size_t)blockIdx.x * n_split * rec;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, d = blockIdx.y * 32 + lane;
    float m = -INFINITY;
    for (int i = tid; i < n_split; i += MERGE_THREADS) m = fmaxf(m, rp[i * rec]);
#pragma unroll
    for (int o = 16; o >= 1; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (lane == 0) sh[warp] = m;
    __syncthreads();
    float M = sh[0];
    for (int i = 1; i < MERGE_WARPS; i++) M = fmaxf(M, sh[i]);
    float l = 0.0f;
    for (int i = tid; i < n_split; i += MERGE_THREADS) {
        const float mi = rp[i * rec];
        const float wi = mi == -INFINITY ? 0.0f : __expf(mi - M);
        w[i] = wi;
        l = fmaf(wi, rp[i * rec + 1], l);
    }
#pragma unroll
    for (int o = 16; o >= 1; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
    __syncthreads(); /* all of sh read above; w complete */
    if (lane == 0) sh[warp] = l;
    float a = 0.0f;
    if (d < D) {
#pragma unroll 4
        for (int i = warp; i < n_split; i += MERGE_WARPS) a = fmaf(w[i], rp[i * rec + 2 + d], a);
    }
    red[warp][lane] = a;
    __syncthreads();
    if (warp == 0 && d < D) {
        float S = 0.0f, A = 0.0f;
        for (int i = 0; i < MERGE_WARPS; i++) S += sh[i], A += red[i][lane];
        out[(size_t)blockIdx.x * D + d] = S > 0.0f ? A / S : 0.0f;
    }
}

/* ---- host side -------------------------------------------------------------------------- */

/* f16 / int8 / fp8: the variant that selects the tensor-core kernels
 * (attn_f16_tc.cu, attn_b8_tc.cu: the default, faster than the CUDA-core
 * kernels at every measured shape, docs/RESULTS.md 2026-12-03) and the
 * CUDA-core kernel of a variant (7: the CUDA-core default before, kept
 * selectable; 1..6 its tuning variants; 8: the tensor-core kernels, as 0). */
#define KVL_CUDA_TC_VARIANT 0
static int kvl_cuda_core_variant(int v) { return v == 7 || v == KVL_CUDA_TC_VARIANT ? 0 : v; }

struct kvl_cuda_attn {
    const kvl_cuda_pool *pool;
    int n_head, n_head_kv, G, max_seq, max_len;
    kvl_cuda_attn_tuning tun;
    kvl_cuda_split_fn fn;
    int tc; /* fn is a tc_split_kernel (attn_tc.cuh) */
    int nw; /* warps per block of fn (kvl_cuda_tc_warps for tc, else NWARPS) */
    size_t smem_max;
    float *part;        /* device */
    size_t part_floats; /* capacity */
    kvl_cuda_stats_ws *st; /* statistics (attn_stats.cu): NULL until kvl_cuda_attn_enable_stats */
};

/* Pages per split quantum of the plan: one softmax step of every warp
 * (warps x tiles per step x 16 tokens: 128 for 4 warps x pairs) for the
 * tensor-core kernels unless tuning.tile_round < 0; else 1. */
static int tile_quantum(const kvl_cuda_attn *a) {
    const int P = a->pool->P, T = a->nw * kvl_cuda_tc_step(a->pool->codec) * 16;
    return a->tc && a->tun.tile_round >= 0 && P < T ? (T + P - 1) / P : 1;
}

static size_t smem_bytes(const kvl_cuda_attn *a, int chunk_pages, int *pid_slots) {
    const int D = a->pool->D, slots = 2 * ((chunk_pages + 1) & ~1); /* 8-byte addresses, in floats */
    const size_t sc = (size_t)a->G * ((size_t)chunk_pages << a->pool->logP), red = (size_t)a->nw * a->G * D;
    if (pid_slots) *pid_slots = slots;
    if (a->tc)
        return sizeof(float) * ((size_t)slots + kvl_cuda_tc_smem_floats(D, a->G, a->pool->codec));
    return sizeof(float) * ((size_t)slots + (sc > red ? sc : red));
}

extern "C" void kvl_cuda_attn_plan(const kvl_cuda_attn *a, int n_seq, int max_len, int *chunk_pages,
                                   int *n_split) {
    const int P = a->pool->P;
    const int max_pages = (max_len + P - 1) / P;
    const long lists = (long)n_seq * a->n_head_kv;
    /* tensor-core kernels: splits of a whole number of block steps (warps x
     * tiles per softmax step, tile_quantum): a warp given an odd number of
     * tiles made the pair kernels' split 13-15% slower (RESULTS, 2026-12-03) */
    const int q = tile_quantum(a);
    auto rnd = [&](int c) {
        if (q > 1 && c < max_pages) c = (c + q - 1) / q * q;
        return c < max_pages || max_pages == 0 ? c : max_pages;
    };
    /* floor: the grid stays within one wave of resident blocks */
    const long want = lists > 0 && a->tun.target_blocks >= lists ? a->tun.target_blocks / lists : 1;
    int cp = max_pages > 0 ? (int)((max_pages + want - 1) / want) : 1;
    const int cp_min = (a->tun.min_chunk_tokens + P - 1) / P, cp_max = a->tun.max_chunk_tokens / P;
    if (cp < cp_min) cp = cp_min;
    if (cp > cp_max) cp = cp_max;
    if (max_pages > 0 && cp > max_pages) cp = max_pages;
    if (cp < 1) cp = 1;
    cp = rnd(cp);
    int ns = max_pages > 0 ? (max_pages + cp - 1) / cp : 1;
    const long slots = a->tun.target_blocks > 0 ? a->tun.target_blocks : 1;
    if (lists * ns > slots) {
        /* more than one wave: the grid's last wave runs part-empty (3.1 waves
         * take as long as 4). Up to 4x more splits, take the fewest whose
         * waves are >= 90% full, else the fullest. */
        double best = 0;
        int best_ns = ns;
        for (int t = ns; t <= 4 * ns && t <= max_pages; t++) {
            const int tcp = rnd((max_pages + t - 1) / t), tns = (max_pages + tcp - 1) / tcp;
            if (tcp < cp_min || tns != t) continue;
            const long blocks = lists * tns, waves = (blocks + slots - 1) / slots;
            const double eff = (double)blocks / (double)(waves * slots);
            if (eff > best + 1e-9) best = eff, best_ns = tns;
            if (eff >= 0.9) break;
        }
        ns = best_ns;
        cp = rnd((max_pages + ns - 1) / ns);
        ns = (max_pages + cp - 1) / cp;
    }
    *chunk_pages = cp;
    *n_split = ns;
}

extern "C" int kvl_cuda_attn_step_tokens(const kvl_cuda_attn *a) {
    return a->tc ? a->nw * kvl_cuda_tc_step(a->pool->codec) * 16 : 16;
}
extern "C" int kvl_cuda_attn_threads(const kvl_cuda_attn *a) { return 32 * a->nw; }

extern "C" kvl_status kvl_cuda_attn_create(const kvl_cuda_pool *p, int n_head, int n_head_kv, int max_seq,
                                           int max_len, const kvl_cuda_attn_tuning *tuning, kvl_cuda_attn **out,
                                           kvl_err *err) {
    *out = NULL;
    if (!p || n_head_kv <= 0 || n_head <= 0 || n_head % n_head_kv || max_seq <= 0 || max_len < 0)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda attn: invalid shape (n_head %d, n_head_kv %d, max_seq %d)", n_head,
                           n_head_kv, max_seq);
    const int G = n_head / n_head_kv;
    if (G > MAX_G)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda attn: %d query heads per kv-head (kernels: 1..%d)", G,
                           MAX_G);
    kvl_cuda_attn *a = (kvl_cuda_attn *)calloc(1, sizeof *a);
    if (!a) return kvl_err_set(err, KVL_ERR_NOMEM, "cuda attn: out of memory");
    a->pool = p;
    a->n_head = n_head, a->n_head_kv = n_head_kv, a->G = G, a->max_seq = max_seq, a->max_len = max_len;
    if (tuning) a->tun = *tuning;
    if (a->tun.min_chunk_tokens <= 0) a->tun.min_chunk_tokens = 64;
    switch (p->codec) {
    case KVL_CUDA_CODEC_F16:
        /* KVL_CUDA_TC_VARIANT: tensor cores (attn_f16_tc.cu) where they take
         * the shape, else the CUDA-core kernel; 7: the CUDA-core kernel;
         * 1..6: its tuning variants (D 128, G 4) */
        if (a->tun.variant == KVL_CUDA_TC_VARIANT || a->tun.variant == 8) a->fn = kvl_cuda_pick_f16_tc(p->D, G, p->P), a->tc = a->fn != NULL;
        if (!a->fn) a->fn = kvl_cuda_pick_f16(p->D, G, p->P, kvl_cuda_core_variant(a->tun.variant));
        break;
    case KVL_CUDA_CODEC_INT8: /* as f16 (attn_b8_tc.cu) */
        if (a->tun.variant == KVL_CUDA_TC_VARIANT || a->tun.variant == 8) a->fn = kvl_cuda_pick_int8_tc(p->D, G, p->P), a->tc = a->fn != NULL;
        if (!a->fn) a->fn = kvl_cuda_pick_int8(p->D, G, p->P, kvl_cuda_core_variant(a->tun.variant));
        break;
    case KVL_CUDA_CODEC_FP8: /* as f16 (attn_b8_tc.cu) */
        if (a->tun.variant == KVL_CUDA_TC_VARIANT || a->tun.variant == 8) a->fn = kvl_cuda_pick_fp8_tc(p->D, G, p->P), a->tc = a->fn != NULL;
        if (!a->fn) a->fn = kvl_cuda_pick_fp8(p->D, G, p->P, kvl_cuda_core_variant(a->tun.variant));
        break;
    case KVL_CUDA_CODEC_INT4Z:
        /* 0: tensor cores (attn_int4z_tc.cu) where they take the shape, else
         * the CUDA-core kernel with tensor-core key scores; 1: CUDA-core key
         * scores; 2: tensor-core key scores (the default before) */
        if (a->tun.variant == 0) a->fn = kvl_cuda_pick_int4z_tc(p->D, G, p->P), a->tc = a->fn != NULL;
        if (!a->fn && a->tun.variant <= 2)
            a->fn = kvl_cuda_pick_int4z(p->D, G, p->P, a->tun.variant == 1 ? 1 : 0);
        break;
    case KVL_CUDA_CODEC_KIVI4Z: a->fn = kvl_cuda_pick_kivi4z(p->D, G, p->P, a->tun.variant); break;
    case KVL_CUDA_CODEC_KIVI2Z:
        /* 0: tensor cores (attn_kivi2z_tc.cu) where they take the shape; 1 (and
         * the fallback of 0): the CUDA-core kernel */
        if (a->tun.variant == 0) a->fn = kvl_cuda_pick_kivi2z_tc(p->D, G, p->P), a->tc = a->fn != NULL;
        if (!a->fn && a->tun.variant <= 1) a->fn = kvl_cuda_pick_kivi2z(p->D, G, p->P, 0);
        break;
    }
    /* default cap: 2048 tokens; 4096 for the tensor-core kernels, so a
     * one-wave plan can round its splits up to whole steps (65 -> 68 pages at
     * 32K + a few tokens, batch 1) and 16 x 4K needs one split, not two */
    a->nw = a->tc ? kvl_cuda_tc_warps(p->codec) : NWARPS;
    if (a->tun.max_chunk_tokens <= 0) a->tun.max_chunk_tokens = a->tc ? 4096 : 2048;
    if (a->tun.max_chunk_tokens < p->P) a->tun.max_chunk_tokens = p->P;
    if (a->tun.min_chunk_tokens > a->tun.max_chunk_tokens) a->tun.min_chunk_tokens = a->tun.max_chunk_tokens;
    if (!a->fn) {
        free(a);
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda attn: no kernel variant %d for D %d, G %d",
                           tuning ? tuning->variant : 0, p->D, G);
    }
    {
        const int qp = tile_quantum(a), cpm = a->tun.max_chunk_tokens / p->P;
        a->smem_max = smem_bytes(a, (cpm + qp - 1) / qp * qp, NULL); /* the plan rounds up to qp */
    }
    kvl_status s = KVL_OK;
    cudaError_t e = cudaFuncSetAttribute(a->fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)a->smem_max);
    if (e == cudaSuccess && a->tun.target_blocks <= 0) {
        int per_sm = 0;
        e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, a->fn, 32 * a->nw, a->smem_max);
        a->tun.target_blocks = (per_sm > 0 ? per_sm : 1) * p->n_sm;
    }
    if (e != cudaSuccess) {
        s = kvl_cuda_status(e, "cuda attn: kernel attributes", err);
        free(a);
        return s;
    }
    /* partial capacity: the largest n_seq * n_split over every call the
     * workspace allows (n_split <= max(want, 4 pages / cp_max), <= pages / cp_min) */
    const int P = p->P, pages = (max_len + P - 1) / P;
    const int cp_min = (a->tun.min_chunk_tokens + P - 1) / P, cp_max = a->tun.max_chunk_tokens / P;
    size_t cap = 0;
    for (int ns = 1; ns <= max_seq; ns++) {
        const long lists = (long)ns * n_head_kv, want = a->tun.target_blocks >= lists ? a->tun.target_blocks / lists : 1;
        long ns_split = 4L * ((pages + cp_max - 1) / cp_max); /* x4: the wave fit of the plan */
        if (want > ns_split) ns_split = want;
        const long by_min = (pages + cp_min - 1) / cp_min;
        if (ns_split > by_min) ns_split = by_min;
        if (ns_split > 1 && (size_t)ns * ns_split > cap) cap = (size_t)ns * ns_split;
    }
    a->part_floats = cap * n_head * (2 + (size_t)p->D);
    if (a->part_floats) {
        e = cudaMalloc(&a->part, a->part_floats * sizeof(float));
        if (e != cudaSuccess) {
            s = kvl_cuda_status(e, "cuda attn: partial buffer", err);
            free(a);
            return s;
        }
    }
    *out = a;
    return KVL_OK;
}

extern "C" void kvl_cuda_attn_free(kvl_cuda_attn *a) {
    if (!a) return;
    kvl_cuda_stats_ws_free(a->st);
    cudaFree(a->part);
    free(a);
}

/* Statistics: the ST instantiation of the kernel a->fn is (attn_stats*.cu). */
extern "C" kvl_status kvl_cuda_attn_enable_stats(kvl_cuda_attn *a, kvl_err *err) {
    if (a->st) return KVL_OK;
    const kvl_cuda_pool *p = a->pool;
    if (p->sealed_cls >= 0)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED,
                           "cuda attn stats: sealing codecs (kivi4z, kivi2z) have no statistics kernels");
    if (a->tun.variant != 0 && !(a->tun.variant == 8 && a->tc))
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda attn stats: only the default kernels (variant %d asked)",
                           a->tun.variant);
    kvl_cuda_split_fn fn = NULL;
    if (a->tc)
        fn = p->codec == KVL_CUDA_CODEC_INT8 || p->codec == KVL_CUDA_CODEC_FP8
                 ? kvl_cuda_pick_stats_tc_b8(p->codec, p->D, a->G, p->P)
                 : kvl_cuda_pick_stats_tc_f16(p->codec, p->D, a->G, p->P);
    else
        fn = kvl_cuda_pick_stats_core(p->codec, p->D, a->G);
    if (!fn)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda attn stats: no statistics kernel for D %d, G %d, P %d",
                           p->D, a->G, p->P);
    size_t ml_cap = a->part_floats / (2 + (size_t)p->D); /* records of the largest split plan */
    if (ml_cap < (size_t)a->max_seq * a->n_head) ml_cap = (size_t)a->max_seq * a->n_head; /* one split */
    return kvl_cuda_stats_ws_create(fn, a->smem_max, a->n_head, a->max_seq, a->max_len, ml_cap, &a->st, err);
}

extern "C" size_t kvl_cuda_attn_stats_bytes(const kvl_cuda_attn *a) { return a->st ? a->st->bytes : 0; }

extern "C" kvl_status kvl_cuda_attn_run(kvl_cuda_attn *a, const kvl_cuda_attn_args *x, void *stream,
                                        kvl_err *err) {
    return kvl_cuda_attn_run_stats(a, x, NULL, stream, err);
}

/* sx NULL: the default kernels; else their statistics instantiations and
 * attn_stats.cu's kernels after the merge */
extern "C" kvl_status kvl_cuda_attn_run_stats(kvl_cuda_attn *a, const kvl_cuda_attn_args *x,
                                              const kvl_cuda_attn_stats *sx, void *stream, kvl_err *err) {
    if (x->n_seq <= 0 || x->n_seq > a->max_seq || x->max_len < 0 || x->max_len > a->max_len)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda attn: n_seq %d / max_len %d outside the workspace (%d, %d)",
                           x->n_seq, x->max_len, a->max_seq, a->max_len);
    const kvl_cuda_pool *p = a->pool;
    int cp, ns, slots;
    kvl_cuda_attn_plan(a, x->n_seq, x->max_len, &cp, &ns);
    const size_t need = ns > 1 ? (size_t)x->n_seq * ns * a->n_head * (2 + (size_t)p->D) : 0;
    if (need > a->part_floats)
        return kvl_err_set(err, KVL_ERR_INTERNAL, "cuda attn: plan needs %zu partial floats, have %zu", need,
                           a->part_floats);
    if (ns > 1 && (size_t)ns * sizeof(float) > 40960)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda attn: %d splits exceed the merge kernel's shared memory", ns);
    if (sx && !a->st)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda attn: statistics asked before kvl_cuda_attn_enable_stats");
    if (sx && (size_t)x->n_seq * ns * a->n_head > a->st->ml_cap)
        return kvl_err_set(err, KVL_ERR_INTERNAL, "cuda attn stats: plan needs %zu (m, l) records, have %zu",
                           (size_t)x->n_seq * ns * a->n_head, a->st->ml_cap);
    const size_t smem = smem_bytes(a, cp, &slots);
    cudaStream_t st = (cudaStream_t)stream;
    const dim3 grid((unsigned)ns, (unsigned)a->n_head_kv, (unsigned)x->n_seq);
    const kvl_cuda_class *main = &p->cls[p->sealed_cls >= 0 ? p->sealed_cls : 0], *open = &p->cls[0];
    kvl_cuda_kargs ka;
    ka.space = p->space;
    ka.koff = (int)main->koff, ka.voff = (int)main->voff;
    ka.okoff = (int)open->koff, ka.ovoff = (int)open->voff;
    ka.sealed_cls = p->sealed_cls;
    ka.P = p->P, ka.logP = p->logP;
    ka.page_ids = x->page_ids, ka.list_off = x->list_off, ka.list_len = x->list_len, ka.qpos = x->qpos;
    ka.q = x->q, ka.scale = x->scale;
    ka.n_head_kv = a->n_head_kv, ka.chunk_pages = cp, ka.n_split = ns, ka.pid_slots = slots;
    ka.out = x->out, ka.part = a->part;
    ka.sc = sx ? a->st->sc : NULL, ka.ml = sx ? a->st->ml : NULL, ka.sc_stride = sx ? a->st->max_len : 0;
    (sx ? a->st->fn : a->fn)<<<grid, 32 * a->nw, smem, st>>>(ka);
    KVL_CUDA_TRY(cudaGetLastError(), "cuda attn: split kernel launch");
    if (ns > 1 && !a->tun.skip_merge) {
        /* programmatic dependent launch: the merge grid is scheduled as the
         * split kernel's blocks exit and waits for its results in-kernel */
        cudaLaunchConfig_t lc = {};
        cudaLaunchAttribute at[1];
        at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[0].val.programmaticStreamSerializationAllowed = 1;
        lc.gridDim = dim3((unsigned)(x->n_seq * a->n_head), (unsigned)((p->D + 31) / 32));
        lc.blockDim = dim3(MERGE_THREADS);
        lc.dynamicSmemBytes = sizeof(float) * (size_t)ns;
        lc.stream = st;
        lc.attrs = at;
        lc.numAttrs = 1;
        KVL_CUDA_TRY(cudaLaunchKernelEx(&lc, merge_kernel, (const float *)a->part, ns, p->D, x->out),
                     "cuda attn: merge kernel launch");
    }
    if (sx) return kvl_cuda_stats_launch(a->st, sx, x->n_seq, a->n_head, a->n_head_kv, ns, x->max_len, x->list_len, st, err);
    return KVL_OK;
}
