/* The decode forward pass on the device (kvl_cuda_lm, kvl_cuda.h): weights
 * uploaded once (fused Q|K|V and gate|up matrices), a device KV pool whose
 * lists have a fixed page range per (slot, layer, kv-head), and one forward
 * call = the per-layer structure of src/engine/forward.c on device kernels:
 *   x = embed(tok); per layer: xb = rmsnorm(x); qkv = Wqkv xb;
 *   rope + quantize-on-append of k, v into pages; att = paged attention(q);
 *   x += Wo att; xb = rmsnorm(x); gu = Wgu xb; x += Wdown swiglu(gu);
 *   then logits = Wout rmsnorm(x) and greedy argmax, all on one stream.
 * Matrices in Q8_0 / Q4_0 / Q4_1 blocks take their input as 8-bit
 * activation blocks (quantized by the RMSNorm / SwiGLU kernels that make
 * it, or by its own kernel for the attention output; optionally the
 * gate|up matvec does SwiGLU and quantizes h in its epilogue), unless the
 * config asks for the exact path (f32 activations everywhere).
 * Launches: every matvec, RMSNorm, SwiGLU and the KV append is a
 * programmatic dependent launch (launched while the kernel before it runs,
 * waiting for it before its first read), and each matvec's last wave
 * prefetches the next matrix's first rows into L2 (kvl_cuda_lm_set_launch,
 * kvl_cuda_lm_set_prefetch). The token choice is greedy argmax or a draw
 * (kvl_cuda_lm_set_sampling), after the repetition penalty if set.
 * Everything a call needs is allocated at create; a call uploads one small
 * metadata block (tokens, positions, list offsets) and downloads the greedy
 * tokens (and logits if asked). Optionally the call's kernels are captured
 * in a CUDA graph (updated in place while its shape is unchanged). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_fp16.h>

#include "cuda/cuda_util.cuh"
#include "cuda/kvl_cuda_prefill.h"
#include "cuda/lm_ops.h"
#include "cuda/page_space.cuh"
#include "cuda/attn_stats.cuh" /* KVL_STATS_CHUNK */

/* L2 prefetch of the next matrix per matvec (kvl_cuda_lm_set_prefetch):
 * 4 MB measured best on the H200 (8B step at 32K: 4.373 ms against 4.465
 * without, 4.401 at 8 MB, 4.494 at 16 MB, worse above) */
#ifndef KVL_CUDA_PF_DEFAULT
#define KVL_CUDA_PF_DEFAULT ((size_t)4 << 20)
#endif
/* Calls of at least this many entries run the quantized matrices through
 * the tensor-core GEMM (kvl_cuda_lm_set_gemm). From bench_lm --gemm on the
 * H200 (2026-12-03), the 8B layer's four matrices: n = 8 matvec 0.45-0.73x
 * of the GEMM's time, n = 16 299 us GEMM vs 321 matvec (break-even), n = 32
 * GEMM 1.7-2.9x faster */
#ifndef KVL_CUDA_GEMM_MIN_N
#define KVL_CUDA_GEMM_MIN_N 16
#endif

extern "C" {
#include "cpu/quant.h"
}

typedef struct lm_layer {
    float *attn_norm, *ffn_norm;
    kvl_cuda_wmat qkv, wo, gu, down;
} lm_layer;

struct kvl_cuda_lm {
    int L, E, H, Hkv, hd, F, V, neox;
    float eps;
    int P, ppl, n_slots, n_ctx, max_batch;
    kvl_cuda_wmat emb, out;
    int out_shared; /* out is emb */
    lm_layer *layers;
    float *out_norm, *freq;
    kvl_cuda_pool *pool;
    kvl_cuda_attn *attn;
    /* prefill attention (attn_prefill.cu; the pf_* functions): NULL for codecs without it */
    kvl_cuda_prefill *pf;
    int pf_mode, pf_tiles_n, pf_used;  /* kvl_cuda_lm_set_prefill; this call's tiles (0: decode kernel) */
    int32_t *pf_tiles_h, *pf_tiles_d; /* [max_batch][2] tile table (pinned host, device) */
    uint32_t *page_ids; /* device: list offsets index it; open ids (iota), sealed pages' ids once sealed */
    int seal;           /* sealing codec (kivi2z, kivi4z): the call ends with the seal kernel */
    int res_pages, seal_mse, defer_seal; /* kvl_cuda_lm_config seal_residual / seal_fit; kvl_cuda_lm_defer_seal */
    int *slot_len, *slot_sealed;         /* host [n_slots]: tokens written, list pages sealed (all lists alike) */
    float *x, *xb, *qkv, *q, *att, *gu, *h, *logits, *cs;
    int q8;       /* 8-bit activations for quantized matrices (not exact_matmul) */
    int8_t *xq;   /* [max_batch][max(E, H hd, F)] activation codes */
    float *xds;   /* [max_batch][max(E, H hd, F) / 32][2] their (d, sum) */
    int32_t *meta_d, *meta_h, *amax_d, *amax_h;
    size_t meta_n;
    int8_t *hq;      /* q8 and fuse_sw: [max_batch][F] SwiGLU output's codes (xq is the fused kernel's input) */
    float *hds;      /* [max_batch][F/32][2] */
    unsigned *sw_cnt; /* [F/32] arrival counters of the fused gate|up + SwiGLU (zero between launches) */
    int fuse_sw;     /* kvl_cuda_lm_set_fused_swiglu (default 0) */
    int norm_regs, chain;                 /* kvl_cuda_lm_set_launch: register RMSNorm, PDL for the small kernels */
    size_t pf_bytes;                      /* kvl_cuda_lm_set_prefetch: next matrix's bytes into L2 per matvec */
    int pf_blocks;                        /* blocks of a matvec's last wave that issue the prefetch */
    int pf_wo;                            /* also wo's rows from the qkv matvec (across the attention) */
    kvl_cuda_gemv_opts gopt;              /* kvl_cuda_lm_set_gemv: launch options of the integer matvecs */
    int gemm_min_n;                       /* kvl_cuda_lm_set_gemm: entries from which the GEMM runs (<= 0: never) */
    unsigned abl_skip, abl_dup;           /* kvl_cuda_lm_set_ablate: stages left out / launched twice */
    kvl_cuda_sample_params samp; /* kvl_cuda_lm_set_sampling; samp_ctr NULL: greedy */
    uint64_t samp_seed, *samp_ctr; /* [max_batch] draws per entry index */
    float pen;                     /* kvl_cuda_lm_set_penalty: 1 = off */
    int pen_max;                   /* window capacity */
    int32_t *hist_d, *hist_h;      /* [1 + pen_max]: count, then the window's ids (pinned host, device) */
    cudaStream_t st;
    size_t wbytes;
    int graphs;
    cudaGraphExec_t gexec;
    int g_n, g_cp, g_ns, g_f; /* the shape the graph was captured for (entries, attention plan, out_from) */
    int logits_tail; /* kvl_cuda_lm_set_logits_tail */
    int out_from;    /* this call's first entry with output rows (logits, token): 0, or the tail's first */
    uint64_t seed;
    int n_mats;
    /* per-stage timing (kvl_cuda_lm_set_profile) */
    int prof;
    cudaEvent_t *ev;
    int *ev_stage, n_ev, max_ev, prof_calls;
    double prof_ms[KVL_CUDA_PROF_N];
    /* eviction (lm_evict.cuh): NULL = list row == position (no policy) */
    struct lm_evict *evict;
    int g_sc; /* with statistics: the graph's statistics row blocks (their grid follows max_len) */
};
struct lm_evict;
static void ev_free(kvl_cuda_lm *lm);
static kvl_status ev_meta(kvl_cuda_lm *lm, int n, const int32_t *pos, const int32_t *slot, int *max_len, kvl_err *err);
static void ev_commit(kvl_cuda_lm *lm, int n, const int32_t *slot);
static int ev_stats_on(const kvl_cuda_lm *lm);
static kvl_status ev_attn(kvl_cuda_lm *lm, int l, int i0, const kvl_cuda_attn_args *at, kvl_err *err);
static const int32_t *ev_layer_len(const kvl_cuda_lm *lm, const int32_t *meta_d, int n, int l);
static const int32_t *ev_layer_row(const kvl_cuda_lm *lm, const int32_t *meta_d, int n, int l);
static size_t ev_meta_ints(const kvl_cuda_lm *lm, int n);

