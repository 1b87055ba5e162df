/* CacheBlend (include/kvlite.h, "CacheBlend"; docs/ARCHITECTURE.md): a
 * prompt of fresh tokens and reused chunks is prefilled layer by layer over
 * a shrinking set of "active" tokens, reusing forward.c's per-layer steps
 * (engine.h's kvl_fwd_* seam). Per layer: the active tokens' q/k/v are
 * computed; at the selection layer (params.full_layers) the reused tokens
 * whose fresh V (or K) deviates most from their stored rows are kept active
 * (the ratio fraction, plus every fresh token and the last one); the
 * layer's rows of every new token are appended to the sequence's page
 * tables in position order (tokens computed at this layer: their fresh
 * rows, so the selection layer's rows are fresh for every token; the
 * others: the stored rows, K rotated by the position delta of its chunk);
 * then the unselected tokens drop out, and the active ones attend over the
 * pages and run the rest of the block. A dropped token's hidden state is never needed again: later
 * layers read only its stored KV. Splicing copies rows into the sequence's
 * own fresh pages (encoded by its codec), so the store's rows are never
 * shared with a sequence and nothing of another sequence is written; the
 * page invariants (full pages but the last, positions in page bytes) hold
 * unchanged. The same pass with every token active and no reuse computes a
 * chunk for the store (capturing its rows). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu/ops.h"
#include "engine/blend.h"
#include "engine/engine.h"

void kvl_blend_params_default(kvl_blend_params *p) {
    p->ratio = 0.15f;
    p->full_layers = 1;
    p->select_k = 0;
    p->select_query = 0;
    p->pipeline = 1;
    p->read_mbps = 0;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* A segment of the new tokens: reused chunk rows and their rotation. */
typedef struct bseg {
    int start, n, reuse;
    kvl_blend_chunk *ch;
    int owned;
    float *cs; /* [head_dim/2][2]: RoPE of the position delta (start position - chunk base) */
} bseg;

typedef struct brun {
    kvl_seq *s;
    const kvl_token *tok; /* [N] */
    int N;
    const int *seg_of;    /* [N]: segment index of reused tokens, -1 fresh */
    const bseg *segs;
    int full_all;         /* every token active at layer 0 */
    int sel_layer;        /* selection layer (n_layer: none) */
    float ratio;
    int select_k;
    int select_query;     /* kvl_blend_params.select_query */
    kvl_blend_chunk *capture; /* compute mode: rows of tokens [cap0, cap0 + capture->n) */
    int cap0;
    int n_selected;       /* out */
    kvl_blend_reader *rd; /* disk-tier chunks still arriving, or NULL */
} brun;

/* Before layer l uses stored rows: wait until the reader has them. Layers
 * before the selection layer recompute every token and use none. */
static kvl_status blend_wait_layer(const brun *r, int l, kvl_err *err) {
    if (!r->rd || (r->full_all && l < r->sel_layer)) return KVL_OK;
    return kvl_blend_reader_wait(r->rd, l, err);
}

/* Stored row of reused token i at layer l into k, v [kv] (K rotated to its new position). */
static void stored_row(const brun *r, int l, int i, float *k, float *v) {
    const kvl_model *m = r->s->c->m;
    const bseg *g = &r->segs[r->seg_of[i]];
    const int j = i - g->start;
    kvl_blend_chunk_get(g->ch, l, 0, j, k);
    kvl_blend_chunk_get(g->ch, l, 1, j, v);
    kvl_cpu_rope(k, m->n_head_kv, m->head_dim, g->cs, m->rope_type == KVL_ROPE_NEOX);
}

typedef struct dev_ent {
    float d;
    int a;
} dev_ent;

static int dev_cmp(const void *pa, const void *pb) {
    const dev_ent *a = pa, *b = pb;
    if (a->d != b->d) return a->d > b->d ? -1 : 1;
    return a->a - b->a;
}

