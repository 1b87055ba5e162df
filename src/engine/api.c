/* The public C API (include/kvlite.h): model, tokenizer and chat-template
 * wrappers, contexts (thread pool + KV pool + scratch), sequences,
 * prefill/decode and KV statistics. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "kv/policy.h"
#include "kv/codec.h"
#include "kv/kv.h"
#include "model/chat.h"

static void copy_err(const kvl_err *e, char *buf, size_t len) {
    if (buf && len) snprintf(buf, len, "%s", e->msg);
}

/* ---- model ---- */

kvl_status kvl_model_load(const char *path, kvl_model **out, char *err, size_t err_len) {
    kvl_err e;
    kvl_err_clear(&e);
    if (!out) return KVL_ERR_ARG;
    *out = NULL;
    if (!path) {
        kvl_err_set(&e, KVL_ERR_ARG, "model: no path given");
        copy_err(&e, err, err_len);
        return KVL_ERR_ARG;
    }
    kvl_status st = kvl_model_open(path, out, &e);
    if (st) copy_err(&e, err, err_len);
    return st;
}

void kvl_model_get_info(const kvl_model *m, kvl_model_info *info) {
    memset(info, 0, sizeof *info);
    info->arch = m->arch;
    info->name = m->name;
    info->n_layer = m->n_layer;
    info->n_embd = m->n_embd;
    info->n_head = m->n_head;
    info->n_head_kv = m->n_head_kv;
    info->head_dim = m->head_dim;
    info->n_ff = m->n_ff;
    info->n_vocab = m->n_vocab;
    info->n_ctx_train = m->n_ctx_train;
    info->rope_theta = m->rope_theta;
    info->norm_eps = m->norm_eps;
    info->bos = kvl_tok_bos(m->tok);
    info->eos = kvl_tok_eos(m->tok);
    info->eot = kvl_tok_eot(m->tok);
    info->weight_bytes = kvl_gguf_data_bytes(m->gguf);
}

int kvl_model_is_eog(const kvl_model *m, kvl_token t) { return kvl_tok_is_eog(m->tok, t); }

uint64_t kvl_model_identity(const kvl_model *m) { return m ? m->identity : 0; }

int64_t kvl_tokenize(const kvl_model *m, const char *text, size_t len, int add_bos, int parse_special,
                     kvl_token *out, int64_t cap) {
    return kvl_tok_encode(m->tok, text, len, add_bos, parse_special, out, cap);
}

int kvl_token_to_piece(const kvl_model *m, kvl_token t, int render_special, char *buf, int cap) {
    return kvl_tok_piece(m->tok, t, render_special, buf, cap);
}

int64_t kvl_chat_apply(const kvl_model *m, const kvl_chat_msg *msgs, int n_msgs, int add_assistant, char *out,
                       size_t cap) {
    return kvl_chat_render(m->tok, msgs, n_msgs, add_assistant, out, cap);
}

int64_t kvl_chat_tokenize(const kvl_model *m, const kvl_chat_msg *msgs, int n_msgs, int add_assistant,
                          kvl_token *out, int64_t cap) {
    return kvl_chat_encode(m ? m->tok : NULL, msgs, n_msgs, add_assistant, out, cap, NULL);
}

/* ---- context ---- */

void kvl_ctx_params_default(kvl_ctx_params *p) {
    memset(p, 0, sizeof *p);
    p->kv_codec = "f16";
    p->page_tokens = 32;
    p->n_seq_max = 1;
    p->kv_policy = "full";
    p->n_batch = 512;
}

const char *kvl_ctx_error(const kvl_ctx *c) { return c ? c->err.msg : ""; }

static void ctx_destroy(kvl_ctx *c) {
    kvl_engine_cuda_free(c);
    kvl_threadpool_free(c->tp);
    kvl_kv_pool_free(c->pool);
    free(c->x);
    free(c->xb);
    free(c->delta);
    free(c->q);
    free(c->kb);
    free(c->vb);
    free(c->hb);
    free(c->hb2);
    free(c->cs);
    free(c->logits);
    free(c->pos);
    for (int i = 0; i < KVL_XQ_SLOTS; i++) free(c->xq[i]);
    if (c->attn_scratch)
        for (int i = 0; i < c->nth; i++) free(c->attn_scratch[i]);
    free(c->attn_scratch);
    free(c->attn_part);
    free(c);
}

