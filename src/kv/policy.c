/* The eviction framework (see policy.h): policy registry and spec parsing,
 * per-sequence state, budget resolution and the split over layers, the
 * kept-set selection (sinks + recent + top scores, per list or pooled over
 * a layer's kv-heads) and the hooks the forward pass calls around each
 * layer. The "full" policy keeps everything and collects nothing. */
#include "kv/kv_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void full_defaults(kvl_policy_cfg *c) { (void)c; }
static const kvl_policy_ops policy_full = {"full", "keep every token (no eviction, no statistics)", "", 0, 0,
                                           full_defaults, NULL, NULL, NULL};

static const kvl_policy_ops *const policies[] = {&policy_full,          &kvl_policy_streaming, &kvl_policy_h2o,
                                                 &kvl_policy_tova,      &kvl_policy_snapkv,    &kvl_policy_pyramidkv,
                                                 &kvl_policy_veda,      &kvl_policy_cake};
#define N_POLICIES ((int)(sizeof policies / sizeof policies[0]))

const kvl_policy_ops *kvl_policy_get(int i) { return i >= 0 && i < N_POLICIES ? policies[i] : NULL; }

const kvl_policy_ops *kvl_policy_find(const char *name) {
    if (!name || !name[0]) return &policy_full;
    for (int i = 0; i < N_POLICIES; i++)
        if (strcmp(policies[i]->name, name) == 0) return policies[i];
    return NULL;
}

const char *kvl_policy_list(void) { return "full,streaming,h2o,tova,snapkv,pyramidkv,veda,cake"; }

/* ---- spec parsing ------------------------------------------------------------ */

static int has_key(const char *list, const char *key) {
    size_t n = strlen(key);
    for (const char *p = list; *p;) {
        const char *c = strchr(p, ',');
        size_t l = c ? (size_t)(c - p) : strlen(p);
        if (l == n && strncmp(p, key, n) == 0) return 1;
        if (!c) break;
        p = c + 1;
    }
    return 0;
}

static int parse_num(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}