/* Attention mass the question puts on each active token at this layer:
 * mass [n_act] = the mean over the question's tokens (the fresh tokens after
 * the last reused one; the last token if there are none) and query heads of
 * softmax(q . k / sqrt(d)) over the active tokens at or before it. q_all
 * [n_act][n_head * head_dim], k_all [n_act][n_head_kv * head_dim] (after
 * RoPE); act [n_act] token index of each active slot (ascending); sc [n_act]
 * scratch. Tokens before the call (an earlier turn) are left out of the
 * softmax: the scores rank this call's tokens only. */
static void query_mass(const brun *r, const float *q_all, const float *k_all, const int *act, int n_act, float *mass,
                       float *sc) {
    const kvl_model *m = r->s->c->m;
    const int D = m->head_dim, nh = m->n_head, grp = m->n_head / m->n_head_kv, H = nh * D, KV = m->n_head_kv * D;
    const float scale = 1.0f / sqrtf((float)D);
    int a0 = n_act - 1;
    if (r->seg_of[act[a0]] < 0)
        while (a0 > 0 && r->seg_of[act[a0 - 1]] < 0) a0--;
    for (int a = 0; a < n_act; a++) mass[a] = 0;
    const float w = 1.0f / (float)((n_act - a0) * nh);
    for (int t = a0; t < n_act; t++)
        for (int h = 0; h < nh; h++) {
            const float *q = q_all + (size_t)t * H + (size_t)h * D;
            const int kh = h / grp;
            float mx = -INFINITY;
            for (int j = 0; j <= t; j++) {
                const float *k = k_all + (size_t)j * KV + (size_t)kh * D;
                float d = 0;
                for (int e = 0; e < D; e++) d += q[e] * k[e];
                sc[j] = d * scale;
                if (sc[j] > mx) mx = sc[j];
            }
            double sum = 0;
            for (int j = 0; j <= t; j++) sum += (sc[j] = expf(sc[j] - mx));
            const float inv = (float)(w / sum);
            for (int j = 0; j <= t; j++) mass[j] += sc[j] * inv;
        }
}