void kvl_ctx_free(kvl_ctx *c) {
    if (!c || c->freed) return;
    if (c->n_seq > 0) { /* sequences still use the pool: the last kvl_seq_free releases it */
        c->freed = 1;
        kvl_threadpool_free(c->tp);
        c->tp = NULL;
        return;
    }
    ctx_destroy(c);
}

static void *xalloc(size_t n, int *fail) {
    void *p = calloc(1, n ? n : 1);
    if (!p) *fail = 1;
    return p;
}

/* With an evicting policy and a byte budget: the budget must hold one page
 * per (layer, kv-head); without a keep, the keep is the largest that fits
 * the budget with the bound of kv/policy.h (budget + slack per list, the
 * chunk of one layer, a partial page per list). */
static kvl_status policy_budget(const kvl_model *m, const kvl_ctx_params *p, kvl_kv_config *kc, kvl_err *e) {
    kvl_kv_pool *probe = NULL;
    const size_t budget = kc->budget_bytes;
    kc->budget_bytes = (size_t)1 << 40;
    kvl_status st = kvl_kv_pool_create(kc, &probe, e);
    kc->budget_bytes = budget;
    if (st) return st;
    const int evicting = kvl_kv_policy_evicting(probe);
    const size_t pb = kvl_kv_page_bytes(probe);
    kvl_kv_pool_free(probe);
    if (!evicting) return KVL_OK;
    const size_t lists = (size_t)m->n_layer * (size_t)m->n_head_kv, P = (size_t)p->page_tokens;
    if (budget < lists * pb)
        return kvl_err_set(e, KVL_ERR_ARG,
                           "ctx: KV budget %zu bytes is less than one page per (layer, kv-head) (%zu x %zu bytes)",
                           budget, lists, pb);
    if (kc->policy_keep || kc->policy_keep_frac > 0) return KVL_OK;
    const size_t fixed = ((size_t)m->n_head_kv * (((size_t)p->n_batch + P - 1) / P) + 2 * lists) * pb;
    const long pages = budget > fixed ? (long)((budget - fixed) / (lists * pb)) : 0;
    const long keep = pages * (long)P - 32; /* the default slack */
    if (keep < 1)
        return kvl_err_set(e, KVL_ERR_ARG,
                           "ctx: KV budget %zu bytes leaves no tokens to keep after a chunk of %d tokens "
                           "(needs more than %zu bytes); raise it or lower n_batch",
                           budget, p->n_batch, fixed + lists * pb);
    kc->policy_keep = keep > p->n_ctx ? p->n_ctx : (int)keep;
    return KVL_OK;
}