kvl_status kvl_policy_parse(const char *spec, kvl_policy_cfg *c, kvl_err *err) {
    memset(c, 0, sizeof *c);
    if (!spec) spec = "";
    char buf[160];
    if (strlen(spec) >= sizeof buf) return kvl_err_set(err, KVL_ERR_ARG, "KV policy spec too long");
    snprintf(buf, sizeof buf, "%s", spec);
    char *colon = strchr(buf, ':');
    if (colon) *colon = 0;
    const kvl_policy_ops *ops = kvl_policy_find(buf);
    if (!ops) return kvl_err_set(err, KVL_ERR_ARG, "unknown KV policy '%s' (have: %s)", buf, kvl_policy_list());
    c->ops = ops;
    c->sink = 0;
    c->recent = 0;
    c->window = 32;
    c->pool = 1;
    c->slack = 32;
    c->beta = 20;
    c->gamma = 200;
    c->tau1 = c->tau2 = 1;
    c->vote_a = 1;
    c->vote_b = 0.5f;
    ops->defaults(c);
    for (char *p = colon ? colon + 1 : NULL; p && *p;) {
        char *comma = strchr(p, ',');
        if (comma) *comma = 0;
        char *eq = strchr(p, '=');
        if (!eq || eq == p || !eq[1])
            return kvl_err_set(err, KVL_ERR_ARG, "KV policy '%s': expected key=value, got '%s'", ops->name, p);
        *eq = 0;
        const char *k = p, *v = eq + 1;
        if (!has_key(ops->params, k))
            return kvl_err_set(err, KVL_ERR_ARG, "KV policy '%s': unknown parameter '%s' (takes: %s)", ops->name, k,
                               ops->params[0] ? ops->params : "none");
        double x = 0;
        int bad = 0, integer = 1;
        if (!strcmp(k, "sink")) bad = parse_num(v, 0, 1 << 20, &x), c->sink = (int)x;
        else if (!strcmp(k, "recent")) bad = parse_num(v, -1, 1 << 20, &x), c->recent = (int)x;
        else if (!strcmp(k, "window")) bad = parse_num(v, 1, 4096, &x), c->window = (int)x;
        else if (!strcmp(k, "pool")) bad = parse_num(v, 1, 63, &x) || !((int)x & 1), c->pool = (int)x;
        else if (!strcmp(k, "slack")) bad = parse_num(v, 0, 1 << 16, &x), c->slack = (int)x;
        else if (!strcmp(k, "headwise")) bad = parse_num(v, 0, 1, &x), c->headwise = (int)x;
        else if (!strcmp(k, "norm")) bad = parse_num(v, 0, 1, &x), c->norm = (int)x;
        else if (!strcmp(k, "wvote")) bad = parse_num(v, 0, 1, &x), c->wvote = (int)x;
        else {
            integer = 0;
            if (!strcmp(k, "beta")) bad = parse_num(v, 1, 1e6, &x), c->beta = (float)x;
            else if (!strcmp(k, "gamma")) bad = parse_num(v, 0, 1e9, &x), c->gamma = (float)x;
            else if (!strcmp(k, "tau1")) bad = parse_num(v, 1e-3, 1e3, &x), c->tau1 = (float)x;
            else if (!strcmp(k, "tau2")) bad = parse_num(v, 1e-3, 1e3, &x), c->tau2 = (float)x;
            else if (!strcmp(k, "a")) bad = parse_num(v, -1e3, 1e3, &x), c->vote_a = (float)x;
            else if (!strcmp(k, "b")) bad = parse_num(v, -1e3, 1e3, &x), c->vote_b = (float)x;
        }
        if (bad || (integer && x != floor(x)))
            return kvl_err_set(err, KVL_ERR_ARG, "KV policy '%s': bad value '%s' for %s", ops->name, v, k);
        p = comma ? comma + 1 : NULL;
    }
    snprintf(c->spec, sizeof c->spec, "%s", spec[0] ? spec : "full");
    return KVL_OK;
}

/* ---- score helpers ------------------------------------------------------------ */

void kvl_policy_group_sum(const kvl_kv_table *t, int layer, int head, int acc, int len, float *out) {
    memset(out, 0, (size_t)len * sizeof *out);
    for (int g = 0; g < t->group; g++) {
        const float *a = kvl_kv_table_stat(t, layer, head * t->group + g, acc);
        if (!a) continue;
        for (int i = 0; i < len; i++) out[i] += a[i];
    }
}

void kvl_policy_maxpool(const float *x, int len, int k, float *out) {
    const int r = k / 2;
    for (int i = 0; i < len; i++) {
        float m = x[i];
        for (int j = i - r < 0 ? 0 : i - r; j <= i + r && j < len; j++) m = x[j] > m ? x[j] : m;
        out[i] = m;
    }
}

void kvl_policy_avgpool(const float *x, int len, int k, float *out) {
    const int r = k / 2;
    for (int i = 0; i < len; i++) { /* zero padding, as torch's avg_pool1d(padding=k/2) */
        float s = 0;
        for (int j = i - r < 0 ? 0 : i - r; j <= i + r && j < len; j++) s += x[j];
        out[i] = s / (float)k;
    }
}

/* ---- per-sequence state --------------------------------------------------------------- */

static void pseq_free(kvl_policy_seq *ps, int n_lists) {
    if (!ps) return;
    if (ps->kept_score)
        for (int i = 0; i < n_lists; i++) free(ps->kept_score[i]);
    free(ps->kept_score);
    free(ps->kept_len);
    free(ps->kept_cap);
    free(ps->kept_valid);
    free(ps->pref);
    free(ps->budget);
    free(ps->evicted);
    free(ps->score);
    free(ps->idx);
    free(ps->drop);
    free(ps->sel);
    free(ps);
}

void kvi_policy_free(kvl_kv_table *t) {
    pseq_free(t->pol, kvi_n_lists(t->pool));
    t->pol = NULL;
}