static kvl_status run_layers(brun *r, float *logits, kvl_err *err) {
    kvl_seq *s = r->s;
    kvl_ctx *c = s->c;
    const kvl_model *m = c->m;
    const int N = r->N, E = m->n_embd, H = m->n_head * m->head_dim, KV = m->n_head_kv * m->head_dim;
    const int nb = c->p.n_batch, pos0 = s->pos;
    kvl_status st = KVL_OK;
    int *act = malloc(sizeof(int) * (size_t)N), *aidx = malloc(sizeof(int) * (size_t)N);
    int32_t *apos = malloc(sizeof(int32_t) * (size_t)N), *tpos = malloc(sizeof(int32_t) * (size_t)N);
    kvl_token *tb = malloc(sizeof(kvl_token) * (size_t)nb);
    float *x_all = malloc(sizeof(float) * (size_t)N * E), *d_all = malloc(sizeof(float) * (size_t)N * E);
    float *q_all = malloc(sizeof(float) * (size_t)N * H);
    float *k_all = malloc(sizeof(float) * (size_t)N * KV), *v_all = malloc(sizeof(float) * (size_t)N * KV);
    float *tmp = malloc(sizeof(float) * 2 * (size_t)KV);
    dev_ent *dev = malloc(sizeof(dev_ent) * (size_t)N);
    char *keep = malloc((size_t)N);
    float *mass = r->select_query ? malloc(sizeof(float) * 2 * (size_t)N) : NULL;
    if ((r->select_query && !mass) || !keep || !act || !aidx || !apos || !tpos || !tb || !x_all || !d_all || !q_all || !k_all || !v_all || !tmp || !dev) {
        st = kvl_err_set(err, KVL_ERR_NOMEM, "blend: out of memory for %d tokens of scratch", N);
        goto done;
    }
    int n_act = 0, n_reused = 0;
    for (int i = 0; i < N; i++) {
        tpos[i] = pos0 + i;
        const int reused = r->seg_of[i] >= 0;
        n_reused += reused;
        aidx[i] = -1;
        if (r->full_all || !reused || i == N - 1) {
            aidx[i] = n_act;
            act[n_act] = i;
            apos[n_act++] = pos0 + i;
        }
    }
    r->n_selected = 0;
    for (int a = 0; a < n_act; a++) r->n_selected += r->seg_of[act[a]] >= 0;
    for (int l = 0; l < m->n_layer; l++) {
        if ((st = blend_wait_layer(r, l, err))) goto done;
        /* q, k, v of the active tokens */
        for (int a0 = 0; a0 < n_act; a0 += nb) {
            const int n = n_act - a0 < nb ? n_act - a0 : nb;
            if (l == 0) {
                for (int t = 0; t < n; t++) tb[t] = r->tok[act[a0 + t]];
                kvl_fwd_embed(c, tb, apos + a0, n);
            } else {
                memcpy(c->x, x_all + (size_t)a0 * E, sizeof(float) * (size_t)n * E);
                memcpy(c->delta, d_all + (size_t)a0 * E, sizeof(float) * (size_t)n * E);
                kvl_fwd_positions(c, apos + a0, n);
            }
            kvl_fwd_qkv(c, l, n, l > 0);
            memcpy(q_all + (size_t)a0 * H, c->q, sizeof(float) * (size_t)n * H);
            memcpy(k_all + (size_t)a0 * KV, c->kb, sizeof(float) * (size_t)n * KV);
            memcpy(v_all + (size_t)a0 * KV, c->vb, sizeof(float) * (size_t)n * KV);
            memcpy(x_all + (size_t)a0 * E, c->x, sizeof(float) * (size_t)n * E);
        }
        if (r->capture)
            for (int a = 0; a < n_act; a++) {
                const int j = act[a] - r->cap0;
                if (j < 0 || j >= r->capture->n) continue;
                kvl_blend_chunk_set(r->capture, l, 0, j, k_all + (size_t)a * KV);
                kvl_blend_chunk_set(r->capture, l, 1, j, v_all + (size_t)a * KV);
            }
        /* selection: the reused tokens deviating most stay active; rows
         * computed at this layer are appended for every token */
        int select_now = 0;
        if (l == r->sel_layer && n_reused > 0) {
            int want = (int)floor((double)r->ratio * n_reused + 0.5);
            if (want > n_reused) want = n_reused;
            int nd = 0;
            if (mass) query_mass(r, q_all, k_all, act, n_act, mass, mass + N);
            for (int a = 0; a < n_act; a++) {
                const int i = act[a];
                if (r->seg_of[i] < 0) continue;
                double d = 1;
                if (r->select_query != 2) {
                    stored_row(r, l, i, tmp, tmp + KV);
                    const float *fresh = r->select_k ? k_all + (size_t)a * KV : v_all + (size_t)a * KV;
                    const float *old = r->select_k ? tmp : tmp + KV;
                    d = 0;
                    for (int j = 0; j < KV; j++) d += ((double)fresh[j] - old[j]) * ((double)fresh[j] - old[j]);
                }
                if (mass) d *= mass[a];
                dev[nd++] = (dev_ent){(float)d, a};
            }
            qsort(dev, (size_t)nd, sizeof *dev, dev_cmp);
            memset(keep, 0, (size_t)N);
            for (int k = 0; k < want && k < nd; k++) keep[dev[k].a] = 1;
            for (int a = 0; a < n_act; a++)
                if (r->seg_of[act[a]] < 0 || act[a] == N - 1) keep[a] = 1;
            select_now = 1;
        }
        /* the layer's rows of every new token, in position order */
        if ((st = kvl_kv_policy_before(s->t, l, N, err))) goto done;
        for (int i0 = 0; i0 < N; i0 += nb) {
            const int n = N - i0 < nb ? N - i0 : nb;
            for (int t = 0; t < n; t++) {
                const int i = i0 + t, a = aidx[i];
                float *kd = c->kb + (size_t)t * KV, *vd = c->vb + (size_t)t * KV;
                if (a >= 0) {
                    memcpy(kd, k_all + (size_t)a * KV, sizeof(float) * (size_t)KV);
                    memcpy(vd, v_all + (size_t)a * KV, sizeof(float) * (size_t)KV);
                } else {
                    stored_row(r, l, i, kd, vd);
                }
            }
            if ((st = kvl_kv_append(s->t, l, n, tpos + i0, c->kb, c->vb, err))) goto done;
        }
        if (select_now) { /* the dropped tokens leave the active set */
            int w = 0, sel = 0;
            for (int a = 0; a < n_act; a++) {
                const int i = act[a];
                if (!keep[a]) {
                    aidx[i] = -1;
                    continue;
                }
                sel += r->seg_of[i] >= 0;
                if (w != a) {
                    memcpy(x_all + (size_t)w * E, x_all + (size_t)a * E, sizeof(float) * (size_t)E);
                    memcpy(q_all + (size_t)w * H, q_all + (size_t)a * H, sizeof(float) * (size_t)H);
                    act[w] = i;
                    apos[w] = apos[a];
                }
                aidx[i] = w++;
            }
            n_act = w;
            r->n_selected = sel;
        }
        /* attention and the rest of the block for the active tokens */
        for (int a0 = 0; a0 < n_act; a0 += nb) {
            const int n = n_act - a0 < nb ? n_act - a0 : nb;
            const float *q = q_all + (size_t)a0 * H;
            kvl_kv_observe(s->t, l, n, q, m->n_head);
            kvl_fwd_attn(c, s->t, l, n, q, apos + a0, c->xb);
            memcpy(c->x, x_all + (size_t)a0 * E, sizeof(float) * (size_t)n * E);
            kvl_fwd_post(c, l, n);
            memcpy(x_all + (size_t)a0 * E, c->x, sizeof(float) * (size_t)n * E);
            memcpy(d_all + (size_t)a0 * E, c->delta, sizeof(float) * (size_t)n * E);
        }
        if ((st = kvl_kv_policy_after(s->t, l, n_act, pos0 + N, err))) goto done;
        if ((st = kvl_kv_seal(s->t, l, err))) goto done;
    }
    if ((st = kvl_kv_policy_step(s->t, err))) goto done;
    if (logits) { /* the last token is always active and last in the list */
        memcpy(c->x, x_all + (size_t)(n_act - 1) * E, sizeof(float) * (size_t)E);
        memcpy(c->delta, d_all + (size_t)(n_act - 1) * E, sizeof(float) * (size_t)E);
        kvl_fwd_logits(c, 1, logits);
    }
done:
    free(act);
    free(aidx);
    free(apos);
    free(tpos);
    free(tb);
    free(x_all);
    free(d_all);
    free(q_all);
    free(k_all);
    free(v_all);
    free(tmp);
    free(dev);
    free(keep);
    free(mass);
    return st;
}