/* prefill attention (the pf_* functions below enqueue) */
#define LM_ATTN_SEQ 32  /* entries per decode-kernel launch (its workspace) */
#define LM_PF_MIN_AVG 4 /* average entries per tile for the prefill kernel */
static kvl_status pf_create(kvl_cuda_lm *lm, kvl_err *err);
static void pf_free(kvl_cuda_lm *lm);

static kvl_status dalloc(void **p, size_t bytes, kvl_err *err) {
    *p = NULL;
    KVL_CUDA_TRY(cudaMalloc(p, bytes ? bytes : 1), "cuda lm: cudaMalloc");
    return KVL_OK;
}

static kvl_status upload_vec(float **d, const float *h, int n, kvl_err *err) {
    kvl_status s = dalloc((void **)d, sizeof(float) * n, err);
    if (s) return s;
    if (h) {
        KVL_CUDA_TRY(cudaMemcpy(*d, h, sizeof(float) * n, cudaMemcpyHostToDevice), "cuda lm: upload");
    } else { /* random-weight shapes: unit norm weights */
        float *ones = (float *)malloc(sizeof(float) * n);
        if (!ones) return kvl_err_set(err, KVL_ERR_NOMEM, "cuda lm: out of memory");
        for (int i = 0; i < n; i++) ones[i] = 1.0f;
        cudaError_t e = cudaMemcpy(*d, ones, sizeof(float) * n, cudaMemcpyHostToDevice);
        free(ones);
        KVL_CUDA_TRY(e, "cuda lm: upload");
    }
    return KVL_OK;
}

static int native_fmt(int t, kvl_cuda_wfmt *f) {
    switch (t) {
    case KVL_TYPE_F16: *f = KVL_CUDA_WF_F16; return 1;
    case KVL_TYPE_Q8_0: *f = KVL_CUDA_WF_Q8_0; return 1;
    case KVL_TYPE_Q4_0: *f = KVL_CUDA_WF_Q4_0; return 1;
    case KVL_TYPE_Q4_1: *f = KVL_CUDA_WF_Q4_1; return 1;
    default: return 0;
    }
}

/* Upload tensors t[0..n) (same cols) as one matrix of their concatenated rows. */
static kvl_status upload_mat(kvl_cuda_lm *lm, const kvl_cuda_tensor *t, int n, int mode, kvl_cuda_wmat *w,
                             kvl_err *err) {
    memset(w, 0, sizeof *w);
    const int64_t cols = t[0].cols;
    int64_t rows = 0;
    int same = 1, rnd = t[0].data == NULL;
    for (int i = 0; i < n; i++) {
        if (t[i].cols != cols || t[i].rows < 1)
            return kvl_err_set(err, KVL_ERR_ARG, "cuda lm: fused weights of unequal widths");
        if (t[i].type != t[0].type) same = 0;
        if ((t[i].data == NULL) != rnd) return kvl_err_set(err, KVL_ERR_ARG, "cuda lm: mixed random weights");
        rows += t[i].rows;
    }
    if (cols % 32)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda: weight width %lld is not a multiple of 32",
                           (long long)cols);
    kvl_cuda_wfmt f = KVL_CUDA_WF_F16;
    if (mode == KVL_CUDA_W_NATIVE && same && !native_fmt(t[0].type, &f)) f = KVL_CUDA_WF_F16;
    if (!rnd) {
        for (int i = 0; i < n; i++)
            if (!kvl_type_supported(t[i].type))
                return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda: weight type %d not supported", t[i].type);
    } else if (!native_fmt(t[0].type, &f)) {
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda: random weights of type %d (have f16, q8_0, q4_0, q4_1)",
                           t[0].type);
    }
    w->fmt = f, w->rows = rows, w->cols = cols;
    const size_t qb = kvl_cuda_wmat_qbytes(f, rows, cols), sb = kvl_cuda_wmat_sbytes(f, rows, cols);
    kvl_status s = dalloc(&w->q, qb, err);
    if (!s && sb) s = dalloc(&w->s, sb, err);
    if (s) return s;
    lm->wbytes += qb + sb;
    if (rnd) return kvl_cuda_wmat_fill_random(w, lm->seed + 7919u * (uint64_t)(++lm->n_mats), 0.02f, lm->st, err);
    void *hq = malloc(qb), *hs = sb ? malloc(sb) : NULL;
    float *row = (float *)malloc(sizeof(float) * cols);
    if (!hq || (sb && !hs) || !row) {
        free(hq), free(hs), free(row);
        return kvl_err_set(err, KVL_ERR_NOMEM, "cuda lm: out of host memory for weight staging");
    }
    int64_t r0 = 0;
    for (int i = 0; i < n; i++) {
        kvl_cuda_wfmt tf;
        if (native_fmt(t[i].type, &tf) && tf == f) {
            kvl_cuda_wmat_repack(t[i].type, t[i].data, t[i].rows, cols, r0, rows, hq, hs);
        } else { /* to f16 */
            const size_t rb = kvl_type_row_bytes(t[i].type, cols);
            for (int64_t r = 0; r < t[i].rows; r++) {
                kvl_dequant_row_ref((kvl_type)t[i].type, (const char *)t[i].data + r * rb, row, cols);
                __half *d = (__half *)hq + (size_t)(r0 + r) * cols;
                for (int64_t j = 0; j < cols; j++) d[j] = __float2half_rn(row[j]);
            }
        }
        r0 += t[i].rows;
    }
    cudaError_t e = cudaMemcpy(w->q, hq, qb, cudaMemcpyHostToDevice);
    if (e == cudaSuccess && sb) e = cudaMemcpy(w->s, hs, sb, cudaMemcpyHostToDevice);
    free(hq), free(hs), free(row);
    KVL_CUDA_TRY(e, "cuda lm: weight upload");
    return KVL_OK;
}

static void free_mat(kvl_cuda_wmat *w) {
    if (w->q) cudaFree(w->q);
    if (w->s) cudaFree(w->s);
    w->q = w->s = NULL;
}

extern "C" void kvl_cuda_lm_free(kvl_cuda_lm *lm) {
    if (!lm) return;
    if (lm->st) cudaStreamSynchronize(lm->st);
    if (lm->gexec) cudaGraphExecDestroy(lm->gexec);
    if (lm->layers)
        for (int l = 0; l < lm->L; l++) {
            lm_layer *y = &lm->layers[l];
            if (y->attn_norm) cudaFree(y->attn_norm);
            if (y->ffn_norm) cudaFree(y->ffn_norm);
            free_mat(&y->qkv), free_mat(&y->wo), free_mat(&y->gu), free_mat(&y->down);
        }
    free(lm->layers);
    if (!lm->out_shared) free_mat(&lm->out);
    free_mat(&lm->emb);
    void *bufs[] = {lm->out_norm, lm->freq, lm->page_ids, lm->x, lm->xb, lm->qkv, lm->q, lm->att,
                    lm->gu, lm->h, lm->logits, lm->cs, lm->meta_d, lm->amax_d, lm->xq, lm->xds, lm->samp_ctr, lm->hq, lm->hds, lm->sw_cnt};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) cudaFree(bufs[i]);
    if (lm->meta_h) cudaFreeHost(lm->meta_h);
    if (lm->hist_h) cudaFreeHost(lm->hist_h);
    if (lm->hist_d) cudaFree(lm->hist_d);
    if (lm->amax_h) cudaFreeHost(lm->amax_h);
    kvl_cuda_attn_free(lm->attn);
    pf_free(lm);
    ev_free(lm);
    kvl_cuda_pool_free(lm->pool);
    if (lm->st) cudaStreamDestroy(lm->st);
    for (int i = 0; i < lm->max_ev; i++) cudaEventDestroy(lm->ev[i]);
    free(lm->ev), free(lm->ev_stage);
    free(lm->slot_len), free(lm->slot_sealed);
    free(lm);
}

