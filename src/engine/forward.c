/* The batched forward pass (prefill and decode share it): embeddings, then
 * per layer RMSNorm -> Q/K/V matmuls on quantized weights -> RoPE -> append
 * K/V to the paged cache -> attention over pages -> output projection ->
 * SwiGLU MLP, with every step split across the thread pool. Activations are
 * quantized once per step into the format each weight type dots against. */
#include <math.h>
#include <string.h>

#include "cpu/ops.h"
#include "engine/engine.h"

/* ---- per-token job: [x += delta] -> [y = norm(x) | swiglu] -> quantize ---- */

typedef struct {
    kvl_ctx *c;
    int n_tok;
    int tok0;            /* first token row to process (for output rows) */
    const float *add;    /* delta [nb][n_embd] added into x, or NULL */
    const float *norm_w; /* norm weight or NULL (then src is quantized as is) */
    float *src;          /* rows to norm/quantize: [nb][cols] */
    float *dst;          /* normed output [nb][cols] */
    const float *mul;    /* swiglu: dst = silu(src) * mul (in place on src) */
    int cols;
    int n_slots;
    int slot[KVL_XQ_SLOTS];
} tok_job;

static void tok_job_run(void *arg, int ith, int nth, int tid) {
    (void)tid;
    tok_job *j = arg;
    kvl_ctx *c = j->c;
    const int E = c->m->n_embd;
    long lo, hi;
    kvl_split(j->n_tok, ith, nth, &lo, &hi);
    for (long r = lo; r < hi; r++) {
        const long t = j->tok0 + r;
        if (j->add) kvl_cpu_add(c->x + t * E, j->add + t * E, E);
        float *row = j->src + t * j->cols;
        if (j->norm_w) {
            kvl_cpu_rmsnorm(row, j->norm_w, j->dst + t * j->cols, j->cols, c->m->norm_eps);
            row = j->dst + t * j->cols;
        } else if (j->mul) {
            kvl_cpu_swiglu(row, j->mul + t * j->cols, j->cols);
        }
        for (int s = 0; s < j->n_slots; s++) {
            const int sl = j->slot[s];
            c->k->quant_vec(c->xq_type[sl], row, (char *)c->xq[sl] + r * c->xq_stride[sl], j->cols);
        }
    }
}

/* Choose xq slots for the activation formats of up to 3 weights. */
static void pick_slots(kvl_ctx *c, const kvl_weight *const *w, int nw, int cols, tok_job *j, int *wslot) {
    j->n_slots = 0;
    for (int i = 0; i < nw; i++) {
        kvl_type vt = c->k->vec_type(w[i]->type);
        int found = -1;
        for (int s = 0; s < j->n_slots; s++)
            if (c->xq_type[j->slot[s]] == vt) found = j->slot[s];
        if (found < 0) {
            found = j->n_slots;
            j->slot[j->n_slots++] = found;
            c->xq_type[found] = vt;
            c->xq_stride[found] = kvl_type_row_bytes(vt, cols);
        }
        wslot[i] = found;
    }
}

/* ---- matmul job: up to 3 weights on quantized inputs ---- */

/* Matmuls are split into more chunks than threads so a descheduled thread
 * holds back at most a small piece (row slices stay multiples of 4 rows). */
static int mm_chunks(const kvl_ctx *c) { return c->nth > 1 ? 4 * c->nth : 1; }

typedef struct {
    kvl_ctx *c;
    int n_tok;
    int nw;
    const kvl_weight *w[3];
    int slot[3];
    float *y[3]; /* [n_tok][rows] */
} mm_job;

static void mm_job_run(void *arg, int ith, int nth, int tid) {
    (void)tid;
    mm_job *j = arg;
    for (int i = 0; i < j->nw; i++) {
        const kvl_weight *w = j->w[i];
        kvl_cpu_matmul(j->c->k, w->type, w->data, w->rows, w->cols, j->c->xq[j->slot[i]], j->n_tok, j->y[i], ith,
                       nth);
    }
}