kvl_status kvl_blend_compute(kvl_blend *b, const kvl_token *toks, int n, kvl_blend_chunk **out, kvl_err *err) {
    *out = NULL;
    kvl_ctx *c = b->c;
    const int N = b->n_base + n;
    if (N > c->p.n_ctx)
        return kvl_err_set(err, KVL_ERR_CTX_FULL, "blend: chunk of %d tokens after a base of %d exceeds the context %d",
                           n, b->n_base, c->p.n_ctx);
    kvl_blend_chunk *ch = kvl_blend_chunk_new(n, c->m->n_layer, b->x.kv, b->x.f32, b->n_base);
    kvl_token *all = malloc(sizeof(kvl_token) * (size_t)N);
    int *seg_of = malloc(sizeof(int) * (size_t)N);
    kvl_seq *s = NULL;
    kvl_status st = KVL_OK;
    if (!ch || !all || !seg_of) {
        st = kvl_err_set(err, KVL_ERR_NOMEM, "blend: out of memory for a chunk of %d tokens", n);
        goto done;
    }
    memcpy(ch->toks, toks, sizeof(kvl_token) * (size_t)n);
    ch->key = kvl_blend_key(b, toks, n);
    memcpy(all, b->base, sizeof(kvl_token) * (size_t)b->n_base);
    memcpy(all + b->n_base, toks, sizeof(kvl_token) * (size_t)n);
    for (int i = 0; i < N; i++) seg_of[i] = -1;
    if ((st = kvl_seq_create(c, &s))) {
        if (err != &c->err) *err = c->err;
        goto done;
    }
    kvl_seq_set_keep(s, -1); /* a chunk is computed whole: no eviction */
    const size_t need = kvl_kv_append_need(s->t, N), used = kvl_kv_pool_used(c->pool),
                 budget = kvl_kv_pool_budget(c->pool);
    if (need > budget - (used < budget ? used : budget)) {
        st = kvl_err_set(err, KVL_ERR_NOMEM, "blend: KV budget exhausted computing a chunk (%zu bytes needed, %zu of %zu in use)",
                         need, used, budget);
        goto done;
    }
    brun r = {.s = s, .tok = all, .N = N, .seg_of = seg_of, .segs = NULL, .full_all = 1,
              .sel_layer = c->m->n_layer, .ratio = 1, .capture = ch, .cap0 = b->n_base};
    st = run_layers(&r, NULL, err);
done:
    kvl_seq_free(s);
    free(all);
    free(seg_of);
    if (st) kvl_blend_chunk_free(ch);
    else *out = ch;
    return st;
}