__global__ void iota_k(uint32_t *a, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        a[i] = (uint32_t)i;
}

/* page table of slot's n_lists lists (ppl entries each, from list base0):
 * entries [k0, k1) of every list become the open (sealed = 0) or sealed
 * (class 1) ids of their index */
__global__ void set_ids_k(uint32_t *ids, int64_t base0, int n_lists, int ppl, int k0, int k1, int sealed) {
    const int nk = k1 - k0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (int64_t)n_lists * nk;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t idx = base0 + (i / nk) * ppl + k0 + i % nk;
        ids[idx] = (uint32_t)idx | (sealed ? 1u << KVL_CUDA_CLASS_SHIFT : 0u);
    }
}
static kvl_status set_ids(kvl_cuda_lm *lm, int slot, int k0, int k1, int sealed, kvl_err *err) {
    if (k1 <= k0) return KVL_OK;
    const int n_lists = lm->L * lm->Hkv;
    set_ids_k<<<256, 256, 0, lm->st>>>(lm->page_ids, (int64_t)slot * n_lists * lm->ppl, n_lists, lm->ppl, k0, k1,
                                       sealed);
    KVL_CUDA_TRY(cudaGetLastError(), "cuda lm: page table");
    return KVL_OK;
}

static kvl_status create(kvl_cuda_lm *lm, const kvl_cuda_model_desc *m, const kvl_cuda_lm_config *c, kvl_err *err) {
    lm->L = m->n_layer, lm->E = m->n_embd, lm->H = m->n_head, lm->Hkv = m->n_head_kv, lm->hd = m->head_dim;
    lm->F = m->n_ff, lm->V = m->n_vocab, lm->neox = m->rope_neox, lm->eps = m->norm_eps;
    lm->P = c->page_tokens, lm->n_slots = c->n_slots, lm->n_ctx = c->n_ctx, lm->max_batch = c->max_batch;
    lm->seed = c->seed;
    lm->q8 = !c->exact_matmul;
    if (lm->L < 1 || lm->E < 32 || lm->H < 1 || lm->Hkv < 1 || lm->H % lm->Hkv || lm->F < 32 || lm->V < 1 ||
        lm->n_slots < 1 || lm->n_ctx < 1 || lm->max_batch < 1 || !m->layers || !m->rope_freq)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda lm: invalid model or config");
    if (lm->hd != 64 && lm->hd != 128)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda: head_dim %d has no kernel (have: 64, 128)", lm->hd);
    if (lm->H / lm->Hkv > 8)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda: %d query heads per kv-head (kernels: 1..8)",
                           lm->H / lm->Hkv);
    const char *codec = c->codec ? c->codec : "f16";
    if (!kvl_cuda_kv_append_supported(codec))
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED,
                           "cuda: KV codec '%s' has no device append kernel yet (have: f16, int8, fp8, int4z, kivi2z, "
                           "kivi4z)", codec);
    lm->seal = !strcmp(codec, "kivi2z") || !strcmp(codec, "kivi4z");
    if (c->seal_residual < 0 || c->seal_residual % lm->P || c->seal_fit < 0 || c->seal_fit > 2)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda lm: seal residual %d (page %d), fit %d", c->seal_residual, lm->P,
                           c->seal_fit);
    lm->res_pages = c->seal_residual ? c->seal_residual / lm->P - 1 : 0;
    lm->seal_mse = c->seal_fit == 2 || (c->seal_fit == 0 && !strcmp(codec, "kivi2z"));
    lm->slot_len = (int *)calloc((size_t)lm->n_slots, sizeof(int));
    lm->slot_sealed = (int *)calloc((size_t)lm->n_slots, sizeof(int));
    if (!lm->slot_len || !lm->slot_sealed) return kvl_err_set(err, KVL_ERR_NOMEM, "cuda lm: out of memory");
    KVL_CUDA_TRY(cudaStreamCreateWithFlags(&lm->st, cudaStreamNonBlocking), "cuda lm: stream");
    /* rows per list: n_ctx, or fewer with eviction (kvl_cuda_lm_config list_tokens) */
    if (c->list_tokens < 0) return kvl_err_set(err, KVL_ERR_ARG, "cuda lm: list_tokens %d", c->list_tokens);
    const int rows = c->list_tokens > 0 && c->list_tokens < lm->n_ctx ? c->list_tokens : lm->n_ctx;
    lm->ppl = (rows + lm->P - 1) / lm->P;
    const int64_t n_pages = (int64_t)lm->n_slots * lm->L * lm->Hkv * lm->ppl;
    /* sealing: every open page has its sealed page of the same index (no page allocation in the step) */
    kvl_cuda_pool_config pc = {codec, NULL, lm->hd, lm->P, n_pages, lm->seal ? n_pages : 0};
    kvl_status s = kvl_cuda_pool_create(&pc, &lm->pool, err);
    if (s) return s;
    /* the decode kernel's workspace: at most LM_ATTN_SEQ entries per launch (attend() cuts larger calls) */
    if ((s = kvl_cuda_attn_create(lm->pool, lm->H, lm->Hkv, lm->max_batch < LM_ATTN_SEQ ? lm->max_batch : LM_ATTN_SEQ,
                                  lm->n_ctx, NULL, &lm->attn, err)))
        return s;
    if ((s = pf_create(lm, err))) return s;
    if ((s = dalloc((void **)&lm->page_ids, sizeof(uint32_t) * n_pages, err))) return s;
    iota_k<<<1024, 256, 0, lm->st>>>(lm->page_ids, n_pages);
    KVL_CUDA_TRY(cudaGetLastError(), "cuda lm: iota");

    /* weights */
    const int mode = c->weights;
    if ((s = upload_mat(lm, &m->tok_embd, 1, mode, &lm->emb, err))) return s;
    if (m->output.data && m->output.data == m->tok_embd.data && m->output.type == m->tok_embd.type) {
        lm->out = lm->emb, lm->out_shared = 1;
    } else if ((s = upload_mat(lm, &m->output, 1, mode, &lm->out, err))) {
        return s;
    }
    if (lm->emb.cols != lm->E || lm->emb.rows != lm->V || lm->out.cols != lm->E || lm->out.rows != lm->V)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda lm: embedding / output shape mismatch");
    if ((s = upload_vec(&lm->out_norm, m->out_norm, lm->E, err))) return s;
    if ((s = upload_vec(&lm->freq, m->rope_freq, lm->hd / 2, err))) return s;
    lm->layers = (lm_layer *)calloc((size_t)lm->L, sizeof *lm->layers);
    if (!lm->layers) return kvl_err_set(err, KVL_ERR_NOMEM, "cuda lm: out of memory");
    for (int l = 0; l < lm->L; l++) {
        const kvl_cuda_layer_desc *d = &m->layers[l];
        lm_layer *y = &lm->layers[l];
        const kvl_cuda_tensor qkv[3] = {d->wq, d->wk, d->wv}, gu[2] = {d->w_gate, d->w_up};
        if (d->wq.rows != (int64_t)lm->H * lm->hd || d->wk.rows != (int64_t)lm->Hkv * lm->hd ||
            d->wv.rows != (int64_t)lm->Hkv * lm->hd || d->wo.rows != lm->E || d->w_gate.rows != lm->F ||
            d->w_up.rows != lm->F || d->w_down.rows != lm->E || d->w_down.cols != lm->F || d->wq.cols != lm->E ||
            d->wo.cols != (int64_t)lm->H * lm->hd)
            return kvl_err_set(err, KVL_ERR_ARG, "cuda lm: layer %d weight shapes do not match the model", l);
        if ((s = upload_vec(&y->attn_norm, d->attn_norm, lm->E, err)) ||
            (s = upload_vec(&y->ffn_norm, d->ffn_norm, lm->E, err)) ||
            (s = upload_mat(lm, qkv, 3, mode, &y->qkv, err)) || (s = upload_mat(lm, &d->wo, 1, mode, &y->wo, err)) ||
            (s = upload_mat(lm, gu, 2, mode, &y->gu, err)) || (s = upload_mat(lm, &d->w_down, 1, mode, &y->down, err)))
            return s;
    }

    /* step buffers */
    const size_t B = (size_t)lm->max_batch, E = lm->E, HD = (size_t)lm->H * lm->hd, KV = (size_t)lm->Hkv * lm->hd;
    const size_t wide = HD > E ? HD : E;
    if ((s = dalloc((void **)&lm->x, sizeof(float) * B * E, err)) ||
        (s = dalloc((void **)&lm->xb, sizeof(float) * B * wide, err)) ||
        (s = dalloc((void **)&lm->qkv, sizeof(float) * B * (HD + 2 * KV), err)) ||
        (s = dalloc((void **)&lm->q, sizeof(float) * B * HD, err)) ||
        (s = dalloc((void **)&lm->att, sizeof(float) * B * HD, err)) ||
        (s = dalloc((void **)&lm->gu, sizeof(float) * B * 2 * lm->F, err)) ||
        (s = dalloc((void **)&lm->h, sizeof(float) * B * lm->F, err)) ||
        (s = dalloc((void **)&lm->logits, sizeof(float) * B * lm->V, err)) ||
        (s = dalloc((void **)&lm->cs, sizeof(float) * B * lm->hd, err)) ||
        (s = dalloc((void **)&lm->amax_d, sizeof(int32_t) * B, err)))
        return s;
    if (lm->q8) {
        const size_t widest = wide > (size_t)lm->F ? wide : (size_t)lm->F;
        if ((s = dalloc((void **)&lm->xq, B * widest, err)) ||
            (s = dalloc((void **)&lm->xds, sizeof(float) * 2 * B * (widest / 32), err)) ||
            (s = dalloc((void **)&lm->hq, B * lm->F, err)) ||
            (s = dalloc((void **)&lm->hds, sizeof(float) * 2 * B * (lm->F / 32), err)) ||
            (s = dalloc((void **)&lm->sw_cnt, sizeof(unsigned) * (lm->F / 32), err)))
            return s;
        KVL_CUDA_TRY(cudaMemsetAsync(lm->sw_cnt, 0, sizeof(unsigned) * (lm->F / 32), lm->st), "cuda lm: counters");
        lm->fuse_sw = 0; /* measured slower (kvl_cuda_lm_set_fused_swiglu) */
        lm->norm_regs = 1, lm->chain = 1;
    }
    lm->gopt = kvl_cuda_gemv_opts_default();
    lm->gemm_min_n = KVL_CUDA_GEMM_MIN_N;
    if (getenv("KVL_CUDA_GEMM_MIN_N")) lm->gemm_min_n = atoi(getenv("KVL_CUDA_GEMM_MIN_N")); /* benchmarks: 0 = off */
    lm->pen = 1.0f;
    {
        int dev = 0, n_sm = 0;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, dev);
        lm->pf_blocks = 2 * (n_sm > 0 ? n_sm : 1); /* about one wave of the matvec's blocks */
    }
    lm->pf_bytes = KVL_CUDA_PF_DEFAULT;
    lm->meta_n = 5 * B + B * lm->Hkv * (1 + (size_t)lm->L); /* tok, pos, slot, len, off, seal from / to */
    if ((s = dalloc((void **)&lm->meta_d, sizeof(int32_t) * lm->meta_n, err))) return s;
    KVL_CUDA_TRY(cudaMallocHost((void **)&lm->meta_h, sizeof(int32_t) * lm->meta_n), "cuda lm: pinned buffer");
    KVL_CUDA_TRY(cudaMallocHost((void **)&lm->amax_h, sizeof(int32_t) * B), "cuda lm: pinned buffer");
    KVL_CUDA_TRY(cudaStreamSynchronize(lm->st), "cuda lm: setup");
    return KVL_OK;
}

