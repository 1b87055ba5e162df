/* KV codec error per layer (kvl_kv_error, `kvlite eval kv-error`): an f32
 * reference pass captures each layer's K/V rows and the last queries; the
 * rows are re-encoded with the codecs under test into a second table and
 * rows and attention outputs are compared, so a quality loss can be traced
 * to the layer (and side) that causes it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "kv/kv.h"

typedef struct qcap {
    int n_query, first, stride; /* queries of tokens >= first; stride = n_head*hd */
    float *q;                   /* [n_layer][n_query][n_head*hd] */
    int32_t *pos;               /* [n_query] */
} qcap;

static void capture(void *u, int layer, int n_tok, const int32_t *pos, const float *q) {
    qcap *c = u;
    for (int t = 0; t < n_tok; t++) {
        const int i = pos[t] - c->first;
        if (i < 0 || i >= c->n_query) continue;
        memcpy(c->q + ((size_t)layer * c->n_query + i) * c->stride, q + (size_t)t * c->stride,
               (size_t)c->stride * sizeof(float));
        c->pos[i] = pos[t];
    }
}

static void set_err(char *buf, size_t len, const char *msg) {
    if (buf && len) snprintf(buf, len, "%s", msg);
}

kvl_status kvl_kv_error(const kvl_model *m, const kvl_ctx_params *pin, const kvl_token *tokens, int n, int n_query,
                        kvl_kv_error_layer *out, char *errbuf, size_t err_len) {
    if (!m || !pin || !tokens || !out || n <= 0 || n_query <= 0) return KVL_ERR_ARG;
    if (n_query > n) n_query = n;
    const int NL = m->n_layer, Hkv = m->n_head_kv, NH = m->n_head, D = m->head_dim;
    kvl_ctx_params p = *pin;
    p.kv_codec = "f32";
    p.kv_codec_v = NULL;
    p.kv_layers = NULL;
    p.kv_policy = "full";
    p.n_ctx = n;
    p.kv_budget_bytes = 0;
    kvl_ctx *c = NULL;
    kvl_seq *s = NULL;
    kvl_kv_pool *pool = NULL;
    kvl_kv_table *t = NULL;
    kvl_err e;
    kvl_err_clear(&e);
    kvl_status st = kvl_ctx_create(m, &p, &c, errbuf, err_len);
    if (st) return st;
    qcap cap = {.n_query = n_query, .first = n - n_query, .stride = NH * D};
    cap.q = calloc((size_t)NL * n_query * cap.stride, sizeof(float));
    cap.pos = calloc((size_t)n_query, sizeof(int32_t));
    float *k = malloc((size_t)n * Hkv * D * sizeof(float)), *v = malloc((size_t)n * Hkv * D * sizeof(float));
    int32_t *pos = malloc((size_t)n * sizeof(int32_t));
    float *o_ref = malloc((size_t)n_query * cap.stride * sizeof(float));
    float *o_cod = malloc((size_t)n_query * cap.stride * sizeof(float));
    float *x = malloc((size_t)2 * D * sizeof(float));
    void *scratch = NULL;
    if (!cap.q || !cap.pos || !k || !v || !pos || !o_ref || !o_cod || !x) {
        st = KVL_ERR_NOMEM;
        set_err(errbuf, err_len, "kv-error: out of memory");
        goto done;
    }
    c->q_hook = capture;
    c->q_hook_user = &cap;
    if ((st = kvl_seq_create(c, &s)) || (st = kvl_prefill(s, tokens, n, NULL, NULL))) {
        set_err(errbuf, err_len, kvl_ctx_error(c));
        goto done;
    }
    c->q_hook = NULL;
    /* the codecs under test, in a pool of their own */
    kvl_kv_config kc = {.n_layer = NL, .n_head_kv = Hkv, .head_dim = D, .page_tokens = c->p.page_tokens,
                        .budget_bytes = (size_t)1 << 40, .policy = "full", .n_head = NH,
                        .scalar_only = pin->no_simd != 0, .k_spec = pin->kv_codec ? pin->kv_codec : "f16",
                        .v_spec = pin->kv_codec_v, .layer_spec = pin->kv_layers, .model_path = m->path};
    if ((st = kvl_kv_pool_create(&kc, &pool, &e)) || (st = kvl_kv_table_create(pool, &t, &e))) {
        set_err(errbuf, err_len, e.msg);
        goto done;
    }
    scratch = aligned_alloc(64, (kvl_kv_attend_scratch_bytes(pool) + 63) / 64 * 64);
    if (!scratch) {
        st = KVL_ERR_NOMEM;
        set_err(errbuf, err_len, "kv-error: out of memory");
        goto done;
    }
    const float scale = 1.0f / sqrtf((float)D);
    for (int l = 0; l < NL; l++) {
        for (int i = 0; i < n; i++) pos[i] = i; /* a fresh sequence: positions 0..n-1 */
        for (int h = 0; h < Hkv; h++)
            for (int i = 0; i < n; i++)
                kvl_kv_table_decode(s->t, l, h, i, k + ((size_t)i * Hkv + h) * D, v + ((size_t)i * Hkv + h) * D);
        /* codecs that learn from queries (SQuat) see the captured ones first */
        kvl_kv_observe(t, l, n_query, cap.q + (size_t)l * n_query * cap.stride, NH);
        if ((st = kvl_kv_append(t, l, n, pos, k, v, &e)) || (st = kvl_kv_seal(t, l, &e))) {
            set_err(errbuf, err_len, e.msg);
            goto done;
        }
        double ek = 0, nk = 0, ev = 0, nv = 0;
        for (int h = 0; h < Hkv; h++)
            for (int i = 0; i < n; i++) {
                kvl_kv_table_decode(t, l, h, i, x, x + D);
                const float *kr = k + ((size_t)i * Hkv + h) * D, *vr = v + ((size_t)i * Hkv + h) * D;
                for (int j = 0; j < D; j++) {
                    ek += (double)(x[j] - kr[j]) * (x[j] - kr[j]), nk += (double)kr[j] * kr[j];
                    ev += (double)(x[D + j] - vr[j]) * (x[D + j] - vr[j]), nv += (double)vr[j] * vr[j];
                }
            }
        const float *q = cap.q + (size_t)l * n_query * cap.stride;
        kvl_kv_attend(s->t, l, n_query, q, cap.pos, NH, scale, o_ref, scratch, 0, 1);
        kvl_kv_attend(t, l, n_query, q, cap.pos, NH, scale, o_cod, scratch, 0, 1);
        double ea = 0;
        for (int qi = 0; qi < n_query * NH; qi++) {
            double d = 0, r = 0;
            for (int j = 0; j < D; j++) {
                const double a = o_ref[(size_t)qi * D + j], b = o_cod[(size_t)qi * D + j];
                d += (a - b) * (a - b), r += a * a;
            }
            ea += r > 0 ? sqrt(d / r) : 0;
        }
        out[l].k_rel = nk > 0 ? ek / nk : 0;
        out[l].v_rel = nv > 0 ? ev / nv : 0;
        out[l].attn_rel = ea / (double)(n_query * NH);
        size_t kb, vb;
        kvl_kv_table_layer_codec_bytes(t, l, &kb, &vb);
        out[l].k_bits = 8.0 * (double)kb / ((double)n * Hkv * D);
        out[l].v_bits = 8.0 * (double)vb / ((double)n * Hkv * D);
    }
done:
    free(scratch);
    kvl_kv_table_free(t);
    kvl_kv_pool_free(pool);
    kvl_seq_free(s);
    kvl_ctx_free(c);
    free(cap.q);
    free(cap.pos);
    free(k);
    free(v);
    free(pos);
    free(o_ref);
    free(o_cod);
    free(x);
    return st;
}