kvl_status kvi_policy_init(kvl_kv_table *t, const kvl_kv_table *src, kvl_err *err) {
    const kvl_kv_pool *p = t->pool;
    const kvl_policy_cfg *c = &p->pol;
    if (c->ops == &policy_full) return KVL_OK;
    const int nl = p->cfg.n_layer;
    kvl_policy_seq *ps = calloc(1, sizeof *ps);
    if (ps) {
        ps->pref = calloc((size_t)nl, sizeof *ps->pref);
        ps->budget = calloc((size_t)nl, sizeof *ps->budget);
        ps->evicted = calloc((size_t)nl, 1);
        ps->kept_score = calloc((size_t)kvi_n_lists(p), sizeof *ps->kept_score);
        ps->kept_len = calloc((size_t)kvi_n_lists(p), sizeof *ps->kept_len);
        ps->kept_cap = calloc((size_t)kvi_n_lists(p), sizeof *ps->kept_cap);
        ps->kept_valid = calloc((size_t)nl, 1);
    }
    if (!ps || !ps->pref || !ps->budget || !ps->evicted || !ps->kept_score || !ps->kept_len || !ps->kept_cap ||
        !ps->kept_valid) {
        pseq_free(ps, kvi_n_lists(p));
        return kvl_err_set(err, KVL_ERR_NOMEM, "kv policy: out of memory");
    }
    ps->keep_override = -1;
    ps->last_budget = -1;
    if (src && src->pol) {
        ps->last_budget = src->pol->last_budget;
        ps->keep_override = src->pol->keep_override;
        memcpy(ps->pref, src->pol->pref, (size_t)nl * sizeof *ps->pref);
        memcpy(ps->budget, src->pol->budget, (size_t)nl * sizeof *ps->budget);
        memcpy(ps->evicted, src->pol->evicted, (size_t)nl);
    }
    t->pol = ps;
    if (!src && c->ops->stats) {
        kvl_kv_table_stats_params(t, c->window, c->vote_a, c->vote_b);
        kvl_kv_table_stats_vote_window(t, c->wvote);
        kvl_status s = kvl_kv_table_stats_enable(t, c->ops->stats, err);
        if (s) return s;
    }
    return KVL_OK;
}

/* Scratch for lists of up to n tokens (x n_head_kv for head-wise selection). */
typedef struct cand {
    float s;
    int i;
    int h;
} cand;

static kvl_status pseq_scratch(kvl_policy_seq *ps, int n, int hkv, kvl_err *err) {
    const int need = n * hkv;
    if (need <= ps->cap) return KVL_OK;
    int cap = ps->cap ? ps->cap : 256;
    while (cap < need) cap *= 2;
    float *s = realloc(ps->score, 3 * (size_t)cap * sizeof *s);
    if (s) ps->score = s;
    int *ix = realloc(ps->idx, (size_t)cap * sizeof *ix);
    if (ix) ps->idx = ix;
    int *d = realloc(ps->drop, (size_t)cap * sizeof *d);
    if (d) ps->drop = d;
    cand *c = realloc(ps->sel, (size_t)cap * sizeof *c);
    if (c) ps->sel = c;
    if (!s || !ix || !d || !c) return kvl_err_set(err, KVL_ERR_NOMEM, "kv policy: out of memory for scratch");
    ps->cap = cap;
    return KVL_OK;
}

/* ---- budgets ------------------------------------------------------------------ */

int kvl_kv_policy_evicting(const kvl_kv_pool *p) { return p->pol.ops && p->pol.ops != &policy_full; }

void kvl_kv_policy_set_keep(kvl_kv_table *t, int keep) {
    if (t->pol) t->pol->keep_override = keep < 0 ? -2 : keep;
}