extern "C" kvl_status kvl_cuda_lm_create(const kvl_cuda_model_desc *m, const kvl_cuda_lm_config *cfg,
                                         kvl_cuda_lm **out, kvl_err *err) {
    *out = NULL;
    if (!m || !cfg) return kvl_err_set(err, KVL_ERR_ARG, "cuda lm: no model or config");
    kvl_cuda_lm *lm = (kvl_cuda_lm *)calloc(1, sizeof *lm);
    if (!lm) return kvl_err_set(err, KVL_ERR_NOMEM, "cuda lm: out of memory");
    kvl_status s = create(lm, m, cfg, err);
    if (s) {
        kvl_cuda_lm_free(lm);
        return s;
    }
    *out = lm;
    return KVL_OK;
}

extern "C" size_t kvl_cuda_lm_weight_bytes(const kvl_cuda_lm *lm) { return lm->wbytes; }
extern "C" size_t kvl_cuda_lm_step_weight_bytes(const kvl_cuda_lm *lm) {
    if (lm->out_shared) return lm->wbytes; /* the embedding matrix is the output matrix */
    return lm->wbytes - kvl_cuda_wmat_qbytes(lm->emb.fmt, lm->emb.rows, lm->emb.cols) -
           kvl_cuda_wmat_sbytes(lm->emb.fmt, lm->emb.rows, lm->emb.cols);
}
extern "C" size_t kvl_cuda_lm_kv_bytes(const kvl_cuda_lm *lm) {
    size_t b = 0;
    for (int c = 0; c < kvl_cuda_pool_n_classes(lm->pool); c++)
        b += kvl_cuda_pool_class_bytes(lm->pool, c) * (size_t)kvl_cuda_pool_class_pages(lm->pool, c);
    return b;
}
extern "C" double kvl_cuda_lm_kv_bytes_per_token(const kvl_cuda_lm *lm) { /* sealing: of a sealed page */
    const int c = lm->seal ? kvl_cuda_pool_sealed_class(lm->pool) : 0;
    return (double)kvl_cuda_pool_class_bytes(lm->pool, c) / lm->P * lm->L * lm->Hkv;
}
extern "C" void kvl_cuda_lm_set_fused_swiglu(kvl_cuda_lm *lm, int on) {
    lm->fuse_sw = on && lm->hq && lm->F % 32 == 0;
    lm->g_n = 0;
}

extern "C" void kvl_cuda_lm_set_launch(kvl_cuda_lm *lm, int norm_regs, int chain) {
    lm->norm_regs = norm_regs != 0, lm->chain = chain != 0;
    lm->g_n = 0;
}

extern "C" void kvl_cuda_lm_set_prefetch(kvl_cuda_lm *lm, size_t bytes, int wo) {
    lm->pf_bytes = bytes, lm->pf_wo = wo != 0;
    lm->g_n = 0;
}

extern "C" void kvl_cuda_lm_set_gemv(kvl_cuda_lm *lm, int variant, int pdl, int trigger) {
    lm->gopt.variant = variant, lm->gopt.pdl = pdl != 0, lm->gopt.trigger = trigger != 0;
    lm->g_n = 0;
}

extern "C" void kvl_cuda_lm_set_logits_tail(kvl_cuda_lm *lm, int on) {
    lm->logits_tail = on != 0;
    lm->g_n = 0;
}

extern "C" void kvl_cuda_lm_set_gemm(kvl_cuda_lm *lm, int min_n) {
    lm->gemm_min_n = min_n;
    lm->g_n = 0;
}

extern "C" void kvl_cuda_lm_set_ablate(kvl_cuda_lm *lm, unsigned skip, unsigned dup) {
    lm->abl_skip = skip, lm->abl_dup = dup;
    lm->g_n = 0;
}

extern "C" void kvl_cuda_lm_set_graphs(kvl_cuda_lm *lm, int on) {
    lm->graphs = on != 0;
    lm->g_n = 0; /* capture anew at the next call (launch settings may have changed) */
}

