/* The forward pass on CUDA (kvl_ctx_params.device = KVL_DEVICE_CUDA): the
 * engine side of the backend seam. kvl_engine_forward hands a context with
 * c->cuda here; this file describes the loaded model to the device module
 * (src/cuda/lm.cu, which runs forward.c's per-layer structure on device
 * kernels), gives each sequence a device KV slot, and runs a forward call
 * as batches of decode-like entries (prefill too: entry i = token i at
 * position pos0 + i, its causal mask from the position; device batches of
 * up to 512 entries where the tiled prefill attention takes the codec,
 * else 32). The CPU KV table of
 * a cuda sequence stays empty; the device pages are the cache. Without
 * CUDA=1 every entry point fails with a clear error. Device sampling
 * (kvl_ctx_set_device_sampling): the token choice of each call (argmax or
 * the CPU sampler's pipeline, with the repetition penalty over the
 * sequence's recent tokens) runs on the device and only its id comes back. */
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/forward_cuda_evict.h"
#include "kv/policy.h"

#ifdef KVL_HAVE_CUDA
#include "cuda/kvl_cuda.h"
#include "cuda/kvl_cuda_prefill.h"
#include "kv/codec_spec.h"

#define CUDA_MAX_BATCH 32 /* entries per device call (prefill chunks) with the decode kernel's attention */
/* with the tiled prefill attention (f16 KV): one pass over the list per 128 / G
 * entries, so a chunk of n_batch tokens (default 512) is one device call; the
 * step buffers grow with it (logits: max_batch x n_vocab floats) */
#define CUDA_PREFILL_BATCH 512

struct kvl_engine_cuda {
    kvl_cuda_lm *lm;
    int n_slots, max_batch;
    unsigned char *used; /* [n_slots] */
    int32_t *tok, *pos, *slot, *amax; /* [max_batch] */
    int sampling;  /* kvl_ctx_set_device_sampling on: each call leaves its draw in s->cuda_next */
    int pen_n;     /* > 0: repetition penalty over the last pen_n tokens of the sequence */
    int32_t *hist; /* [pen_n] window scratch */
    kvl_cuda_evict *ev; /* evicting policy (forward_cuda_evict.c), else NULL */
};

#define CUDA_SAMPLE_KMAX 1024 /* kvl_cuda_sample's top-k limit: top_k 0 / larger are capped to it */
#define CUDA_PEN_MAX 4096     /* largest repeat_last_n on the device */

static kvl_cuda_tensor tensor(const kvl_weight *w) {
    kvl_cuda_tensor t = {(int)w->type, w->data, w->rows, w->cols};
    return t;
}