/* Budget per list (average over lists) at sequence length pos_end, or -1 (none). */
static int avg_budget(const kvl_kv_table *t, int pos_end) {
    const kvl_policy_cfg *c = &t->pool->pol;
    const kvl_policy_seq *ps = t->pol;
    if (ps->keep_override == -2) return -1;
    if (ps->keep_override >= 0) return ps->keep_override;
    if (c->keep > 0) return c->keep;
    if (c->keep_frac > 0) {
        const double b = ceil((double)c->keep_frac * pos_end);
        return b < 1 ? 1 : (int)b;
    }
    return -1;
}

static int layer_len(const kvl_kv_table *t, int layer) {
    int m = 0;
    for (int h = 0; h < t->pool->cfg.n_head_kv; h++) {
        const int l = kvi_list(t, layer, h)->len;
        m = l > m ? l : m;
    }
    return m;
}

/* Split `total` tokens over layers [0, n) by weights w, each capped at its
 * length len[i] (the excess goes to the others, in proportion); budget[i]. */
static void split(const double *w, const int *len, int n, double total, int *budget) {
    double left = total;
    uint8_t capped[256] = {0};
    for (int round = 0; round < n + 1; round++) {
        double ws = 0;
        for (int i = 0; i < n; i++)
            if (!capped[i]) ws += w[i];
        int changed = 0;
        for (int i = 0; i < n; i++) {
            if (capped[i]) continue;
            const double b = ws > 0 ? left * w[i] / ws : left / n;
            if (b >= len[i]) {
                capped[i] = 1;
                budget[i] = len[i];
                left -= len[i];
                changed = 1;
            }
        }
        if (!changed) {
            for (int i = 0; i < n; i++)
                if (!capped[i]) {
                    const double b = ws > 0 ? left * w[i] / ws : left / n;
                    budget[i] = b < 1 ? 1 : (int)floor(b);
                }
            return;
        }
    }
}

/* ---- eviction of one layer ---------------------------------------------------------- */

static int cand_cmp(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1; /* higher score first */
    if (x->i != y->i) return x->i > y->i ? -1 : 1; /* ties: newer first */
    return x->h - y->h;
}

