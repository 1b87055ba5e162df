/* Model loading: reads hyper-parameters for the llama and qwen2
 * architectures, checks every weight's presence, type and shape, and builds
 * the RoPE frequency table (theta, linear scaling, rope_freqs factors). */
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int get_hp_u32(const kvl_gguf *g, const char *arch, const char *suffix, uint32_t *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return kvl_gguf_get_u32(g, key, out);
}

static int get_hp_f32(const kvl_gguf *g, const char *arch, const char *suffix, float *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return kvl_gguf_get_f32(g, key, out);
}

/* Float vector [n] from a tensor of a float type: a pointer into the map for
 * F32, a converted copy otherwise. */
static kvl_status load_vec(kvl_model *m, const char *name, int64_t n, int required, const float **out,
                           kvl_err *err) {
    *out = NULL;
    const kvl_gguf_tensor *t = kvl_gguf_find_tensor(m->gguf, name);
    if (!t) {
        if (!required) return KVL_OK;
        return kvl_err_set(err, KVL_ERR_FORMAT, "model: missing tensor '%s'", name);
    }
    int64_t count = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    if (count != n)
        return kvl_err_set(err, KVL_ERR_FORMAT, "model: tensor '%s' has %lld elements, expected %lld", name,
                           (long long)count, (long long)n);
    if (t->type == KVL_TYPE_F32) {
        *out = t->data;
        return KVL_OK;
    }
    if (t->type != KVL_TYPE_F16 && t->type != KVL_TYPE_BF16)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "model: tensor '%s' has type %s; expected f32/f16/bf16",
                           name, kvl_type_name(t->type) ? kvl_type_name(t->type) : "?");
    if (m->owned_len + (size_t)n > m->owned_cap)
        return kvl_err_set(err, KVL_ERR_INTERNAL, "model: vector storage exhausted");
    float *dst = m->owned + m->owned_len;
    kvl_dequant_row_ref(t->type, t->data, dst, n);
    m->owned_len += (size_t)n;
    *out = dst;
    return KVL_OK;
}

static kvl_status load_mat(kvl_model *m, const char *name, int64_t rows, int64_t cols, kvl_weight *w,
                           kvl_err *err) {
    const kvl_gguf_tensor *t = kvl_gguf_find_tensor(m->gguf, name);
    if (!t) return kvl_err_set(err, KVL_ERR_FORMAT, "model: missing tensor '%s'", name);
    if (t->n_dims != 2 || t->ne[0] != cols || t->ne[1] != rows)
        return kvl_err_set(err, KVL_ERR_FORMAT,
                           "model: tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]", name,
                           (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3],
                           (long long)cols, (long long)rows);
    if (!kvl_type_supported(t->type))
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "model: tensor '%s' has unsupported type %s (%d)", name,
                           kvl_type_name(t->type) ? kvl_type_name(t->type) : "unknown", (int)t->type);
    if (cols % kvl_type_block_elems(t->type) != 0)
        return kvl_err_set(err, KVL_ERR_FORMAT, "model: tensor '%s' row length %lld not a multiple of the %s block",
                           name, (long long)cols, kvl_type_name(t->type));
    w->type = t->type;
    w->data = t->data;
    w->rows = rows;
    w->cols = cols;
    return KVL_OK;
}

static void model_free(kvl_model *m) {
    if (!m) return;
    kvl_tok_free(m->tok);
    kvl_gguf_free(m->gguf);
    free(m->layers);
    free(m->owned);
    free(m->rope_freq);
    free(m->path);
    free(m);
}

void kvl_model_free(kvl_model *m) { model_free(m); }

static kvl_status load_hparams(kvl_model *m, kvl_err *err) {
    const kvl_gguf *g = m->gguf;
    const char *s;
    size_t len;
    if (!kvl_gguf_get_str(g, "general.architecture", &s, &len))
        return kvl_err_set(err, KVL_ERR_FORMAT, "model: missing general.architecture");
    if (len >= sizeof m->arch || (!(len == 5 && !memcmp(s, "llama", 5)) && !(len == 5 && !memcmp(s, "qwen2", 5))))
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "model: unsupported architecture '%.*s' (supported: llama, qwen2)",
                           (int)(len > 64 ? 64 : len), s);
    memcpy(m->arch, s, len);
    m->arch[len] = 0;
    if (kvl_gguf_get_str(g, "general.name", &s, &len)) {
        if (len >= sizeof m->name) len = sizeof m->name - 1;
        memcpy(m->name, s, len);
        m->name[len] = 0;
    }
    m->rope_type = strcmp(m->arch, "qwen2") == 0 ? KVL_ROPE_NEOX : KVL_ROPE_NORM;

    uint32_t v;
    const char *a = m->arch;