/* y = W(x) for up to 3 weights sharing input x [n][cols]. norm_w/add as in tok_job. */
static void project(kvl_ctx *c, int n, const float *add, const float *norm_w, float *src, float *dst, int cols,
                    const kvl_weight *const *w, float *const *y, int nw) {
    tok_job tj = {.c = c, .n_tok = n, .add = add, .norm_w = norm_w, .src = src, .dst = dst, .cols = cols};
    mm_job mj = {.c = c, .n_tok = n, .nw = nw};
    pick_slots(c, w, nw, cols, &tj, mj.slot);
    kvl_threadpool_run(c->tp, tok_job_run, &tj, 0);
    for (int i = 0; i < nw; i++) {
        mj.w[i] = w[i];
        mj.y[i] = y[i];
    }
    kvl_threadpool_run(c->tp, mm_job_run, &mj, mm_chunks(c));
}

/* ---- biases + RoPE on q and k ---- */

typedef struct {
    kvl_ctx *c;
    const kvl_layer *L;
    int n_tok;
} rope_job;

static void rope_job_run(void *arg, int ith, int nth, int tid) {
    (void)tid;
    rope_job *j = arg;
    kvl_ctx *c = j->c;
    const kvl_model *m = c->m;
    const int hd = m->head_dim, H = m->n_head * hd, KV = m->n_head_kv * hd;
    long lo, hi;
    kvl_split(j->n_tok, ith, nth, &lo, &hi);
    for (long t = lo; t < hi; t++) {
        float *q = c->q + t * H, *k = c->kb + t * KV, *v = c->vb + t * KV;
        if (j->L->bq) kvl_cpu_add(q, j->L->bq, H);
        if (j->L->bk) kvl_cpu_add(k, j->L->bk, KV);
        if (j->L->bv) kvl_cpu_add(v, j->L->bv, KV);
        const float *cs = c->cs + t * hd;
        kvl_cpu_rope(q, m->n_head, hd, cs, m->rope_type == KVL_ROPE_NEOX);
        kvl_cpu_rope(k, m->n_head_kv, hd, cs, m->rope_type == KVL_ROPE_NEOX);
    }
}

/* ---- attention over the paged cache ---- */

typedef struct {
    kvl_ctx *c;
    kvl_kv_attn a;
} attn_job;

/* one unit of kvl_kv_attn per chunk (dynamic scheduling) */
static void attn_job_run(void *arg, int ith, int nth, int tid) {
    (void)nth;
    attn_job *j = arg;
    kvl_kv_attn_run(&j->a, j->c->attn_scratch[tid], ith, ith + 1);
}

static void attn_merge_run(void *arg, int ith, int nth, int tid) {
    (void)tid;
    attn_job *j = arg;
    kvl_kv_attn_merge(&j->a, ith, nth);
}