static int int_cmp(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

/* Remember list li's scores of the tokens kept after dropping drop [nd] (increasing). */
static kvl_status keep_scores(kvl_policy_seq *ps, int li, const float *score, int n, const int *drop, int nd,
                              kvl_err *err) {
    const int kept = n - nd;
    if (kept > ps->kept_cap[li]) {
        int cap = ps->kept_cap[li] ? ps->kept_cap[li] : 64;
        while (cap < kept) cap *= 2;
        float *a = realloc(ps->kept_score[li], (size_t)cap * sizeof *a);
        if (!a) return kvl_err_set(err, KVL_ERR_NOMEM, "kv policy: out of memory");
        ps->kept_score[li] = a;
        ps->kept_cap[li] = cap;
    }
    for (int i = 0, w = 0, d = 0; i < n; i++) {
        if (d < nd && drop[d] == i) {
            d++;
            continue;
        }
        ps->kept_score[li][w++] = score[i];
    }
    ps->kept_len[li] = kept;
    return KVL_OK;
}

/* Evict (layer)'s lists down to `budget` tokens each (head-wise: budget x
 * n_head_kv over the layer). */
static kvl_status evict_layer(kvl_kv_table *t, int layer, int budget, kvl_err *err) {
    const kvl_kv_pool *p = t->pool;
    const kvl_policy_cfg *c = &p->pol;
    kvl_policy_seq *ps = t->pol;
    const int Hkv = p->cfg.n_head_kv;
    const int len = layer_len(t, layer);
    if (budget < 1) budget = 1;
    kvl_status s = pseq_scratch(ps, len, Hkv, err);
    if (s) return s;
    const int recent = c->recent == -1 ? budget / 2 : c->recent == -2 ? c->window : c->recent;
    cand *sel = ps->sel;
    int nsel = 0, keep_free = 0;
    for (int h = 0; h < Hkv; h++) {
        const int n = kvi_list(t, layer, h)->len;
        int lo = c->sink < n ? c->sink : n;
        if (lo > budget) lo = budget;
        int r = recent < budget - lo ? recent : budget - lo;
        int hi = n - r > lo ? n - r : lo;
        float *score = ps->score, *tmp = ps->score + ps->cap;
        const int li = layer * Hkv + h;
        if (ps->kept_valid[layer] && ps->kept_len[li] == n) memcpy(score, ps->kept_score[li], (size_t)n * sizeof *score);
        else if (c->ops->score) c->ops->score(c, t, layer, h, n, score, tmp);
        else
            for (int i = 0; i < n; i++) score[i] = (float)i;
        if (c->headwise) {
            keep_free += budget - lo - (n - hi);
            for (int i = lo; i < hi; i++) sel[nsel++] = (cand){score[i], i, h};
        } else {
            if (n <= budget) {
                ps->kept_len[li] = -1; /* not ranked now: a re-eviction scores afresh */
                continue;
            }
            nsel = 0;
            for (int i = lo; i < hi; i++) sel[nsel++] = (cand){score[i], i, h};
            const int k = budget - lo - (n - hi); /* middle tokens kept */
            qsort(sel, (size_t)nsel, sizeof *sel, cand_cmp);
            int nd = 0;
            for (int j = k; j < nsel; j++) ps->drop[nd++] = sel[j].i;
            qsort(ps->drop, (size_t)nd, sizeof(int), int_cmp);
            if (nd && (s = kvl_kv_drop(t, layer, h, ps->drop, nd, err))) return s;
            if ((s = keep_scores(ps, li, score, n, ps->drop, nd, err))) return s;
            ps->n_dropped += nd;
            ps->n_events += nd > 0;
            nsel = 0;
        }
    }
    if (c->headwise && nsel > keep_free) {
        /* one pool for the layer: the highest scores across its kv-heads stay */
        qsort(sel, (size_t)nsel, sizeof *sel, cand_cmp);
        for (int h = 0; h < Hkv; h++) {
            int nd = 0;
            for (int j = keep_free > 0 ? keep_free : 0; j < nsel; j++)
                if (sel[j].h == h) ps->drop[nd++] = sel[j].i;
            qsort(ps->drop, (size_t)nd, sizeof(int), int_cmp);
            if (nd && (s = kvl_kv_drop(t, layer, h, ps->drop, nd, err))) return s;
            ps->n_dropped += nd;
            ps->n_events += nd > 0;
        }
    }
    ps->evicted[layer] = 1;
    ps->kept_valid[layer] = !c->headwise;
    return KVL_OK;
}

/* ---- hooks ------------------------------------------------------------------------ */

kvl_status kvl_kv_policy_before(kvl_kv_table *t, int layer, int n_tok, kvl_err *err) {
    kvl_kv_pool *p = t->pool;
    kvl_policy_seq *ps = t->pol;
    if (!ps) return KVL_OK;
    ps->kept_valid[layer] = 0; /* this call appends: stored scores no longer cover the list */
    if (ps->evicted[layer]) {
        kvl_kv_table_stats_reset_layer(t, layer,
                                       1u << KVL_KV_ACC_WSUM | 1u << KVL_KV_ACC_WSQ | 1u << KVL_KV_ACC_WENT);
        ps->evicted[layer] = 0;
    }
    /* make room: the pool's byte budget must take this layer's rows */
    const int Hkv = p->cfg.n_head_kv, P = p->P;
    const size_t pb = p->cls[p->layers[layer].open_cls].page_bytes;
    for (int tries = 0; tries < 64; tries++) {
        size_t need = (size_t)Hkv * (size_t)kvi_ceil_div(n_tok, P) * pb + (size_t)Hkv * pb;
        pthread_mutex_lock(&p->mu);
        const size_t used = p->used_bytes, budget = p->cfg.budget_bytes;
        pthread_mutex_unlock(&p->mu);
        if (used + need <= budget) return KVL_OK;
        const size_t deficit = used + need - budget;
        const int pages = (int)((deficit + (size_t)Hkv * pb - 1) / ((size_t)Hkv * pb));
        /* this layer first, else the longest one */
        int victim = layer, vlen = layer_len(t, layer);
        if (vlen <= p->pol.sink + P)
            for (int l = 0; l < p->cfg.n_layer; l++)
                if (layer_len(t, l) > vlen) victim = l, vlen = layer_len(t, l);
        const int target = vlen - pages * P;
        if (vlen <= p->pol.sink + 1 || target < 1)
            return kvl_err_set(err, KVL_ERR_NOMEM,
                               "kv policy: the KV budget (%zu bytes) cannot hold %d more tokens of layer %d "
                               "(%zu bytes in use); raise --kv-budget or lower --kv-keep",
                               budget, n_tok, layer, used);
        kvl_status s = evict_layer(t, victim, target, err);
        if (s) return s;
    }
    return kvl_err_set(err, KVL_ERR_NOMEM, "kv policy: could not make room in the KV budget");
}

kvl_status kvl_kv_policy_after(kvl_kv_table *t, int layer, int n_tok, int pos_end, kvl_err *err) {
    kvl_kv_pool *p = t->pool;
    kvl_policy_seq *ps = t->pol;
    if (!ps) return KVL_OK;
    const kvl_policy_cfg *c = &p->pol;
    const int nl = p->cfg.n_layer;
    if (c->ops->observe) c->ops->observe(c, ps, t, layer, n_tok);
    const int B = avg_budget(t, pos_end);
    ps->last_budget = B;
    if (B < 0) return KVL_OK;
    const int last = layer == nl - 1;
    if (!c->ops->weights) { /* uniform */
        ps->budget[layer] = B;
        if (layer_len(t, layer) > B + c->slack) return evict_layer(t, layer, B, err);
        return KVL_OK;
    }
    double w[256] = {0};
    int len[256] = {0}, bud[256] = {0};
    c->ops->weights(c, ps, nl, B, w);
    if (!c->ops->cascade) {
        /* fixed shares of the whole budget (PyramidKV) */
        for (int l = 0; l < nl; l++) len[l] = 1 << 30;
        split(w, len, nl, (double)B * nl, bud);
        ps->budget[layer] = bud[layer];
        if (layer_len(t, layer) > bud[layer] + c->slack) return evict_layer(t, layer, bud[layer], err);
        return KVL_OK;
    }
    /* cascade (CAKE): layers 0..layer share what the later layers leave */
    double total = (double)B * nl;
    for (int l = layer + 1; l < nl; l++) total -= layer_len(t, l);
    for (int l = 0; l <= layer; l++) len[l] = layer_len(t, l);
    split(w, len, layer + 1, total, bud);
    for (int l = 0; l <= layer; l++) {
        ps->budget[l] = bud[l];
        if (len[l] > bud[l] + (last ? 0 : c->slack)) {
            kvl_status s = evict_layer(t, l, bud[l], err);
            if (s) return s;
        }
    }
    return KVL_OK;
}

void kvl_kv_policy_info(const kvl_kv_table *t, kvl_kv_policy_stats *st) {
    memset(st, 0, sizeof *st);
    st->name = t->pool->pol.ops ? t->pool->pol.ops->name : "full";
    st->spec = t->pool->pol.spec[0] ? t->pool->pol.spec : "full";
    st->stats_bytes = kvl_kv_table_stats_bytes(t);
    if (!t->pol) return;
    st->tokens_dropped = t->pol->n_dropped;
    st->drop_calls = t->pol->n_events;
    st->state_bytes = sizeof *t->pol + (size_t)t->pool->cfg.n_layer * (sizeof(double) + sizeof(int) + 1) +
                      (size_t)t->pol->cap * (3 * sizeof(float) + 2 * sizeof(int) + sizeof(cand));
    st->budget = t->pol->last_budget;
}

const int *kvl_kv_policy_budgets(const kvl_kv_table *t) { return t->pol ? t->pol->budget : NULL; }