kvl_status kvl_ctx_create(const kvl_model *m, const kvl_ctx_params *pin, kvl_ctx **out, char *errbuf,
                          size_t err_len) {
    kvl_err e;
    kvl_err_clear(&e);
    if (!out || !m) return KVL_ERR_ARG;
    *out = NULL;
    kvl_ctx_params p;
    if (pin) p = *pin;
    else kvl_ctx_params_default(&p);
    if (!p.kv_codec) p.kv_codec = "f16";
    if (!p.kv_policy) p.kv_policy = "full";
    if (p.n_ctx <= 0) p.n_ctx = m->n_ctx_train;
    if (p.n_seq_max <= 0) p.n_seq_max = 1;
    if (p.page_tokens <= 0) p.page_tokens = 32;
    if (p.n_batch <= 0) p.n_batch = 512;
    if (p.n_threads <= 0) p.n_threads = kvl_n_cores();
    kvl_status st = KVL_OK;
    if (p.n_ctx > (1 << 24) || p.page_tokens > 4096 || p.n_batch > 65536 || p.n_threads > 1024) {
        st = kvl_err_set(&e, KVL_ERR_ARG, "ctx: parameter out of range (n_ctx %d, page_tokens %d, n_batch %d, threads %d)",
                         p.n_ctx, p.page_tokens, p.n_batch, p.n_threads);
        copy_err(&e, errbuf, err_len);
        return st;
    }
    if (p.n_batch > p.n_ctx) p.n_batch = p.n_ctx;
    if (p.device != KVL_DEVICE_CPU && p.device != KVL_DEVICE_CUDA) {
        st = kvl_err_set(&e, KVL_ERR_ARG, "ctx: unknown device %d", p.device);
        copy_err(&e, errbuf, err_len);
        return st;
    }

    kvl_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        kvl_err_set(&e, KVL_ERR_NOMEM, "ctx: out of memory");
        copy_err(&e, errbuf, err_len);
        return KVL_ERR_NOMEM;
    }
    c->m = m;
    c->k = p.exact_matmul ? kvl_cpu_kernels_exact() : kvl_cpu_kernels_get(!p.no_simd);

    /* KV pool: the default budget holds n_ctx tokens for n_seq_max sequences. */
    kvl_kv_config kc = {.n_layer = m->n_layer, .n_head_kv = m->n_head_kv, .head_dim = m->head_dim,
                        .page_tokens = p.page_tokens, .budget_bytes = p.kv_budget_bytes,
                        .policy = p.kv_policy, .n_head = m->n_head, .scalar_only = p.no_simd != 0,
                        .k_spec = p.kv_codec, .v_spec = p.kv_codec_v, .layer_spec = p.kv_layers,
                        .model_path = m->path};
    kc.policy_keep = p.kv_keep;
    kc.policy_keep_frac = p.kv_keep_frac;
    if (p.kv_keep < 0 || p.kv_keep > p.n_ctx) {
        st = kvl_err_set(&e, KVL_ERR_ARG, "ctx: kv_keep %d outside [0, n_ctx %d]", p.kv_keep, p.n_ctx);
        goto fail;
    }
    if (!(p.kv_keep_frac >= 0 && p.kv_keep_frac <= 1)) {
        st = kvl_err_set(&e, KVL_ERR_ARG, "ctx: kv_keep_frac %g outside [0, 1]", (double)p.kv_keep_frac);
        goto fail;
    }
    if (p.kv_budget_bytes && (st = policy_budget(m, &p, &kc, &e))) goto fail;
    if (!kc.budget_bytes) {
        kvl_kv_pool *probe = NULL;
        kc.budget_bytes = (size_t)1 << 40;
        if ((st = kvl_kv_pool_create(&kc, &probe, &e))) goto fail;
        const size_t f[5] = {(size_t)(p.n_ctx + p.page_tokens - 1) / (size_t)p.page_tokens, (size_t)m->n_layer,
                             (size_t)m->n_head_kv, kvl_kv_page_bytes(probe), (size_t)p.n_seq_max};
        kvl_kv_pool_free(probe);
        size_t b = 1;
        for (int i = 0; i < 5; i++) {
            if (f[i] && b > SIZE_MAX / f[i]) {
                st = kvl_err_set(&e, KVL_ERR_ARG,
                                 "ctx: default KV budget overflows (n_ctx %d x n_seq_max %d); set kv_budget_bytes",
                                 p.n_ctx, p.n_seq_max);
                goto fail;
            }
            b *= f[i];
        }
        kc.budget_bytes = b;
    }
    if ((st = kvl_kv_pool_create(&kc, &c->pool, &e))) goto fail;
    p.kv_budget_bytes = kc.budget_bytes;
    snprintf(c->codec_k, sizeof c->codec_k, "%s", kvl_kv_pool_spec(c->pool, 0));
    snprintf(c->codec_v, sizeof c->codec_v, "%s", kvl_kv_pool_spec(c->pool, 1));
    snprintf(c->codec_name, sizeof c->codec_name, "%s%s%s%s", c->codec_k, strcmp(c->codec_k, c->codec_v) ? " / " : "",
             strcmp(c->codec_k, c->codec_v) ? c->codec_v : "", p.kv_layers && p.kv_layers[0] ? " (+layers)" : "");
    p.kv_codec = c->codec_k;
    p.kv_codec_v = c->codec_v;
    p.kv_layers = NULL; /* not kept, as kv_policy */
    p.kv_policy = NULL; /* not kept: the caller's string may not outlive the ctx */
    c->p = p;

    c->tp = kvl_threadpool_create(p.n_threads);
    if (!c->tp) {
        st = kvl_err_set(&e, KVL_ERR_NOMEM, "ctx: cannot create thread pool");
        goto fail;
    }
    c->nth = kvl_threadpool_n(c->tp);
    const size_t nb = (size_t)p.n_batch, E = (size_t)m->n_embd, hd = (size_t)m->head_dim;
    const size_t H = (size_t)m->n_head * hd, KV = (size_t)m->n_head_kv * hd, F = (size_t)m->n_ff;
    const size_t wide = H > E ? H : E;
    int fail = 0;
    c->x = xalloc(sizeof(float) * nb * E, &fail);
    c->xb = xalloc(sizeof(float) * nb * wide, &fail);
    c->delta = xalloc(sizeof(float) * nb * E, &fail);
    c->q = xalloc(sizeof(float) * nb * H, &fail);
    c->kb = xalloc(sizeof(float) * nb * KV, &fail);
    c->vb = xalloc(sizeof(float) * nb * KV, &fail);
    c->hb = xalloc(sizeof(float) * nb * F, &fail);
    c->hb2 = xalloc(sizeof(float) * nb * F, &fail);
    c->cs = xalloc(sizeof(float) * nb * hd, &fail);
    c->logits = xalloc(sizeof(float) * (size_t)m->n_vocab, &fail);
    c->pos = xalloc(sizeof(int32_t) * nb, &fail);
    /* f32 rows are the widest activation format */
    size_t maxcols = F > wide ? F : wide;
    c->xq_cap = nb * maxcols * sizeof(float);
    for (int i = 0; i < KVL_XQ_SLOTS; i++) c->xq[i] = xalloc(c->xq_cap, &fail);
    c->attn_part_bytes = kvl_kv_attn_part_bytes(c->pool, m->n_head, c->p.n_ctx);
    c->attn_part = xalloc(c->attn_part_bytes, &fail);
    c->attn_scratch = xalloc(sizeof(void *) * (size_t)c->nth, &fail);
    if (!fail)
        for (int i = 0; i < c->nth; i++) c->attn_scratch[i] = xalloc(kvl_kv_attend_scratch_bytes(c->pool), &fail);
    if (fail) {
        st = kvl_err_set(&e, KVL_ERR_NOMEM, "ctx: out of memory for scratch buffers");
        goto fail;
    }
    if (p.device == KVL_DEVICE_CUDA && (st = kvl_engine_cuda_create(c, &e))) goto fail; /* forward_cuda.c */
    *out = c;
    return KVL_OK;