#define REQ(suffix, field)                                                                                 \
    do {                                                                                                   \
        if (!get_hp_u32(g, a, suffix, &v) || v == 0 || v > (1u << 24))                                     \
            return kvl_err_set(err, KVL_ERR_FORMAT, "model: missing or invalid %s.%s", a, suffix);         \
        m->field = (int)v;                                                                                 \
    } while (0)
    REQ("block_count", n_layer);
    REQ("embedding_length", n_embd);
    REQ("feed_forward_length", n_ff);
    REQ("attention.head_count", n_head);
    REQ("context_length", n_ctx_train);
#undef REQ
    m->n_head_kv = m->n_head;
    if (get_hp_u32(g, a, "attention.head_count_kv", &v)) m->n_head_kv = (int)v;
    if (m->n_head_kv <= 0 || m->n_head % m->n_head_kv != 0)
        return kvl_err_set(err, KVL_ERR_FORMAT, "model: head_count %d not a multiple of head_count_kv %d", m->n_head,
                           m->n_head_kv);
    if (m->n_embd % m->n_head != 0)
        return kvl_err_set(err, KVL_ERR_FORMAT, "model: embedding_length %d not a multiple of head_count %d",
                           m->n_embd, m->n_head);
    m->head_dim = m->n_embd / m->n_head;
    if (get_hp_u32(g, a, "attention.key_length", &v) && (int)v != m->head_dim)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "model: key_length %u != n_embd/n_head %d", v, m->head_dim);
    if (m->head_dim % 2 || m->head_dim > 512)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "model: head dim %d unsupported", m->head_dim);
    uint32_t rope_dims = (uint32_t)m->head_dim;
    if (get_hp_u32(g, a, "rope.dimension_count", &rope_dims) && (int)rope_dims != m->head_dim)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "model: partial RoPE (%u of %d dims) unsupported", rope_dims,
                           m->head_dim);
    m->rope_theta = 10000.0f;
    get_hp_f32(g, a, "rope.freq_base", &m->rope_theta);
    m->norm_eps = 1e-5f;
    if (!get_hp_f32(g, a, "attention.layer_norm_rms_epsilon", &m->norm_eps))
        return kvl_err_set(err, KVL_ERR_FORMAT, "model: missing %s.attention.layer_norm_rms_epsilon", a);
    if (!(m->rope_theta > 0) || !(m->norm_eps >= 0))
        return kvl_err_set(err, KVL_ERR_FORMAT, "model: invalid rope theta or norm eps");

    /* RoPE frequencies: theta^(-2i/d), linear scaling, per-dim factors (llama3). */
    float linear = 1.0f;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    if (kvl_gguf_get_str(g, key, &s, &len)) {
        if (len == 6 && !memcmp(s, "linear", 6)) {
            if (!get_hp_f32(g, a, "rope.scaling.factor", &linear) || !(linear > 0))
                return kvl_err_set(err, KVL_ERR_FORMAT, "model: linear rope scaling without a valid factor");
        } else if (!(len == 4 && !memcmp(s, "none", 4)) && !(len == 6 && !memcmp(s, "llama3", 6))) {
            return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "model: rope scaling '%.*s' unsupported", (int)(len > 32 ? 32 : len), s);
        }
    } else if (get_hp_f32(g, a, "rope.scale_linear", &linear)) {
        if (!(linear > 0)) return kvl_err_set(err, KVL_ERR_FORMAT, "model: invalid rope.scale_linear");
    }
    const int half = m->head_dim / 2;
    m->rope_freq = malloc(sizeof(float) * (size_t)half);
    if (!m->rope_freq) return kvl_err_set(err, KVL_ERR_NOMEM, "model: out of memory");
    const kvl_gguf_tensor *rf = kvl_gguf_find_tensor(g, "rope_freqs.weight");
    if (rf && (rf->type != KVL_TYPE_F32 || rf->ne[0] != half))
        return kvl_err_set(err, KVL_ERR_FORMAT, "model: rope_freqs.weight must be f32 [%d]", half);
    for (int i = 0; i < half; i++) {
        double f = pow((double)m->rope_theta, -2.0 * i / m->head_dim) / linear;
        if (rf) {
            float fac;
            memcpy(&fac, (const char *)rf->data + 4 * i, 4);
            if (!(fac > 0)) return kvl_err_set(err, KVL_ERR_FORMAT, "model: invalid rope_freqs factor");
            f /= fac;
        }
        m->rope_freq[i] = (float)f;
    }
    return KVL_OK;
}

/* FNV-1a 64 continued over p[0..n). */
static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

/* Model identity for session files: the architecture, every tensor's name,
 * type and shape (not its data), and the vocabulary's token texts. */