kvl_status kvl_engine_cuda_create(kvl_ctx *c, kvl_err *err) {
    const kvl_model *m = c->m;
    if (strcmp(c->codec_k, c->codec_v) || strstr(c->codec_name, "(+layers)"))
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda: K and V must use one codec on all layers (have %s)",
                           c->codec_name);
    const int evicting = kvl_kv_policy_evicting(c->pool);
    if (evicting && (!strncmp(c->codec_k, "kivi", 4) || !strncmp(c->codec_k, "squat", 5)))
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED,
                           "cuda: eviction policy %s with the sealing codec %s does not run on the device (sealed rows "
                           "would need decoding and re-encoding); use f16, int8, fp8 or int4z",
                           kvl_kv_pool_policy(c->pool)->spec, c->codec_k);
    for (int l = 0; l < m->n_layer; l++)
        if (m->layers[l].bq || m->layers[l].bk || m->layers[l].bv)
            return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cuda: attention biases (%s) are not supported yet", m->arch);
    struct kvl_engine_cuda *g = calloc(1, sizeof *g);
    kvl_cuda_layer_desc *ld = calloc((size_t)m->n_layer, sizeof *ld);
    if (!g || !ld) {
        free(g), free(ld);
        return kvl_err_set(err, KVL_ERR_NOMEM, "cuda: out of memory");
    }
    g->n_slots = c->p.n_seq_max;
    /* KVL_CUDA_PREFILL=0 (benchmarks: the before): the decode kernel and batches of 32 */
    const char *pfe = getenv("KVL_CUDA_PREFILL");
    const int pf_on = !(pfe && !strcmp(pfe, "0"));
    const int max_b = pf_on && kvl_cuda_prefill_codec(c->codec_k) ? CUDA_PREFILL_BATCH : CUDA_MAX_BATCH;
    g->max_batch = c->p.n_batch < max_b ? c->p.n_batch : max_b;
    g->used = calloc((size_t)g->n_slots, 1);
    g->tok = malloc(sizeof(int32_t) * 4 * (size_t)g->max_batch);
    if (!g->used || !g->tok) {
        free(ld), free(g->used), free(g->tok), free(g);
        return kvl_err_set(err, KVL_ERR_NOMEM, "cuda: out of memory");
    }
    g->pos = g->tok + g->max_batch, g->slot = g->pos + g->max_batch, g->amax = g->slot + g->max_batch;
    for (int l = 0; l < m->n_layer; l++) {
        const kvl_layer *L = &m->layers[l];
        ld[l] = (kvl_cuda_layer_desc){L->attn_norm, L->ffn_norm, tensor(&L->wq), tensor(&L->wk), tensor(&L->wv),
                                      tensor(&L->wo), tensor(&L->w_gate), tensor(&L->w_up), tensor(&L->w_down)};
    }
    kvl_cuda_model_desc md = {m->n_layer, m->n_embd, m->n_head, m->n_head_kv, m->head_dim, m->n_ff, m->n_vocab,
                              m->norm_eps, m->rope_type == KVL_ROPE_NEOX, m->rope_freq, tensor(&m->tok_embd),
                              tensor(&m->output), m->out_norm, ld};
    const char *w = getenv("KVL_CUDA_WEIGHTS"); /* testing / benchmarks: "f16" converts every weight */
    kvl_cuda_lm_config cfg = {c->codec_k, c->p.page_tokens, c->p.n_ctx, g->n_slots, g->max_batch,
                              w && !strcmp(w, "f16") ? KVL_CUDA_W_F16 : KVL_CUDA_W_NATIVE, 1,
                              c->p.exact_matmul /* f32 activations, as the CPU's exact path */, 0, 0, 0};
    if (evicting) cfg.list_tokens = kvl_engine_cuda_evict_list_rows(c, g->max_batch); /* lists sized by the budget */
    /* a sealing codec's spec parameters (r, fit) go to the device seal; any
     * other spec text (+rot, parameters) is passed whole and refused there */
    kvl_codec_spec sp;
    kvl_err perr = {0};
    if (kvl_codec_spec_parse(c->codec_k, 0, &sp, &perr) == KVL_OK && sp.c->seal && !sp.prm.rot) {
        const char *fit = kvl_codec_param(&sp.prm, "fit");
        cfg.codec = sp.named ? sp.named->name : sp.c->name;
        cfg.seal_residual = sp.residual;
        cfg.seal_fit = !fit || !strcmp(fit, "auto") ? 0 : !strcmp(fit, "cover") ? 1 : 2;
    }
    kvl_status st = kvl_cuda_lm_create(&md, &cfg, &g->lm, err);
    free(ld);
    if (st) {
        free(g->used), free(g->tok), free(g);
        return st;
    }
    if (evicting && (st = kvl_engine_cuda_evict_create(c, g->lm, g->n_slots, &g->ev, err))) {
        kvl_cuda_lm_free(g->lm);
        free(g->used), free(g->tok), free(g);
        return st;
    }
    if (getenv("KVL_CUDA_GRAPHS")) kvl_cuda_lm_set_graphs(g->lm, 1); /* testing: CUDA graph replay */
    if (!pf_on) kvl_cuda_lm_set_prefill(g->lm, 0);
    /* output rows only for the logits asked for (a prefill chunk: its last entry); KVL_CUDA_LOGITS_TAIL=0
     * (benchmarks: the before) computes every entry's */
    const char *lte = getenv("KVL_CUDA_LOGITS_TAIL");
    kvl_cuda_lm_set_logits_tail(g->lm, !(lte && !strcmp(lte, "0")));
    c->cuda = g;
    return KVL_OK;
}

struct kvl_cuda_lm *kvl_engine_cuda_lm(kvl_ctx *c) { return c->cuda ? c->cuda->lm : NULL; }

void kvl_engine_cuda_free(kvl_ctx *c) {
    struct kvl_engine_cuda *g = c->cuda;
    if (!g) return;
    kvl_engine_cuda_evict_free(g->ev);
    kvl_cuda_lm_free(g->lm);
    free(g->used), free(g->tok), free(g->hist), free(g);
    c->cuda = NULL;
}