/* Profiling: an event after the stage that just ended (direct launches only). */
static void mark(kvl_cuda_lm *lm, int stage) {
    if (!lm->prof || lm->n_ev >= lm->max_ev) return;
    cudaEventRecord(lm->ev[lm->n_ev], lm->st);
    lm->ev_stage[lm->n_ev++] = stage;
}

/* y (=, +=) W x: on x's 8-bit blocks (in xq / xds) when W is quantized and
 * the lm runs the default numerics (the tensor-core GEMM for calls of >=
 * gemm_min_n entries, else the matvec), else on the f32 x. */
static kvl_status mv(kvl_cuda_lm *lm, const kvl_cuda_wmat *w, const float *x, int n, float *y, int acc, kvl_err *err,
                     const kvl_cuda_wmat *next = NULL) {
    if (lm->q8 && w->fmt != KVL_CUDA_WF_F16) {
        if (lm->gemm_min_n > 0 && n >= lm->gemm_min_n && kvl_cuda_gemm_q8_supported(w))
            return kvl_cuda_gemm_q8(w, lm->xq, lm->xds, n, y, acc, 0, lm->gopt.pdl, lm->st, err);
        kvl_cuda_gemv_opts o = lm->gopt;
        if (next && lm->pf_bytes && n == 1) { /* the first rows of the matrix after this one into L2 */
            const size_t qr = kvl_cuda_wmat_qbytes(next->fmt, 1, next->cols),
                         sr = kvl_cuda_wmat_sbytes(next->fmt, 1, next->cols);
            int64_t rows = (int64_t)(lm->pf_bytes / (qr + sr));
            if (rows > next->rows) rows = next->rows;
            o.pf = kvl_cuda_l2_prefetch{next->q, next->s, (size_t)rows * qr, (size_t)rows * sr, lm->pf_blocks};
        }
        return kvl_cuda_gemv_q8_ex(w, lm->xq, lm->xds, n, y, acc, &o, lm->st, err);
    }
    return kvl_cuda_gemv(w, x, n, y, acc, lm->st, err);
}

/* xb = rmsnorm(x) (and its 8-bit blocks when the lm uses them) */
static kvl_status norm(kvl_cuda_lm *lm, const float *w, int n, kvl_err *err) {
    if (lm->q8)
        return kvl_cuda_rmsnorm_q8_ex(lm->x, w, lm->xb, lm->xq, lm->xds, n, lm->E, lm->eps, lm->norm_regs,
                                      lm->norm_regs && lm->chain, lm->st, err);
    return kvl_cuda_rmsnorm(lm->x, w, lm->xb, n, lm->E, lm->eps, lm->st, err);
}

/* ---- prefill attention (attn_prefill.cu) ------------------------------------------------
 * A call whose entries come in runs of one slot (a prefill chunk) takes the
 * tiled prefill kernel: one pass over each list per tile of up to 128 / G
 * entries instead of one per entry. Chosen per call on the host from the
 * slots alone (pf_plan: tiles of >= 4 entries on average), so decode calls
 * (one entry per slot) keep the decode kernel and its CUDA graph. Prefill
 * calls launch directly, without a graph: their shapes vary (entries, and
 * the list lengths that decide the work), and a chunk's ~12 launches per
 * layer are a few percent of its time (RESULTS, "CUDA prefill attention").
 * Codecs without the kernel (all but f16) keep the decode kernel. */
static kvl_status pf_create(kvl_cuda_lm *lm, kvl_err *err) {
    lm->pf_mode = 1;
    if (lm->pool->codec != KVL_CUDA_CODEC_F16) return KVL_OK; /* no prefill kernel: the decode kernel only */
    kvl_status s = kvl_cuda_prefill_create(lm->pool, lm->H, lm->Hkv, &lm->pf, err);
    if (s) return s;
    if ((s = dalloc((void **)&lm->pf_tiles_d, sizeof(int32_t) * 2 * (size_t)lm->max_batch, err))) return s;
    KVL_CUDA_TRY(cudaMallocHost((void **)&lm->pf_tiles_h, sizeof(int32_t) * 2 * (size_t)lm->max_batch),
                 "cuda lm: pinned buffer");
    return KVL_OK;
}

static void pf_free(kvl_cuda_lm *lm) {
    kvl_cuda_prefill_free(lm->pf);
    if (lm->pf_tiles_d) cudaFree(lm->pf_tiles_d);
    if (lm->pf_tiles_h) cudaFreeHost(lm->pf_tiles_h);
}

/* This call's tiles into pf_tiles_h (pf_tiles_n > 0: the prefill kernel). */
static void pf_plan(kvl_cuda_lm *lm, int n, const int32_t *slot) {
    lm->pf_tiles_n = 0, lm->pf_used = 0;
    if (!lm->pf || !lm->pf_mode || n < LM_PF_MIN_AVG || ev_stats_on(lm)) return; /* statistics: decode kernel */
    const int nt = kvl_cuda_prefill_tiles(slot, n, kvl_cuda_prefill_tile_tokens(lm->pf), lm->pf_tiles_h);
    if ((long)nt * LM_PF_MIN_AVG <= n) lm->pf_tiles_n = nt, lm->pf_used = 1;
}

static kvl_status pf_upload(kvl_cuda_lm *lm, kvl_err *err) {
    if (!lm->pf_tiles_n) return KVL_OK;
    KVL_CUDA_TRY(cudaMemcpyAsync(lm->pf_tiles_d, lm->pf_tiles_h, sizeof(int32_t) * 2 * (size_t)lm->pf_tiles_n,
                                 cudaMemcpyHostToDevice, lm->st),
                 "cuda lm: prefill tiles");
    return KVL_OK;
}

/* One layer's attention of the call's n entries: the prefill kernel over
 * the planned tiles, else the decode kernel in launches of <= LM_ATTN_SEQ
 * entries. off, len: this layer's list offsets and the lists' lengths. */
static kvl_status attend(kvl_cuda_lm *lm, int n, int max_len, const int32_t *off, const int32_t *len,
                         const int32_t *pos, float scale, kvl_err *err, int l = 0) {
    if (lm->pf_tiles_n) {
        kvl_cuda_prefill_args pa = {lm->pf_tiles_n, lm->pf_tiles_d, lm->page_ids, off, len, pos, lm->q, lm->att, scale};
        return kvl_cuda_prefill_run(lm->pf, &pa, lm->st, err);
    }
    const size_t HD = (size_t)lm->H * lm->hd;
    for (int i0 = 0; i0 < n; i0 += LM_ATTN_SEQ) {
        const int nb = n - i0 < LM_ATTN_SEQ ? n - i0 : LM_ATTN_SEQ;
        const size_t li = (size_t)i0 * lm->Hkv;
        kvl_cuda_attn_args at = {nb, max_len, lm->page_ids, off + li, len + li, pos + i0, lm->q + i0 * HD,
                                 lm->att + i0 * HD, scale};
        kvl_status s = ev_stats_on(lm) ? ev_attn(lm, l, i0, &at, err) : kvl_cuda_attn_run(lm->attn, &at, lm->st, err);
        if (s) return s;
    }
    return KVL_OK;
}

extern "C" void kvl_cuda_lm_set_prefill(kvl_cuda_lm *lm, int mode) { lm->pf_mode = mode != 0; }
extern "C" int kvl_cuda_lm_used_prefill(const kvl_cuda_lm *lm) { return lm->pf_used; }

/* Benchmarks (kvl_cuda_lm_set_ablate): how often a stage's kernels are
 * launched: 1, or 0 (left out) / 2 (twice) when its bit is set. */
static int reps(const kvl_cuda_lm *lm, int stage) {
    return (lm->abl_skip >> stage & 1u) ? 0 : (lm->abl_dup >> stage & 1u) ? 2 : 1;
}
#define STAGE(stage, call)                          \
    for (int k_ = reps(lm, stage); k_ > 0; k_--)    \
        if ((s = (call)) != KVL_OK) return s