kvl_status kvl_blend_put(kvl_blend *b, const kvl_token *toks, int n, int *stored) {
    if (stored) *stored = 0;
    if (!b) return KVL_ERR_ARG;
    kvl_ctx *c = b->c;
    kvl_err_clear(&c->err);
    if (!toks || n <= 0) return kvl_err_set(&c->err, KVL_ERR_ARG, "blend put: no tokens");
    for (int i = 0; i < n; i++)
        if (toks[i] < 0 || toks[i] >= c->m->n_vocab)
            return kvl_err_set(&c->err, KVL_ERR_ARG, "blend put: token id %d at index %d out of range", toks[i], i);
    kvl_blend_chunk *ch = NULL;
    int owned = 0, tier = 0;
    kvl_status st = kvl_blend_lookup(b, toks, n, &ch, &owned, &tier, &c->err);
    if (st) return st;
    if (ch) {
        kvl_blend_release(ch, owned);
        return KVL_OK;
    }
    if ((st = kvl_blend_compute(b, toks, n, &ch, &c->err))) return st;
    if ((st = kvl_blend_insert(b, ch, &owned, &c->err))) {
        kvl_blend_chunk_free(ch);
        return st;
    }
    kvl_blend_release(ch, owned);
    if (stored) *stored = 1;
    return KVL_OK;
}