kvl_status kvl_engine_cuda_slot_get(kvl_ctx *c, int *slot, kvl_err *err) {
    struct kvl_engine_cuda *g = c->cuda;
    for (int i = 0; i < g->n_slots; i++)
        if (!g->used[i]) {
            kvl_status st = g->ev ? kvl_engine_cuda_evict_slot(g->ev, i, err) : KVL_OK; /* rows 0, statistics 0 */
            if (st) return st;
            g->used[i] = 1;
            *slot = i;
            return KVL_OK;
        }
    return kvl_err_set(err, KVL_ERR_NOMEM, "cuda: all %d sequence slots in use (n_seq_max)", g->n_slots);
}

void kvl_engine_cuda_slot_put(kvl_ctx *c, int slot) {
    if (c->cuda && slot >= 0 && slot < c->cuda->n_slots) c->cuda->used[slot] = 0;
}

kvl_status kvl_engine_forward_cuda(kvl_seq *s, int pos0, const kvl_token *tokens, int n, float *logits_out,
                                   int n_out) {
    kvl_ctx *c = s->c;
    struct kvl_engine_cuda *g = c->cuda;
    const int V = c->m->n_vocab;
    if (n <= 0 || n > c->p.n_batch) return kvl_err_set(&c->err, KVL_ERR_ARG, "forward: bad batch size %d", n);
    for (int off = 0; off < n; off += g->max_batch) {
        const int nc = n - off < g->max_batch ? n - off : g->max_batch;
        for (int i = 0; i < nc; i++) {
            g->tok[i] = tokens[off + i];
            g->pos[i] = pos0 + off + i;
            g->slot[i] = s->cuda_slot;
        }
        /* logits of the last n_out tokens of the call that fall in this chunk */
        const int first_out = n - n_out; /* call index of the first token with logits */
        float *lo = NULL;
        int first = 0;
        if (n_out > 0 && logits_out && off + nc > first_out) {
            first = first_out > off ? first_out - off : 0;
            lo = logits_out + (size_t)(off + first - first_out) * V;
        }
        if (g->pen_n > 0) { /* the penalty window of the chunk's last entry: the sequence's last pen_n tokens */
            const int end = pos0 + off + nc, beg = end - g->pen_n > 0 ? end - g->pen_n : 0;
            for (int p = beg; p < end; p++) g->hist[p - beg] = p < pos0 ? s->toks[p] : tokens[p - pos0];
            kvl_status st = kvl_cuda_lm_set_history(g->lm, g->hist, end - beg, &c->err);
            if (st) return st;
        }
        /* sealing codecs: pages seal after the engine call's last device batch, as on the CPU */
        kvl_cuda_lm_defer_seal(g->lm, off + nc < n);
        if (g->ev) kvl_engine_cuda_evict_batch(g->ev, s, n, off, nc);
        kvl_status st = kvl_cuda_lm_forward(g->lm, nc, g->tok, g->pos, g->slot, first, lo, g->amax, &c->err);
        if (st) return st;
        if (g->sampling) s->cuda_next = g->amax[nc - 1];
    }
    /* eviction: the policy's hooks on the mirror table, the drops on the device */
    return g->ev ? kvl_engine_cuda_evict_after(g->ev, s, pos0, n, &c->err) : KVL_OK;
}

kvl_status kvl_engine_cuda_evict_fetch_stats(kvl_seq *s) {
    if (!s || !s->c->cuda || !s->c->cuda->ev || s->cuda_slot < 0)
        return s ? kvl_err_set(&s->c->err, KVL_ERR_UNSUPPORTED, "cuda evict: no device eviction on this sequence")
                 : KVL_ERR_ARG;
    return kvl_engine_cuda_evict_fetch(s->c->cuda->ev, s, &s->c->err);
}

void kvl_engine_cuda_evict_stats(const kvl_seq *s, kvl_cuda_evict_stats *out) {
    memset(out, 0, sizeof *out);
    if (!s || !s->c->cuda || !s->c->cuda->ev || s->cuda_slot < 0) return;
    kvl_engine_cuda_evict_get(s->c->cuda->ev, s->cuda_slot, out);
}