fail:
    copy_err(&e, errbuf, err_len);
    kvl_ctx_free(c);
    return st;
}

/* ---- sequences ---- */

kvl_status kvl_seq_create(kvl_ctx *c, kvl_seq **out) {
    if (!c || !out) return KVL_ERR_ARG;
    *out = NULL;
    if (c->freed) return KVL_ERR_ARG;
    kvl_seq *s = calloc(1, sizeof *s);
    if (!s) return kvl_err_set(&c->err, KVL_ERR_NOMEM, "seq: out of memory");
    s->c = c;
    s->cuda_slot = -1;
    s->cuda_next = -1;
    kvl_status st = c->cuda ? kvl_engine_cuda_slot_get(c, &s->cuda_slot, &c->err) : KVL_OK;
    if (!st) st = kvl_kv_table_create(c->pool, &s->t, &c->err);
    if (st) {
        if (s->cuda_slot >= 0) kvl_engine_cuda_slot_put(c, s->cuda_slot);
        free(s);
        return st;
    }
    c->n_seq++;
    *out = s;
    return KVL_OK;
}

void kvl_seq_free(kvl_seq *s) {
    if (!s) return;
    kvl_ctx *c = s->c;
    if (s->cuda_slot >= 0) kvl_engine_cuda_slot_put(c, s->cuda_slot);
    kvl_kv_table_free(s->t);
    free(s->toks);
    free(s);
    if (--c->n_seq == 0 && c->freed) ctx_destroy(c);
}