kvl_status kvl_engine_forward(kvl_seq *s, int pos0, const kvl_token *tokens, int n, float *logits_out, int n_out) {
    kvl_ctx *c = s->c;
    if (c->cuda) return kvl_engine_forward_cuda(s, pos0, tokens, n, logits_out, n_out); /* forward_cuda.c */
    const kvl_model *m = c->m;
    const int E = m->n_embd, hd = m->head_dim, H = m->n_head * hd, F = m->n_ff;
    if (n <= 0 || n > c->p.n_batch) return kvl_err_set(&c->err, KVL_ERR_ARG, "forward: bad batch size %d", n);

    /* embeddings and positions */
    for (int t = 0; t < n; t++) {
        const char *row = (const char *)m->tok_embd.data + (size_t)tokens[t] * kvl_type_row_bytes(m->tok_embd.type, E);
        c->k->dequant_row(m->tok_embd.type, row, c->x + (size_t)t * E, E);
        c->pos[t] = pos0 + t;
        kvl_cpu_rope_cs(c->cs + (size_t)t * hd, hd, c->pos[t], m->rope_freq);
    }

    const float scale = 1.0f / sqrtf((float)hd);
    for (int l = 0; l < m->n_layer; l++) {
        const kvl_layer *L = &m->layers[l];
        /* x += delta (previous block); xb = norm(x); q,k,v = W xb */
        {
            const kvl_weight *w[3] = {&L->wq, &L->wk, &L->wv};
            float *y[3] = {c->q, c->kb, c->vb};
            project(c, n, l > 0 ? c->delta : NULL, L->attn_norm, c->x, c->xb, E, w, y, 3);
        }
        rope_job rj = {.c = c, .L = L, .n_tok = n};
        kvl_threadpool_run(c->tp, rope_job_run, &rj, 0);
        if (c->q_hook) c->q_hook(c->q_hook_user, l, n, c->pos, c->q);
        kvl_kv_observe(s->t, l, n, c->q, m->n_head);
        /* eviction: stale window statistics cleared, room made in the byte budget */
        kvl_status st = kvl_kv_policy_before(s->t, l, n, &c->err);
        if (st) return st;
        if ((st = kvl_kv_append(s->t, l, n, c->pos, c->kb, c->vb, &c->err))) return st;
        attn_job aj = {.c = c};
        const long units = kvl_kv_attn_init(&aj.a, s->t, l, n, c->q, c->pos, m->n_head, scale, c->xb, c->attn_part,
                                            c->attn_part_bytes, c->nth);
        kvl_threadpool_run(c->tp, attn_job_run, &aj, (int)units);
        if (aj.a.split) kvl_threadpool_run(c->tp, attn_merge_run, &aj, 0);
        /* the layer's queries fed the statistics: evict (before sealing, so
         * the rows that move are still in open pages), then rows of sealing
         * codecs quantize after the call's attention (kv/codec.h) */
        if ((st = kvl_kv_policy_after(s->t, l, n, pos0 + n, &c->err))) return st;
        if ((st = kvl_kv_seal(s->t, l, &c->err))) return st;
        /* delta = Wo att */
        {
            const kvl_weight *w[1] = {&L->wo};
            float *y[1] = {c->delta};
            project(c, n, NULL, NULL, c->xb, NULL, H, w, y, 1);
        }
        /* x += delta; xb = norm(x); gate, up */
        {
            const kvl_weight *w[2] = {&L->w_gate, &L->w_up};
            float *y[2] = {c->hb, c->hb2};
            project(c, n, c->delta, L->ffn_norm, c->x, c->xb, E, w, y, 2);
        }
        /* hb = silu(hb) * hb2; delta = Wdown hb */
        {
            tok_job tj = {.c = c, .n_tok = n, .src = c->hb, .mul = c->hb2, .cols = F};
            mm_job mj = {.c = c, .n_tok = n, .nw = 1, .w = {&L->w_down}, .y = {c->delta}};
            const kvl_weight *w[1] = {&L->w_down};
            pick_slots(c, w, 1, F, &tj, mj.slot);
            kvl_threadpool_run(c->tp, tok_job_run, &tj, 0);
            kvl_threadpool_run(c->tp, mm_job_run, &mj, mm_chunks(c));
        }
    }
    kvl_status st = kvl_kv_policy_step(s->t, &c->err);
    if (st) return st;
    /* final residual add for all rows; norm + logits for the requested rows */
    {
        tok_job tj = {.c = c, .n_tok = n, .add = c->delta, .src = c->x, .cols = E};
        kvl_threadpool_run(c->tp, tok_job_run, &tj, 0);
    }
    if (n_out > 0) {
        const int first = n - n_out;
        tok_job tj = {.c = c, .n_tok = n_out, .tok0 = first, .norm_w = m->out_norm, .src = c->x, .dst = c->xb,
                      .cols = E};
        mm_job mj = {.c = c, .n_tok = n_out, .nw = 1, .w = {&m->output}, .y = {logits_out}};
        const kvl_weight *w[1] = {&m->output};
        pick_slots(c, w, 1, E, &tj, mj.slot);
        kvl_threadpool_run(c->tp, tok_job_run, &tj, 0);
        kvl_threadpool_run(c->tp, mm_job_run, &mj, mm_chunks(c));
    }
    return KVL_OK;
}

/* ---- seam for the blended forward pass (engine/blend.c) ----------------------
 * The per-layer pieces of kvl_engine_forward as separate calls on the context's
 * batch scratch (rows 0..n-1 of c->x, c->xb, c->delta, c->q, c->kb, c->vb), so
 * blend.c can run layers over token subsets without a second copy of them. */