/* The device work of one call (metadata already in meta_h). */
static kvl_status enqueue(kvl_cuda_lm *lm, int n, int max_len, int want_logits_all, kvl_err *err) {
    cudaStream_t st = lm->st;
    const size_t B = (size_t)n, lists = B * lm->Hkv;
    const size_t bytes = sizeof(int32_t) * (5 * B + lists * (1 + (size_t)lm->L) + ev_meta_ints(lm, n));
    (void)want_logits_all;
    KVL_CUDA_TRY(cudaMemcpyAsync(lm->meta_d, lm->meta_h, bytes, cudaMemcpyHostToDevice, st), "cuda lm: metadata");
    const int32_t *tok = lm->meta_d, *pos = tok + B, *slot = pos + B, *len = slot + B, *off = len + lists;
    const int32_t *seal_from = off + (size_t)lm->L * lists, *seal_to = seal_from + B;
    kvl_status s;
    lm->n_ev = 0;
    if ((s = pf_upload(lm, err))) return s;
    mark(lm, KVL_CUDA_PROF_EMBED);
    if ((s = kvl_cuda_embed(&lm->emb, tok, n, lm->x, st, err))) return s;
    if ((s = kvl_cuda_rope_cs(pos, lm->freq, n, lm->hd, lm->cs, st, err))) return s;
    mark(lm, KVL_CUDA_PROF_EMBED);
    const float scale = 1.0f / sqrtf((float)lm->hd);
    for (int l = 0; l < lm->L; l++) {
        const lm_layer *y = &lm->layers[l];
        const lm_layer *ny = l + 1 < lm->L ? &lm->layers[l + 1] : NULL;
        STAGE(KVL_CUDA_PROF_NORM, norm(lm, y->attn_norm, n, err));
        mark(lm, KVL_CUDA_PROF_NORM);
        STAGE(KVL_CUDA_PROF_QKV, mv(lm, &y->qkv, lm->xb, n, lm->qkv, 0, err, lm->pf_wo ? &y->wo : NULL));
        mark(lm, KVL_CUDA_PROF_QKV);
        kvl_cuda_append_args aa = {n, lm->H, lm->Hkv, lm->hd, lm->neox, l, lm->L, lm->ppl, lm->qkv, lm->cs, pos, slot,
                                   lm->q, lm->chain, ev_layer_row(lm, lm->meta_d, n, l)};
        STAGE(KVL_CUDA_PROF_APPEND, kvl_cuda_kv_append(lm->pool, &aa, st, err));
        mark(lm, KVL_CUDA_PROF_APPEND);
        const int32_t *len_l = lm->evict ? ev_layer_len(lm, lm->meta_d, n, l) : len; /* eviction: rows per layer */
        STAGE(KVL_CUDA_PROF_ATTN, attend(lm, n, max_len, off + (size_t)l * lists, len_l, pos, scale, err, l));
        mark(lm, KVL_CUDA_PROF_ATTN);
        if (lm->q8 && y->wo.fmt != KVL_CUDA_WF_F16) {
            STAGE(KVL_CUDA_PROF_QUANT, kvl_cuda_quantize_q8(lm->att, n, lm->H * lm->hd, lm->xq, lm->xds, st, err));
            mark(lm, KVL_CUDA_PROF_QUANT);
        }
        STAGE(KVL_CUDA_PROF_WO, mv(lm, &y->wo, lm->att, n, lm->x, 1, err, &y->gu));
        mark(lm, KVL_CUDA_PROF_WO);
        if (lm->q8 && lm->fuse_sw && y->gu.fmt == KVL_CUDA_WF_Q8_0 && y->down.fmt != KVL_CUDA_WF_F16) {
            STAGE(KVL_CUDA_PROF_NORM, norm(lm, y->ffn_norm, n, err));
            mark(lm, KVL_CUDA_PROF_NORM);
            /* one launch: gate|up, SwiGLU, h's 8-bit blocks (into hq: xq is its input) */
            STAGE(KVL_CUDA_PROF_GU,
                  kvl_cuda_gemv_q8_swiglu(&y->gu, lm->xq, lm->xds, n, lm->h, lm->hq, lm->hds, lm->sw_cnt, st, err));
            mark(lm, KVL_CUDA_PROF_GU);
            STAGE(KVL_CUDA_PROF_DOWN, kvl_cuda_gemv_q8_ex(&y->down, lm->hq, lm->hds, n, lm->x, 1, &lm->gopt, st, err));
            mark(lm, KVL_CUDA_PROF_DOWN);
            continue;
        }
        STAGE(KVL_CUDA_PROF_NORM, norm(lm, y->ffn_norm, n, err));
        mark(lm, KVL_CUDA_PROF_NORM);
        STAGE(KVL_CUDA_PROF_GU, mv(lm, &y->gu, lm->xb, n, lm->gu, 0, err, &y->down));
        mark(lm, KVL_CUDA_PROF_GU);
        STAGE(KVL_CUDA_PROF_SWIGLU, lm->q8 ? kvl_cuda_swiglu_q8_ex(lm->gu, lm->h, lm->xq, lm->xds, n, lm->F, lm->chain,
                                                                   st, err)
                                           : kvl_cuda_swiglu(lm->gu, lm->h, n, lm->F, st, err));
        mark(lm, KVL_CUDA_PROF_SWIGLU);
        STAGE(KVL_CUDA_PROF_DOWN, mv(lm, &y->down, lm->h, n, lm->x, 1, err, ny ? &ny->qkv : &lm->out));
        mark(lm, KVL_CUDA_PROF_DOWN);
    }
    /* the output rows of entries f..n-1 (f = out_from: 0, or the logits tail's first), at their own rows of
     * logits and amax (the final RMSNorm of those entries into rows 0..n-f-1 of xb / xq) */
    const int f = lm->out_from, no = n - f;
    if (lm->q8) {
        STAGE(KVL_CUDA_PROF_OUT, kvl_cuda_rmsnorm_q8_ex(lm->x + (size_t)f * lm->E, lm->out_norm, lm->xb, lm->xq, lm->xds,
                                                       no, lm->E, lm->eps, lm->norm_regs, lm->norm_regs && lm->chain,
                                                       st, err));
    } else {
        STAGE(KVL_CUDA_PROF_OUT, kvl_cuda_rmsnorm(lm->x + (size_t)f * lm->E, lm->out_norm, lm->xb, no, lm->E, lm->eps, st,
                                                  err));
    }
    float *lg = lm->logits + (size_t)f * lm->V;
    STAGE(KVL_CUDA_PROF_OUT, mv(lm, &lm->out, lm->xb, no, lg, 0, err, &lm->layers[0].qkv)); /* next step's */
    if (lm->pen != 1.0f && lm->hist_d) { /* the window of the call's last entry, on its logits row */
        KVL_CUDA_TRY(cudaMemcpyAsync(lm->hist_d, lm->hist_h, sizeof(int32_t) * (1 + (size_t)lm->pen_max),
                                     cudaMemcpyHostToDevice, st),
                     "cuda lm: penalty window");
        STAGE(KVL_CUDA_PROF_OUT, kvl_cuda_repeat_penalty(lm->logits + (size_t)(n - 1) * lm->V, lm->V, lm->hist_d,
                                                         lm->pen, st, err));
    }
    STAGE(KVL_CUDA_PROF_OUT, lm->samp_ctr ? kvl_cuda_sample(lm->logits, n, lm->V, &lm->samp, lm->samp_seed, lm->samp_ctr,
                                                            lm->amax_d, st, err) /* f = 0 when sampling */
                                          : kvl_cuda_argmax(lg, no, lm->V, lm->amax_d + f, st, err));
    mark(lm, KVL_CUDA_PROF_OUT);
    if (lm->seal) { /* pages that left the residual window with this call (planned in kvl_cuda_lm_forward) */
        kvl_cuda_seal_args sa = {n, lm->L, lm->Hkv, lm->ppl, slot, seal_from, seal_to, lm->page_ids, lm->seal_mse};
        STAGE(KVL_CUDA_PROF_APPEND, kvl_cuda_kv_seal(lm->pool, &sa, st, err));
        mark(lm, KVL_CUDA_PROF_APPEND);
    }
    KVL_CUDA_TRY(cudaMemcpyAsync(lm->amax_h, lm->amax_d, sizeof(int32_t) * B, cudaMemcpyDeviceToHost, st),
                 "cuda lm: argmax download");
    return KVL_OK;
}