kvl_status kvl_seq_fork(const kvl_seq *s, kvl_seq **out) {
    if (!s || !out) return KVL_ERR_ARG;
    *out = NULL;
    if (s->c->freed) return KVL_ERR_ARG;
    if (s->c->cuda) return kvl_err_set(&s->c->err, KVL_ERR_UNSUPPORTED, "seq: fork of a cuda sequence is not supported yet");
    kvl_seq *n = calloc(1, sizeof *n);
    if (!n) return kvl_err_set(&s->c->err, KVL_ERR_NOMEM, "seq: out of memory");
    n->c = s->c;
    n->cuda_slot = -1;
    n->cuda_next = -1;
    kvl_status st = kvl_seq_reserve_tokens(n, s->pos);
    if (st) {
        free(n);
        return kvl_err_set(&s->c->err, st, "seq: out of memory");
    }
    if (s->pos) memcpy(n->toks, s->toks, (size_t)s->pos * sizeof *n->toks);
    n->pos = s->pos;
    st = kvl_kv_table_fork(s->t, &n->t, &s->c->err);
    if (st) {
        free(n->toks);
        free(n);
        return st;
    }
    s->c->n_seq++;
    *out = n;
    return KVL_OK;
}

int kvl_seq_pos(const kvl_seq *s) { return s->pos; }

int kvl_policy_info_get(int i, kvl_policy_info *out) {
    const kvl_policy_ops *o = kvl_policy_get(i);
    if (!o || !out) return 0;
    *out = (kvl_policy_info){o->name, o->desc, o->params, o->stats};
    return 1;
}

void kvl_seq_set_keep(kvl_seq *s, int keep) {
    if (s) kvl_kv_policy_set_keep(s->t, keep);
}

kvl_status kvl_seq_reserve_tokens(kvl_seq *s, int n) {
    if (n <= s->toks_cap) return KVL_OK;
    int cap = s->toks_cap ? s->toks_cap : 256;
    while (cap < n) cap = cap > INT32_MAX / 2 ? n : cap * 2;
    kvl_token *t = realloc(s->toks, (size_t)cap * sizeof *t);
    if (!t) return KVL_ERR_NOMEM;
    s->toks = t;
    s->toks_cap = cap;
    return KVL_OK;
}

int kvl_seq_tokens(const kvl_seq *s, kvl_token *out, int cap) {
    if (!s) return -KVL_ERR_ARG;
    if (out && cap > 0) memcpy(out, s->toks, (size_t)(cap < s->pos ? cap : s->pos) * sizeof *out);
    return s->pos;
}