kvl_status kvl_prefill_blend(kvl_seq *s, kvl_blend *b, const kvl_blend_seg *segs, int n_segs,
                             const kvl_blend_params *pin, float *logits, kvl_blend_stats *stats) {
    if (!s) return KVL_ERR_ARG;
    kvl_ctx *c = s->c;
    const kvl_model *m = c->m;
    if (c->freed) return KVL_ERR_ARG;
    kvl_err_clear(&c->err);
    kvl_blend_stats bs = {0};
    if (stats) *stats = bs;
    kvl_blend_params p;
    if (pin) p = *pin;
    else kvl_blend_params_default(&p);
    if (!b || !segs || n_segs <= 0) return kvl_err_set(&c->err, KVL_ERR_ARG, "blend: no store or no segments");
    if (!(p.ratio >= 0 && p.ratio <= 1) || p.full_layers < 0 || p.full_layers > m->n_layer)
        return kvl_err_set(&c->err, KVL_ERR_ARG, "blend: ratio %g outside [0, 1] or full_layers %d outside [0, %d]",
                           (double)p.ratio, p.full_layers, m->n_layer);
    if (p.select_query < 0 || p.select_query > 2)
        return kvl_err_set(&c->err, KVL_ERR_ARG, "blend: select_query %d is not 0, 1 or 2", p.select_query);
    {
        char *cfg = kvl_blend_config(c);
        if (!cfg) return kvl_err_set(&c->err, KVL_ERR_NOMEM, "blend: out of memory");
        const int same = !strcmp(cfg, b->config);
        if (!same) {
            kvl_err_set(&c->err, KVL_ERR_ARG,
                        "blend: the chunk store was made for another model or KV configuration (store '%.200s', "
                        "context '%.200s')",
                        b->config, cfg);
            free(cfg);
            return KVL_ERR_ARG;
        }
        free(cfg);
    }
    int64_t N64 = 0;
    for (int g = 0; g < n_segs; g++) {
        if (segs[g].n <= 0 || !segs[g].tokens)
            return kvl_err_set(&c->err, KVL_ERR_ARG, "blend: segment %d has no tokens", g);
        for (int i = 0; i < segs[g].n; i++)
            if (segs[g].tokens[i] < 0 || segs[g].tokens[i] >= m->n_vocab)
                return kvl_err_set(&c->err, KVL_ERR_ARG, "blend: token id %d at index %d of segment %d out of range",
                                   segs[g].tokens[i], i, g);
        if (segs[g].reuse && (int64_t)b->n_base + segs[g].n > c->p.n_ctx)
            return kvl_err_set(&c->err, KVL_ERR_CTX_FULL,
                               "blend: chunk %d of %d tokens after the base of %d exceeds the context length %d", g,
                               segs[g].n, b->n_base, c->p.n_ctx);
        N64 += segs[g].n;
    }
    if ((int64_t)s->pos + N64 > c->p.n_ctx)
        return kvl_err_set(&c->err, KVL_ERR_CTX_FULL,
                           "blend: spliced prompt of %lld tokens at position %d exceeds the context length %d",
                           (long long)N64, s->pos, c->p.n_ctx);
    const int N = (int)N64;
    const int evicting = kvl_kv_policy_evicting(c->pool);
    if (!evicting) {
        const size_t need = kvl_kv_append_need(s->t, N), used = kvl_kv_pool_used(c->pool),
                     budget = kvl_kv_pool_budget(c->pool);
        if (need > budget - (used < budget ? used : budget))
            return kvl_err_set(&c->err, KVL_ERR_NOMEM, "blend: KV budget exhausted (%zu bytes needed, %zu of %zu in use)",
                               need, used, budget);
    }
    bseg *bsg = calloc((size_t)n_segs, sizeof *bsg);
    int *seg_of = malloc(sizeof(int) * (size_t)N);
    kvl_token *tok = malloc(sizeof(kvl_token) * (size_t)N);
    float *cs = malloc(sizeof(float) * (size_t)n_segs * (size_t)m->head_dim);
    kvl_status st = KVL_OK;
    kvl_blend_reader *rd = NULL;
    if (!bsg || !seg_of || !tok || !cs) {
        st = kvl_err_set(&c->err, KVL_ERR_NOMEM, "blend: out of memory");
        goto done;
    }
    /* every lookup first: a bad chunk fails the call before anything is computed or stored
     * (a disk-tier chunk's head here, its layers' rows by the reader) */
    if ((st = kvl_blend_reader_new(b, p.pipeline, p.read_mbps, &rd, &c->err))) goto done;
    double t0 = now_ms();
    for (int g = 0, at = 0; g < n_segs; at += segs[g].n, g++) {
        bsg[g] = (bseg){.start = at, .n = segs[g].n, .reuse = segs[g].reuse != 0, .cs = cs + (size_t)g * m->head_dim};
        memcpy(tok + at, segs[g].tokens, sizeof(kvl_token) * (size_t)segs[g].n);
        for (int i = 0; i < segs[g].n; i++) seg_of[at + i] = bsg[g].reuse ? g : -1;
        if (!bsg[g].reuse) continue;
        int tier = 0;
        if ((st = kvl_blend_lookup_rd(b, rd, segs[g].tokens, segs[g].n, &bsg[g].ch, &bsg[g].owned, &tier, &c->err)))
            goto done;
        bs.ram_hits += tier == 1;
        bs.disk_hits += tier == 2;
        bs.remote_hits += tier == 3;
    }
    bs.ms_load = now_ms() - t0;
    /* serial: every layer read and verified now; pipelined: the I/O thread
     * starts (also overlapping the misses' computation) */
    if ((st = kvl_blend_reader_start(rd, &c->err))) goto done;
    t0 = now_ms();
    for (int g = 0; g < n_segs; g++) {
        if (!bsg[g].reuse || bsg[g].ch) continue;
        bs.misses++;
        int tier = 0;
        /* the same chunk twice in one prompt: the first miss stored it */
        if ((st = kvl_blend_lookup(b, segs[g].tokens, segs[g].n, &bsg[g].ch, &bsg[g].owned, &tier, &c->err))) goto done;
        if (bsg[g].ch) continue;
        kvl_blend_chunk *ch = NULL;
        if ((st = kvl_blend_compute(b, segs[g].tokens, segs[g].n, &ch, &c->err))) goto done;
        if ((st = kvl_blend_insert(b, ch, &bsg[g].owned, &c->err))) {
            kvl_blend_chunk_free(ch);
            goto done;
        }
        bsg[g].ch = ch;
    }
    bs.ms_miss = now_ms() - t0;
    t0 = now_ms();
    for (int g = 0; g < n_segs; g++)
        if (bsg[g].reuse) {
            bs.n_reused += bsg[g].n;
            kvl_cpu_rope_cs(bsg[g].cs, m->head_dim, s->pos + bsg[g].start - bsg[g].ch->base_pos, m->rope_freq);
        }
    if (kvl_seq_reserve_tokens(s, s->pos + N) != KVL_OK) {
        st = kvl_err_set(&c->err, KVL_ERR_NOMEM, "blend: out of memory for token ids");
        goto done;
    }
    if ((st = evicting ? kvl_kv_txn_begin_truncate(s->t, &c->err) : kvl_kv_txn_begin(s->t, &c->err))) goto done;
    const int reuse_only = p.ratio == 0 && p.full_layers == 0;
    brun r = {.s = s, .tok = tok, .N = N, .seg_of = seg_of, .segs = bsg, .full_all = !reuse_only,
              .sel_layer = p.full_layers, .ratio = p.ratio, .select_k = p.select_k != 0,
              .select_query = p.select_query, .rd = kvl_blend_reader_count(rd) ? rd : NULL};
    st = run_layers(&r, logits, &c->err);
    if (st) {
        kvl_kv_txn_rollback(s->t);
        goto done;
    }
    kvl_kv_txn_commit(s->t);
    memcpy(s->toks + s->pos, tok, sizeof(kvl_token) * (size_t)N);
    s->pos += N;
    bs.n_tokens = N;
    bs.n_selected = r.n_selected;
    bs.ms_blend = now_ms() - t0;
done:
    if (bsg)
        for (int g = 0; g < n_segs; g++) kvl_blend_release(bsg[g].ch, bsg[g].owned);
    if (rd) { /* joined; its chunks reach the RAM tier only when the call succeeded and every layer verified */
        kvl_blend_reader_stats rs;
        kvl_blend_reader_free(rd, st == KVL_OK, &rs);
        bs.ms_read = rs.ms_busy;
        bs.ms_wait = rs.ms_wait;
        bs.bytes_read = rs.bytes;
    }
    if (stats && !st) *stats = bs;
    free(bsg);
    free(seg_of);
    free(tok);
    free(cs);
    return st;
}