static uint64_t model_identity(const kvl_model *m) {
    uint64_t h = fnv(1469598103934665603ull, m->arch, strlen(m->arch) + 1);
    const int64_t nt = kvl_gguf_n_tensors(m->gguf);
    h = fnv(h, &nt, sizeof nt);
    for (int64_t i = 0; i < nt; i++) {
        const kvl_gguf_tensor *t = kvl_gguf_tensor_at(m->gguf, i);
        const int32_t ty = (int32_t)t->type, nd = t->n_dims;
        h = fnv(h, t->name, strlen(t->name) + 1);
        h = fnv(h, &ty, sizeof ty);
        h = fnv(h, &nd, sizeof nd);
        h = fnv(h, t->ne, sizeof t->ne);
    }
    const int32_t nv = m->n_vocab;
    h = fnv(h, &nv, sizeof nv);
    for (int32_t i = 0; i < nv; i++) {
        size_t len = 0;
        const char *s = kvl_tok_text(m->tok, i, &len);
        const uint64_t l64 = s ? len : UINT64_MAX;
        h = fnv(h, &l64, sizeof l64);
        if (s) h = fnv(h, s, len);
    }
    return h;
}

kvl_status kvl_model_open(const char *path, kvl_model **out, kvl_err *err) {
    *out = NULL;
    kvl_model *m = calloc(1, sizeof *m);
    if (!m) return kvl_err_set(err, KVL_ERR_NOMEM, "model: out of memory");
    kvl_status st = kvl_gguf_open(path, &m->gguf, err);
    if (st) goto fail;
    if (!(m->path = strdup(path))) {
        st = kvl_err_set(err, KVL_ERR_NOMEM, "model: out of memory");
        goto fail;
    }
    if ((st = load_hparams(m, err))) goto fail;
    if ((st = kvl_tok_create(m->gguf, &m->tok, err))) goto fail;
    m->n_vocab = kvl_tok_n_vocab(m->tok);

    const int E = m->n_embd, H = m->n_head * m->head_dim, KV = m->n_head_kv * m->head_dim;
    /* hostile hparams must not size allocations: every layer has at least 9
     * tensors, and the embedding (whose bytes lie inside the file) fixes E */
    if (kvl_gguf_n_tensors(m->gguf) < 9 * (int64_t)m->n_layer + 2) {
        st = kvl_err_set(err, KVL_ERR_FORMAT, "model: block_count %d needs at least %lld tensors, the file has %lld",
                         m->n_layer, 9 * (long long)m->n_layer + 2, (long long)kvl_gguf_n_tensors(m->gguf));
        goto fail;
    }
    if ((st = load_mat(m, "token_embd.weight", m->n_vocab, E, &m->tok_embd, err))) goto fail;
    m->owned_cap = (size_t)m->n_layer * (2 * E + H + 2 * KV) + E;
    m->owned = malloc(sizeof(float) * m->owned_cap);
    m->layers = calloc((size_t)m->n_layer, sizeof *m->layers);
    if (!m->owned || !m->layers) {
        st = kvl_err_set(err, KVL_ERR_NOMEM, "model: out of memory");
        goto fail;
    }
    if (kvl_gguf_find_tensor(m->gguf, "output.weight")) {
        if ((st = load_mat(m, "output.weight", m->n_vocab, E, &m->output, err))) goto fail;
    } else {
        m->output = m->tok_embd;
    }
    if ((st = load_vec(m, "output_norm.weight", E, 1, &m->out_norm, err))) goto fail;
    const int bias = strcmp(m->arch, "qwen2") == 0;
    for (int l = 0; l < m->n_layer; l++) {
        kvl_layer *L = &m->layers[l];
        char n[96];
#define MAT(field, suffix, r, c)                                                                           \
    snprintf(n, sizeof n, "blk.%d.%s.weight", l, suffix);                                                  \
    if ((st = load_mat(m, n, r, c, &L->field, err))) goto fail;
#define VEC(field, suffix, kind, len, req)                                                                 \
    snprintf(n, sizeof n, "blk.%d.%s.%s", l, suffix, kind);                                                \
    if ((st = load_vec(m, n, len, req, &L->field, err))) goto fail;
        VEC(attn_norm, "attn_norm", "weight", E, 1);
        VEC(ffn_norm, "ffn_norm", "weight", E, 1);
        MAT(wq, "attn_q", H, E);
        MAT(wk, "attn_k", KV, E);
        MAT(wv, "attn_v", KV, E);
        MAT(wo, "attn_output", E, H);
        MAT(w_gate, "ffn_gate", m->n_ff, E);
        MAT(w_up, "ffn_up", m->n_ff, E);
        MAT(w_down, "ffn_down", E, m->n_ff);
        VEC(bq, "attn_q", "bias", H, bias);
        VEC(bk, "attn_k", "bias", KV, bias);
        VEC(bv, "attn_v", "bias", KV, bias);
#undef MAT
#undef VEC
    }
    m->identity = model_identity(m);
    *out = m;
    return KVL_OK;
fail:
    model_free(m);
    return st;
}