static kvl_status run_graph(kvl_cuda_lm *lm, int n, int max_len, kvl_err *err) {
    cudaGraph_t g = NULL;
    KVL_CUDA_TRY(cudaStreamBeginCapture(lm->st, cudaStreamCaptureModeThreadLocal), "cuda lm: graph capture");
    kvl_status s = enqueue(lm, n, max_len, 0, err);
    cudaError_t e = cudaStreamEndCapture(lm->st, &g);
    if (s) {
        if (g) cudaGraphDestroy(g);
        return s;
    }
    KVL_CUDA_TRY(e, "cuda lm: graph capture");
    if (lm->gexec) {
        cudaGraphExecUpdateResultInfo info;
        if (cudaGraphExecUpdate(lm->gexec, g, &info) != cudaSuccess) {
            cudaGetLastError(); /* clear: the shape changed, instantiate anew */
            cudaGraphExecDestroy(lm->gexec);
            lm->gexec = NULL;
        }
    }
    if (!lm->gexec) e = cudaGraphInstantiate(&lm->gexec, g, 0);
    cudaGraphDestroy(g);
    KVL_CUDA_TRY(e, "cuda lm: graph instantiate");
    KVL_CUDA_TRY(cudaGraphLaunch(lm->gexec, lm->st), "cuda lm: graph launch");
    return KVL_OK;
}

/* Sealing (kvl_cuda_lm_defer_seal): rewinds, then the pages each entry's
 * slot seals at the end of this call (the first entry of a slot carries
 * the slot's range). */
static kvl_status plan_seals(kvl_cuda_lm *lm, int n, const int32_t *pos, const int32_t *slot, int32_t *from,
                             int32_t *to, kvl_err *err) {
    for (int i = 0; i < n; i++) {
        const int sl = slot[i];
        if (pos[i] < lm->slot_len[sl]) { /* a rewind (or a new sequence in the slot): its pages open again */
            lm->slot_len[sl] = pos[i];
            const int k0 = pos[i] / lm->P;
            if (k0 < lm->slot_sealed[sl]) {
                kvl_status s = set_ids(lm, sl, k0, lm->slot_sealed[sl], 0, err);
                if (s) return s;
                lm->slot_sealed[sl] = k0;
            }
        }
        if (pos[i] + 1 > lm->slot_len[sl]) lm->slot_len[sl] = pos[i] + 1;
    }
    for (int i = 0; i < n; i++) {
        from[i] = to[i] = 0;
        int first = 1;
        for (int k = 0; k < i && first; k++) first = slot[k] != slot[i];
        if (!first || lm->defer_seal) continue;
        const int sl = slot[i];
        int upto = lm->slot_len[sl] / lm->P - lm->res_pages;
        if (upto > lm->ppl) upto = lm->ppl;
        if (upto > lm->slot_sealed[sl]) {
            from[i] = lm->slot_sealed[sl], to[i] = upto;
            lm->slot_sealed[sl] = upto;
        }
    }
    return KVL_OK;
}

extern "C" void kvl_cuda_lm_defer_seal(kvl_cuda_lm *lm, int defer) { lm->defer_seal = defer != 0; }

extern "C" kvl_status kvl_cuda_lm_forward(kvl_cuda_lm *lm, int n, const int32_t *tok, const int32_t *pos,
                                          const int32_t *slot, int first_logit, float *logits_out,
                                          int32_t *argmax_out, kvl_err *err) {
    if (n < 1 || n > lm->max_batch || (logits_out && (first_logit < 0 || first_logit >= n)))
        return kvl_err_set(err, KVL_ERR_ARG, "cuda forward: %d entries (max_batch %d), logits from %d", n,
                           lm->max_batch, first_logit);
    const size_t B = (size_t)n, lists = B * lm->Hkv;
    int32_t *mt = lm->meta_h, *mp = mt + B, *ms = mp + B, *ml = ms + B, *mo = ml + lists;
    int32_t *sf = mo + (size_t)lm->L * lists, *sto = sf + B;
    int max_len = 0;
    for (int i = 0; i < n; i++) {
        if (tok[i] < 0 || tok[i] >= lm->V)
            return kvl_err_set(err, KVL_ERR_ARG, "cuda forward: token %d out of range [0, %d)", tok[i], lm->V);
        if (pos[i] < 0 || pos[i] >= lm->n_ctx)
            return kvl_err_set(err, KVL_ERR_CTX_FULL, "cuda forward: position %d outside [0, %d)", pos[i], lm->n_ctx);
        if (slot[i] < 0 || slot[i] >= lm->n_slots)
            return kvl_err_set(err, KVL_ERR_ARG, "cuda forward: slot %d outside [0, %d)", slot[i], lm->n_slots);
        mt[i] = tok[i], mp[i] = pos[i], ms[i] = slot[i];
        if (pos[i] + 1 > max_len) max_len = pos[i] + 1;
        for (int h = 0; h < lm->Hkv; h++) {
            ml[(size_t)i * lm->Hkv + h] = pos[i] + 1;
            for (int l = 0; l < lm->L; l++)
                mo[(size_t)l * lists + (size_t)i * lm->Hkv + h] =
                    (int32_t)((((int64_t)slot[i] * lm->L + l) * lm->Hkv + h) * lm->ppl);
        }
    }
    kvl_status s = lm->seal ? plan_seals(lm, n, pos, slot, sf, sto, err) : KVL_OK;
    if (!s && lm->evict) s = ev_meta(lm, n, pos, slot, &max_len, err); /* rows, not positions */
    else if (!s && (int64_t)lm->ppl * lm->P < lm->n_ctx)
        for (int i = 0; i < n && !s; i++)
            if (pos[i] >= lm->ppl * lm->P)
                s = kvl_err_set(err, KVL_ERR_ARG, "cuda forward: position %d past the lists' %d rows", pos[i],
                                lm->ppl * lm->P);
    if (s) return s;
    if (!lm->seal) memset(sf, 0, sizeof(int32_t) * 2 * B);
    pf_plan(lm, n, slot);
    /* logits tail: the output rows of the entries whose logits are asked for, else of the last one (not
     * when drawing: the draws' counters are per entry index) */
    lm->out_from = lm->logits_tail && !lm->samp_ctr ? (logits_out ? first_logit : n - 1) : 0;
    if (lm->graphs && !lm->prof && !lm->pf_tiles_n) { /* prefill calls launch directly (pf_plan) */
        /* kernel arguments depend on the metadata only through n and the
         * attention plan: an unchanged shape replays the graph as it is (its
         * first node copies the new metadata from the pinned buffer) */
        int cp, ns;
        kvl_cuda_attn_plan(lm->attn, n, max_len, &cp, &ns);
        const int sc = ev_stats_on(lm) ? (max_len + KVL_STATS_CHUNK - 1) / KVL_STATS_CHUNK : 0;
        if (lm->gexec && lm->g_n == n && lm->g_cp == cp && lm->g_ns == ns && lm->g_f == lm->out_from &&
            lm->g_sc == sc) {
            s = kvl_cuda_status(cudaGraphLaunch(lm->gexec, lm->st), "cuda lm: graph launch", err);
        } else {
            s = run_graph(lm, n, max_len, err);
            lm->g_n = n, lm->g_cp = cp, lm->g_ns = ns, lm->g_f = lm->out_from, lm->g_sc = sc;
        }
    } else {
        s = enqueue(lm, n, max_len, 0, err);
    }
    if (s) {
        cudaStreamSynchronize(lm->st);
        return s;
    }
    if (logits_out)
        KVL_CUDA_TRY(cudaMemcpyAsync(logits_out, lm->logits + (size_t)first_logit * lm->V,
                                     sizeof(float) * (B - first_logit) * lm->V, cudaMemcpyDeviceToHost, lm->st),
                     "cuda lm: logits download");
    KVL_CUDA_TRY(cudaStreamSynchronize(lm->st), "cuda forward");
    if (lm->evict) ev_commit(lm, n, slot);
    memcpy(argmax_out, lm->amax_h, sizeof(int32_t) * B);
    for (int i = 0; i < lm->out_from; i++) argmax_out[i] = -1; /* logits tail: no output row */
    if (lm->prof && lm->n_ev > 1) {
        for (int k = 1; k < lm->n_ev; k++) {
            float ms = 0;
            KVL_CUDA_TRY(cudaEventElapsedTime(&ms, lm->ev[k - 1], lm->ev[k]), "cuda lm: profile events");
            lm->prof_ms[lm->ev_stage[k]] += ms;
        }
        lm->prof_calls++;
    }
    return KVL_OK;
}