kvl_status kvl_prefill(kvl_seq *s, const kvl_token *tokens, int n, float *logits, float *all_logits) {
    if (!s) return KVL_ERR_ARG;
    kvl_ctx *c = s->c;
    const kvl_model *m = c->m;
    if (c->freed) return KVL_ERR_ARG; /* the context was freed: only kvl_seq_free is valid */
    kvl_err_clear(&c->err);
    if (n <= 0 || !tokens) return kvl_err_set(&c->err, KVL_ERR_ARG, "prefill: no tokens");
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->n_vocab)
            return kvl_err_set(&c->err, KVL_ERR_ARG, "prefill: token id %d at index %d out of range [0, %d)",
                               tokens[i], i, m->n_vocab);
    if ((int64_t)s->pos + n > c->p.n_ctx)
        return kvl_err_set(&c->err, KVL_ERR_CTX_FULL,
                           "prefill: %d tokens at position %d exceed the context length %d", n, s->pos, c->p.n_ctx);
    /* with an evicting policy the budget is kept by evicting (make-room in
     * the forward pass), and evictions inside the call are final */
    const int evicting = kvl_kv_policy_evicting(c->pool);
    if (!evicting) {
        size_t need = kvl_kv_append_need(s->t, n);
        size_t used = kvl_kv_pool_used(c->pool), budget = kvl_kv_pool_budget(c->pool);
        if (need > budget - (used < budget ? used : budget))
            return kvl_err_set(&c->err, KVL_ERR_NOMEM,
                               "prefill: KV budget exhausted (%zu bytes needed, %zu of %zu in use)", need, used,
                               budget);
    }
    if (kvl_seq_reserve_tokens(s, s->pos + n) != KVL_OK)
        return kvl_err_set(&c->err, KVL_ERR_NOMEM, "prefill: out of memory for token ids");
    kvl_status st = evicting ? kvl_kv_txn_begin_truncate(s->t, &c->err) : kvl_kv_txn_begin(s->t, &c->err);
    if (st) return st;
    int pos = s->pos;
    for (int off = 0; off < n; off += c->p.n_batch) {
        const int nc = n - off < c->p.n_batch ? n - off : c->p.n_batch;
        const int last = off + nc == n;
        float *out = NULL;
        int n_out = 0;
        if (all_logits) {
            out = all_logits + (size_t)off * (size_t)m->n_vocab;
            n_out = nc;
        } else if (logits && last) {
            out = logits;
            n_out = 1;
        }
        st = kvl_engine_forward(s, pos, tokens + off, nc, out, n_out);
        if (st) { /* all or nothing: the sequence is as before the call */
            kvl_kv_txn_rollback(s->t);
            return st;
        }
        pos += nc;
    }
    kvl_kv_txn_commit(s->t);
    memcpy(s->toks + s->pos, tokens, (size_t)n * sizeof *tokens);
    s->pos = pos;
    if (all_logits && logits)
        memcpy(logits, all_logits + (size_t)(n - 1) * (size_t)m->n_vocab, sizeof(float) * (size_t)m->n_vocab);
    return KVL_OK;
}

kvl_status kvl_decode(kvl_seq *s, kvl_token t, float *logits) { return kvl_prefill(s, &t, 1, logits, NULL); }

void kvl_seq_kv_stats(const kvl_seq *s, kvl_kv_stats *st) {
    memset(st, 0, sizeof *st);
    const kvl_ctx *c = s->c;
    const kvl_model *m = c->m;
    st->bytes_used = kvl_kv_table_bytes(s->t);
    st->bytes_peak = kvl_kv_table_peak_bytes(s->t);
    st->pool_used = kvl_kv_pool_used(c->pool);
    st->pool_budget = kvl_kv_pool_budget(c->pool);
    int64_t sum = 0;
    for (int l = 0; l < m->n_layer; l++)
        for (int h = 0; h < m->n_head_kv; h++) sum += kvl_kv_table_len(s->t, l, h);
    st->tokens_cached = sum / ((int64_t)m->n_layer * m->n_head_kv);
    st->bytes_per_token = kvl_kv_bytes_per_token(c->pool);
    st->n_pages = kvl_kv_table_n_pages(s->t);
    st->codec = c->codec_name;
    st->codec_bytes = kvl_kv_table_codec_bytes(s->t);
    const double vals = (double)sum * 2.0 * m->head_dim;
    st->bits_per_value = vals > 0 ? 8.0 * (double)st->codec_bytes / vals : 0;
    st->pool_held = kvl_kv_pool_held(c->pool);
    st->sealing = 0;
    for (int l = 0; l < m->n_layer; l++)
        st->sealing |= kvl_kv_pool_codec(c->pool, l, 0)->seal != NULL || kvl_kv_pool_codec(c->pool, l, 1)->seal != NULL;
    kvl_kv_policy_stats ps;
    kvl_kv_policy_info(s->t, &ps);
    st->policy = ps.spec;
    st->keep = ps.budget;
    st->tokens_evicted = ps.tokens_dropped;
    st->policy_bytes = ps.stats_bytes + ps.state_bytes;
}