kvl_status kvl_ctx_set_device_sampling(kvl_ctx *c, const kvl_sampler_params *p) {
    if (!c) return KVL_ERR_ARG;
    kvl_err_clear(&c->err);
    struct kvl_engine_cuda *g = c->cuda;
    if (!g) return kvl_err_set(&c->err, KVL_ERR_UNSUPPORTED, "device sampling: the context is not on the device");
    kvl_status st;
    if (!p) { /* off: greedy argmax stays the device's token choice, nothing reported */
        g->sampling = 0, g->pen_n = 0;
        if ((st = kvl_cuda_lm_set_penalty(g->lm, 1.0f, 0, &c->err))) return st;
        return kvl_cuda_lm_set_sampling(g->lm, 0.0f, 0, 1.0f, 0.0f, 0, &c->err);
    }
    if (p->temperature != p->temperature || p->top_p != p->top_p || p->min_p != p->min_p || p->top_k < 0 ||
        !(p->repeat_penalty > 0.0f) || p->repeat_penalty != p->repeat_penalty || p->repeat_last_n < 0)
        return kvl_err_set(&c->err, KVL_ERR_ARG, "device sampling: invalid parameters");
    if (p->repeat_penalty != 1.0f && p->repeat_last_n > CUDA_PEN_MAX)
        return kvl_err_set(&c->err, KVL_ERR_UNSUPPORTED,
                           "device sampling: repeat_last_n %d is over the device's %d", p->repeat_last_n, CUDA_PEN_MAX);
    const int pen_n = p->repeat_penalty != 1.0f ? p->repeat_last_n : 0;
    if (pen_n > 0) {
        int32_t *h = realloc(g->hist, sizeof(int32_t) * (size_t)pen_n);
        if (!h) return kvl_err_set(&c->err, KVL_ERR_NOMEM, "device sampling: out of memory");
        g->hist = h;
    }
    if ((st = kvl_cuda_lm_set_penalty(g->lm, pen_n > 0 ? p->repeat_penalty : 1.0f, pen_n, &c->err))) return st;
    const int k = p->top_k == 0 || p->top_k > CUDA_SAMPLE_KMAX ? CUDA_SAMPLE_KMAX : p->top_k;
    if ((st = kvl_cuda_lm_set_sampling(g->lm, p->temperature, k, p->top_p, p->min_p, p->seed, &c->err))) return st;
    g->pen_n = pen_n;
    g->sampling = 1;
    return KVL_OK;
}

kvl_token kvl_seq_sampled(const kvl_seq *s) { return s ? s->cuda_next : -1; }

#else /* no CUDA in this build */

#define NO_CUDA "cuda: this kvlite was built without CUDA (rebuild with `make CUDA=1`)"

kvl_status kvl_engine_cuda_create(kvl_ctx *c, kvl_err *err) {
    (void)c;
    return kvl_err_set(err, KVL_ERR_UNSUPPORTED, NO_CUDA);
}
void kvl_engine_cuda_free(kvl_ctx *c) { (void)c; }
struct kvl_cuda_lm *kvl_engine_cuda_lm(kvl_ctx *c) {
    (void)c;
    return NULL;
}
kvl_status kvl_engine_cuda_slot_get(kvl_ctx *c, int *slot, kvl_err *err) {
    (void)c, (void)slot;
    return kvl_err_set(err, KVL_ERR_UNSUPPORTED, NO_CUDA);
}
void kvl_engine_cuda_slot_put(kvl_ctx *c, int slot) { (void)c, (void)slot; }
kvl_status kvl_ctx_set_device_sampling(kvl_ctx *c, const kvl_sampler_params *p) {
    (void)p;
    if (!c) return KVL_ERR_ARG;
    return kvl_err_set(&c->err, KVL_ERR_UNSUPPORTED, NO_CUDA);
}
kvl_token kvl_seq_sampled(const kvl_seq *s) { return s ? s->cuda_next : -1; }
kvl_status kvl_engine_cuda_evict_fetch_stats(kvl_seq *s) {
    if (!s) return KVL_ERR_ARG;
    return kvl_err_set(&s->c->err, KVL_ERR_UNSUPPORTED, NO_CUDA);
}
void kvl_engine_cuda_evict_stats(const kvl_seq *s, kvl_cuda_evict_stats *out) {
    (void)s;
    memset(out, 0, sizeof *out);
}
kvl_status kvl_engine_forward_cuda(kvl_seq *s, int pos0, const kvl_token *tokens, int n, float *logits_out,
                                   int n_out) {
    (void)pos0, (void)tokens, (void)n, (void)logits_out, (void)n_out;
    return kvl_err_set(&s->c->err, KVL_ERR_UNSUPPORTED, NO_CUDA);
}

#endif
