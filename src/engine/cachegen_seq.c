/* CacheGen format at the sequence level (include/kvlite.h, "CacheGen
 * compressed KV format"): a sequence's table, model identity, positions and
 * token ids to a CacheGen file and back, the model-free describer for
 * `kvlite kv info`, and the float transcode between contexts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "kv/cachegen.h"

static void copy_err(const kvl_err *e, char *buf, size_t len) {
    if (buf && len) snprintf(buf, len, "%s", e->msg);
}

int kvl_cachegen_is_file(const void *buf, size_t len) { return kvl_cachegen_is(buf, len); }

kvl_status kvl_seq_save_cachegen(const kvl_seq *s, const kvl_cachegen_opts *o, void **buf, size_t *len) {
    if (!s || !o || !buf || !len) return KVL_ERR_ARG;
    *buf = NULL;
    *len = 0;
    kvl_ctx *c = s->c;
    if (c->freed) return KVL_ERR_ARG;
    kvl_err_clear(&c->err);
    if (s->pos < 1) return kvl_err_set(&c->err, KVL_ERR_ARG, "cachegen: the sequence is empty");
    kvl_cachegen_params prm;
    kvl_status st = kvl_cachegen_level(o->level, o->scale > 0 ? o->scale : 1.0f, &prm, &c->err);
    if (st) return st;
    if (o->group > 0) prm.group = o->group;
    if (o->chan_group > 0) prm.chan_group = o->chan_group;
    kvl_ser_buf b = {0};
    st = kvl_cachegen_encode(s->t, s->pos, s->toks, c->m->identity, c->codec_name, &prm, &b, NULL, &c->err);
    if (st) {
        free(b.p);
        return st;
    }
    *buf = b.p;
    *len = b.n;
    return KVL_OK;
}

kvl_status kvl_seq_load_cachegen(kvl_ctx *c, const void *buf, size_t len, kvl_seq **out) {
    if (!c || !out) return KVL_ERR_ARG;
    *out = NULL;
    if (c->freed) return KVL_ERR_ARG;
    kvl_err_clear(&c->err);
    kvl_cachegen_file *f = malloc(sizeof *f);
    if (!f) return kvl_err_set(&c->err, KVL_ERR_NOMEM, "cachegen: out of memory");
    kvl_status st = kvl_cachegen_parse(buf, len, f, &c->err);
    kvl_seq *s = NULL;
    if (!st && f->identity != c->m->identity)
        st = kvl_err_set(&c->err, KVL_ERR_ARG, "cachegen: model identity differs (file 0x%016llx, model 0x%016llx)",
                         (unsigned long long)f->identity, (unsigned long long)c->m->identity);
    if (!st && !f->tokens) st = kvl_err_set(&c->err, KVL_ERR_FORMAT, "cachegen: the file has no token ids");
    for (int i = 0; !st && i < f->n_tok; i++) {
        int32_t v;
        memcpy(&v, f->pos + 4 * (size_t)i, 4);
        if (v != i) st = kvl_err_set(&c->err, KVL_ERR_FORMAT, "cachegen: position %d of token %d (a sequence holds 0..n-1)", v, i);
        memcpy(&v, f->tokens + 4 * (size_t)i, 4);
        if (!st && (v < 0 || v >= c->m->n_vocab))
            st = kvl_err_set(&c->err, KVL_ERR_FORMAT, "cachegen: token id %d at %d out of range [0, %d)", v, i, c->m->n_vocab);
    }
    if (!st) st = kvl_seq_create(c, &s);
    if (!st && kvl_seq_reserve_tokens(s, f->n_tok)) st = kvl_err_set(&c->err, KVL_ERR_NOMEM, "cachegen: out of memory for token ids");
    if (!st) st = kvl_cachegen_load(s->t, f, c->p.n_ctx, &c->err);
    if (!st) {
        memcpy(s->toks, f->tokens, (size_t)f->n_tok * 4);
        s->pos = f->n_tok;
        *out = s;
    } else {
        kvl_seq_free(s);
    }
    free(f);
    return st;
}

kvl_status kvl_seq_save_cachegen_range(const kvl_seq *s, const kvl_cachegen_opts *o, int tok0, int n_tok, void **buf,
                                       size_t *len) {
    if (!s || !o || !buf || !len) return KVL_ERR_ARG;
    *buf = NULL;
    *len = 0;
    kvl_ctx *c = s->c;
    if (c->freed) return KVL_ERR_ARG;
    kvl_err_clear(&c->err);
    if (tok0 < 0 || n_tok < 1 || tok0 + n_tok > s->pos)
        return kvl_err_set(&c->err, KVL_ERR_ARG, "cachegen: tokens [%d, %d) outside the sequence's %d", tok0, tok0 + n_tok,
                           s->pos);
    kvl_cachegen_params prm;
    kvl_status st = kvl_cachegen_level(o->level, o->scale > 0 ? o->scale : 1.0f, &prm, &c->err);
    if (st) return st;
    if (o->group > 0) prm.group = o->group;
    if (o->chan_group > 0) prm.chan_group = o->chan_group;
    kvl_ser_buf b = {0};
    st = kvl_cachegen_encode_range(s->t, tok0, n_tok, s->toks + tok0, c->m->identity, c->codec_name, &prm, &b, NULL,
                                   &c->err);
    if (st) {
        free(b.p);
        return st;
    }
    *buf = b.p;
    *len = b.n;
    return KVL_OK;
}

kvl_status kvl_seq_append_cachegen(kvl_seq *s, const void *buf, size_t len) {
    if (!s) return KVL_ERR_ARG;
    kvl_ctx *c = s->c;
    if (c->freed) return KVL_ERR_ARG;
    kvl_err_clear(&c->err);
    kvl_cachegen_file *f = malloc(sizeof *f);
    if (!f) return kvl_err_set(&c->err, KVL_ERR_NOMEM, "cachegen: out of memory");
    kvl_status st = kvl_cachegen_parse(buf, len, f, &c->err);
    if (!st && f->identity != c->m->identity)
        st = kvl_err_set(&c->err, KVL_ERR_ARG, "cachegen: model identity differs (file 0x%016llx, model 0x%016llx)",
                         (unsigned long long)f->identity, (unsigned long long)c->m->identity);
    if (!st && !f->tokens) st = kvl_err_set(&c->err, KVL_ERR_FORMAT, "cachegen: the file has no token ids");
    if (!st && s->pos + f->n_tok > c->p.n_ctx)
        st = kvl_err_set(&c->err, KVL_ERR_ARG, "cachegen: %d + %d tokens exceed the context (%d)", s->pos, f->n_tok,
                         c->p.n_ctx);
    for (int i = 0; !st && i < f->n_tok; i++) {
        int32_t v;
        memcpy(&v, f->pos + 4 * (size_t)i, 4);
        if (v != s->pos + i)
            st = kvl_err_set(&c->err, KVL_ERR_FORMAT, "cachegen: position %d of token %d (the sequence continues at %d)", v, i,
                             s->pos);
        memcpy(&v, f->tokens + 4 * (size_t)i, 4);
        if (!st && (v < 0 || v >= c->m->n_vocab))
            st = kvl_err_set(&c->err, KVL_ERR_FORMAT, "cachegen: token id %d at %d out of range [0, %d)", v, i, c->m->n_vocab);
    }
    if (!st && kvl_seq_reserve_tokens(s, s->pos + f->n_tok))
        st = kvl_err_set(&c->err, KVL_ERR_NOMEM, "cachegen: out of memory for token ids");
    if (!st) st = kvl_cachegen_load_append(s->t, f, c->p.n_ctx, &c->err);
    if (!st) {
        memcpy(s->toks + s->pos, f->tokens, (size_t)f->n_tok * 4);
        s->pos += f->n_tok;
    }
    free(f);
    return st;
}

kvl_status kvl_cachegen_describe(const void *buf, size_t len, char **text, int *max_pos, char *err, size_t err_len) {
    if (!text) return KVL_ERR_ARG;
    *text = NULL;
    kvl_err e;
    kvl_err_clear(&e);
    kvl_cachegen_file *f = malloc(sizeof *f);
    kvl_cachegen_sizes *z = malloc(sizeof *z);
    kvl_status st = f && z ? kvl_cachegen_parse(buf, len, f, &e) : kvl_err_set(&e, KVL_ERR_NOMEM, "cachegen: out of memory");
    if (!st) st = kvl_cachegen_verify(f, z, &e);
    kvl_ser_buf b = {0};
    if (!st) {
        const double bpv = 8.0 * (double)z->total / (double)z->values;
        kvl_ser_printf(&b, "CacheGen KV file: format version %u, %zu bytes, model identity 0x%016llx (checksums and streams ok)\n",
                       f->version, len, (unsigned long long)f->identity);
        kvl_ser_printf(&b, "level %d, %d tokens (positions %d..%d, %s), %d layers x %d kv-heads x %d, groups of %d tokens, "
                           "%d channels per context, source codec %.*s\n",
                       f->level, f->n_tok, (int)(f->pos[0] | f->pos[1] << 8 | f->pos[2] << 16 | (uint32_t)f->pos[3] << 24),
                       (int)(f->pos[4 * (size_t)(f->n_tok - 1)] | f->pos[4 * (size_t)(f->n_tok - 1) + 1] << 8 |
                             f->pos[4 * (size_t)(f->n_tok - 1) + 2] << 16 | (uint32_t)f->pos[4 * (size_t)(f->n_tok - 1) + 3] << 24),
                       f->tokens ? "token ids" : "no token ids", f->n_layer, f->n_head_kv, f->head_dim, f->group, f->chan_group,
                       (int)f->src_spec_len, f->src_spec ? f->src_spec : "");
        kvl_ser_printf(&b, "%.4f bits/value over %zu values (every byte counted): headers %zu B, steps %zu B, models %zu B, "
                           "symbols %zu B\n",
                       bpv, z->values, z->header, z->steps, z->models,
                       z->total - z->header - z->steps - z->models);
        kvl_ser_printf(&b, "bytes per layer:");
        for (int l = 0; l < f->n_layer; l++) kvl_ser_printf(&b, " %zu", z->layer[l]);
        kvl_ser_printf(&b, "\n");
        kvl_ser_put(&b, "", 1);
        if (b.oom) st = kvl_err_set(&e, KVL_ERR_NOMEM, "cachegen: out of memory");
        if (max_pos) {
            int32_t v;
            memcpy(&v, f->pos + 4 * (size_t)(f->n_tok - 1), 4);
            *max_pos = v + 1;
        }
    }
    free(f);
    free(z);
    if (st) {
        free(b.p);
        copy_err(&e, err, err_len);
        return st;
    }
    *text = (char *)b.p;
    return KVL_OK;
}

kvl_status kvl_seq_transcode(kvl_ctx *dst, const kvl_seq *src, kvl_seq **out) {
    if (!dst || !src || !out) return KVL_ERR_ARG;
    *out = NULL;
    if (dst->freed) return KVL_ERR_ARG;
    kvl_err_clear(&dst->err);
    const kvl_kv_config *a = kvl_kv_pool_config(kvl_kv_table_pool(src->t)), *b = kvl_kv_pool_config(dst->pool);
    if (a->n_layer != b->n_layer || a->n_head_kv != b->n_head_kv || a->head_dim != b->head_dim)
        return kvl_err_set(&dst->err, KVL_ERR_ARG, "transcode: geometry differs");
    if (src->pos > dst->p.n_ctx) return kvl_err_set(&dst->err, KVL_ERR_ARG, "transcode: context too small");
    const int H = a->n_head_kv, D = a->head_dim, T = src->pos;
    kvl_seq *s = NULL;
    kvl_status st = kvl_seq_create(dst, &s);
    float *k = malloc((size_t)T * H * D * sizeof *k), *v = malloc((size_t)T * H * D * sizeof *v);
    int32_t *pos = malloc((size_t)(T ? T : 1) * sizeof *pos);
    if (!st && (!k || !v || !pos || kvl_seq_reserve_tokens(s, T))) st = kvl_err_set(&dst->err, KVL_ERR_NOMEM, "transcode: out of memory");
    for (int l = 0; l < a->n_layer && !st; l++) {
        for (int h = 0; h < H && !st; h++) {
            if (kvl_kv_table_len(src->t, l, h) != T) st = kvl_err_set(&dst->err, KVL_ERR_ARG, "transcode: lists differ (eviction)");
            for (int i = 0; i < T && !st; i++)
                st = kvl_kv_table_decode(src->t, l, h, i, k + ((size_t)i * H + h) * D, v + ((size_t)i * H + h) * D);
        }
        if (!st && l == 0 && kvl_kv_table_positions(src->t, 0, 0, pos, T) != T) st = KVL_ERR_ARG;
        if (!st) st = kvl_kv_append(s->t, l, T, pos, k, v, &dst->err);
        if (!st) st = kvl_kv_seal(s->t, l, &dst->err);
    }
    if (!st) st = kvl_kv_policy_step(s->t, &dst->err);
    free(k), free(v), free(pos);
    if (st) {
        kvl_seq_free(s);
        return st;
    }
    memcpy(s->toks, src->toks, (size_t)T * sizeof *s->toks);
    s->pos = T;
    *out = s;
    return KVL_OK;
}