void kvl_fwd_embed(kvl_ctx *c, const kvl_token *tokens, const int32_t *pos, int n) {
    const kvl_model *m = c->m;
    const int E = m->n_embd;
    for (int t = 0; t < n; t++) {
        const char *row = (const char *)m->tok_embd.data + (size_t)tokens[t] * kvl_type_row_bytes(m->tok_embd.type, E);
        c->k->dequant_row(m->tok_embd.type, row, c->x + (size_t)t * E, E);
    }
    kvl_fwd_positions(c, pos, n);
}

void kvl_fwd_positions(kvl_ctx *c, const int32_t *pos, int n) {
    const int hd = c->m->head_dim;
    for (int t = 0; t < n; t++) {
        c->pos[t] = pos[t];
        kvl_cpu_rope_cs(c->cs + (size_t)t * hd, hd, pos[t], c->m->rope_freq);
    }
}

void kvl_fwd_qkv(kvl_ctx *c, int l, int n, int add_delta) {
    const kvl_layer *L = &c->m->layers[l];
    const kvl_weight *w[3] = {&L->wq, &L->wk, &L->wv};
    float *y[3] = {c->q, c->kb, c->vb};
    project(c, n, add_delta ? c->delta : NULL, L->attn_norm, c->x, c->xb, c->m->n_embd, w, y, 3);
    rope_job rj = {.c = c, .L = L, .n_tok = n};
    kvl_threadpool_run(c->tp, rope_job_run, &rj, 0);
}

void kvl_fwd_attn(kvl_ctx *c, const kvl_kv_table *t, int l, int n, const float *q, const int32_t *pos, float *out) {
    const float scale = 1.0f / sqrtf((float)c->m->head_dim);
    attn_job aj = {.c = c};
    const long units = kvl_kv_attn_init(&aj.a, t, l, n, q, pos, c->m->n_head, scale, out, c->attn_part,
                                        c->attn_part_bytes, c->nth);
    kvl_threadpool_run(c->tp, attn_job_run, &aj, (int)units);
    if (aj.a.split) kvl_threadpool_run(c->tp, attn_merge_run, &aj, 0);
}

void kvl_fwd_post(kvl_ctx *c, int l, int n) {
    const kvl_model *m = c->m;
    const kvl_layer *L = &m->layers[l];
    {
        const kvl_weight *w[1] = {&L->wo};
        float *y[1] = {c->delta};
        project(c, n, NULL, NULL, c->xb, NULL, m->n_head * m->head_dim, w, y, 1);
    }
    {
        const kvl_weight *w[2] = {&L->w_gate, &L->w_up};
        float *y[2] = {c->hb, c->hb2};
        project(c, n, c->delta, L->ffn_norm, c->x, c->xb, m->n_embd, w, y, 2);
    }
    tok_job tj = {.c = c, .n_tok = n, .src = c->hb, .mul = c->hb2, .cols = m->n_ff};
    mm_job mj = {.c = c, .n_tok = n, .nw = 1, .w = {&L->w_down}, .y = {c->delta}};
    const kvl_weight *w[1] = {&L->w_down};
    pick_slots(c, w, 1, m->n_ff, &tj, mj.slot);
    kvl_threadpool_run(c->tp, tok_job_run, &tj, 0);
    kvl_threadpool_run(c->tp, mm_job_run, &mj, mm_chunks(c));
}

void kvl_fwd_logits(kvl_ctx *c, int n, float *logits_out) {
    const kvl_model *m = c->m;
    const int E = m->n_embd;
    tok_job ta = {.c = c, .n_tok = n, .add = c->delta, .src = c->x, .cols = E};
    kvl_threadpool_run(c->tp, tok_job_run, &ta, 0);
    tok_job tj = {.c = c, .n_tok = 1, .tok0 = n - 1, .norm_w = m->out_norm, .src = c->x, .dst = c->xb, .cols = E};
    mm_job mj = {.c = c, .n_tok = 1, .nw = 1, .w = {&m->output}, .y = {logits_out}};
    const kvl_weight *w[1] = {&m->output};
    pick_slots(c, w, 1, E, &tj, mj.slot);
    kvl_threadpool_run(c->tp, tok_job_run, &tj, 0);
    kvl_threadpool_run(c->tp, mm_job_run, &mj, mm_chunks(c));
}