extern "C" kvl_status kvl_cuda_lm_set_sampling(kvl_cuda_lm *lm, float temperature, int top_k, float top_p,
                                               float min_p, uint64_t seed, kvl_err *err) {
    if (!(temperature > 0.0f)) { /* greedy */
        if (lm->samp_ctr) cudaFree(lm->samp_ctr);
        lm->samp_ctr = NULL;
        lm->g_n = 0;
        return KVL_OK;
    }
    if (top_k < 1 || top_k > 1024)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda lm: device sampling needs top_k in 1..1024 (have %d)", top_k);
    if (top_p != top_p || min_p != min_p) return kvl_err_set(err, KVL_ERR_ARG, "cuda lm: NaN top_p / min_p");
    if (!lm->samp_ctr) {
        kvl_status s = dalloc((void **)&lm->samp_ctr, sizeof(uint64_t) * lm->max_batch, err);
        if (s) return s;
    }
    KVL_CUDA_TRY(cudaMemset(lm->samp_ctr, 0, sizeof(uint64_t) * lm->max_batch), "cuda lm: sampler counters");
    lm->samp = kvl_cuda_sample_params{temperature, top_k, top_p, min_p};
    lm->samp_seed = seed;
    lm->g_n = 0; /* capture anew */
    return KVL_OK;
}

extern "C" kvl_status kvl_cuda_lm_set_penalty(kvl_cuda_lm *lm, float penalty, int max_window, kvl_err *err) {
    if (!(penalty > 0.0f) || penalty != penalty || max_window < 0)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda lm: repeat penalty %g, window %d", (double)penalty, max_window);
    lm->g_n = 0;
    if (penalty == 1.0f || max_window == 0) {
        lm->pen = 1.0f;
        return KVL_OK;
    }
    if (max_window > lm->pen_max) {
        if (lm->hist_h) cudaFreeHost(lm->hist_h);
        if (lm->hist_d) cudaFree(lm->hist_d);
        lm->hist_h = NULL, lm->hist_d = NULL, lm->pen_max = 0, lm->pen = 1.0f;
        KVL_CUDA_TRY(cudaMallocHost((void **)&lm->hist_h, sizeof(int32_t) * (1 + (size_t)max_window)),
                     "cuda lm: penalty window");
        kvl_status s = dalloc((void **)&lm->hist_d, sizeof(int32_t) * (1 + (size_t)max_window), err);
        if (s) return s;
        lm->pen_max = max_window;
    }
    memset(lm->hist_h, 0, sizeof(int32_t) * (1 + (size_t)lm->pen_max));
    lm->pen = penalty;
    return KVL_OK;
}

extern "C" kvl_status kvl_cuda_lm_set_history(kvl_cuda_lm *lm, const int32_t *tok, int n, kvl_err *err) {
    if (lm->pen == 1.0f) return KVL_OK;
    if (n < 0 || n > lm->pen_max)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda lm: penalty window of %d tokens (room for %d)", n, lm->pen_max);
    lm->hist_h[0] = n;
    memcpy(lm->hist_h + 1, tok, sizeof(int32_t) * (size_t)n);
    return KVL_OK;
}

extern "C" kvl_status kvl_cuda_lm_set_profile(kvl_cuda_lm *lm, int on, kvl_err *err) {
    lm->prof = 0;
    if (!on) return KVL_OK;
    const int need = 8 + 10 * lm->L;
    if (lm->max_ev < need) {
        cudaEvent_t *ev = (cudaEvent_t *)realloc(lm->ev, sizeof(cudaEvent_t) * need);
        if (!ev) return kvl_err_set(err, KVL_ERR_NOMEM, "cuda lm: out of memory for profile events");
        lm->ev = ev;
        int *stg = (int *)realloc(lm->ev_stage, sizeof(int) * need);
        if (!stg) return kvl_err_set(err, KVL_ERR_NOMEM, "cuda lm: out of memory for profile events");
        lm->ev_stage = stg;
        for (; lm->max_ev < need; lm->max_ev++)
            KVL_CUDA_TRY(cudaEventCreate(&lm->ev[lm->max_ev]), "cuda lm: profile event");
    }
    memset(lm->prof_ms, 0, sizeof lm->prof_ms);
    lm->prof_calls = 0;
    lm->prof = 1;
    return KVL_OK;
}

extern "C" int kvl_cuda_lm_profile(const kvl_cuda_lm *lm, double *ms) {
    for (int i = 0; i < KVL_CUDA_PROF_N; i++) ms[i] = lm->prof_calls ? lm->prof_ms[i] / lm->prof_calls : 0;
    return lm->prof_calls;
}

extern "C" const char *kvl_cuda_lm_prof_name(int stage) {
    static const char *const names[KVL_CUDA_PROF_N] = {"embed+rope", "rmsnorm",  "qkv",    "append",
                                                       "attention",  "quant",    "wo",     "gate|up",
                                                       "swiglu",     "down",     "out+argmax"};
    return stage >= 0 && stage < KVL_CUDA_PROF_N ? names[stage] : "?";
}

extern "C" kvl_status kvl_cuda_lm_fill_context(kvl_cuda_lm *lm, int slot, int n_tok, uint64_t seed, kvl_err *err) {
    if (slot < 0 || slot >= lm->n_slots || n_tok < 0 || n_tok > lm->n_ctx)
        return kvl_err_set(err, KVL_ERR_ARG, "cuda fill: slot %d / %d tokens out of range", slot, n_tok);
    const int64_t per_slot = (int64_t)lm->L * lm->Hkv * lm->ppl;
    const uint32_t id0 = (uint32_t)(slot * per_slot);
    kvl_status s = kvl_cuda_pool_fill_random(lm->pool, id0, per_slot, seed, err);
    if (!s) s = kvl_cuda_pool_set_positions(lm->pool, id0, per_slot, lm->ppl, NULL, err);
    if (!s && lm->seal) { /* the full pages out of the residual window sealed, as after the calls that wrote them */
        const uint32_t sid0 = id0 | (1u << KVL_CUDA_CLASS_SHIFT);
        int upto = n_tok / lm->P - lm->res_pages;
        upto = upto < 0 ? 0 : upto;
        s = kvl_cuda_pool_fill_random(lm->pool, sid0, per_slot, seed + 1, err);
        if (!s) s = kvl_cuda_pool_set_positions(lm->pool, sid0, per_slot, lm->ppl, NULL, err);
        if (!s) s = set_ids(lm, slot, 0, lm->ppl, 0, err);
        if (!s) s = set_ids(lm, slot, 0, upto, 1, err);
        lm->slot_len[slot] = n_tok, lm->slot_sealed[slot] = upto;
        if (!s) s = kvl_cuda_status(cudaStreamSynchronize(lm->st), "cuda fill", err);
    }
    if (!s) s = kvl_cuda_sync(err);
    return s;
}

#include "cuda/lm_evict.cuh" /* eviction: the ev_* functions and kvl_cuda_lm_evict_* (same translation unit) */
