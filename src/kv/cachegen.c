/* CacheGen-style KV coding (kv/cachegen.h): anchors and deltas in token
 * groups, per-channel steps from the chunk's statistics scaled by level and
 * layer depth, rANS-coded symbols with per-(layer, K/V, anchor/delta,
 * channel group) models, the container's writer, parser and hostile-input
 * decoder, and the load into a table through its own codecs. */
#include "kv/cachegen.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kv/codec.h"
#include "util/crc32c.h"
#include "util/fp16.h"
#include "util/rans.h"

#define CODE_ZERO 192  /* step code of step 1.0 */
#define QMAX 127       /* |q| <= 127: symbols 1..255 */
#define BLOCK 64       /* tokens decoded at a time (bounded memory whatever the file claims) */

/* step = 2^((code - 192) / 8): exact mantissas of 2^(i/8), then a power of two */
static float step_of(int code) {
    static const float m[8] = {1.0f, 1.09050773f, 1.18920712f, 1.29683955f,
                               1.41421356f, 1.54221083f, 1.68179283f, 1.83400809f};
    return ldexpf(m[code & 7], (code >> 3) - CODE_ZERO / 8);
}

/* Smallest code whose step is >= need, at least the code nearest want. -1 if none. */
static int code_for(double want, double need) {
    int c = 0;
    if (want > 0) {
        const double lw = CODE_ZERO + 8.0 * log2(want);
        c = lw < 0 ? 0 : lw > 255 ? 255 : (int)lrint(lw);
    }
    while (c < 255 && step_of(c) < need) c++;
    return step_of(c) >= need ? c : -1;
}

static int qround(float x) {
    const float r = rintf(x);
    return r > QMAX ? QMAX : r < -QMAX ? -QMAX : (int)r;
}

kvl_status kvl_cachegen_level(int level, float scale, kvl_cachegen_params *out, kvl_err *err) {
    /* Tuned on WikiText-2 valid with SmolLM2-135M (docs/RESULTS.md,
     * "CacheGen format"): steps as multiples of each head's RMS; K needs
     * about half V's step for the same damage; the first third of the layers
     * at half the step (except level 0, already fine); 4 sink tokens in f16;
     * anchors + deltas (groups of 4) only pay at the coarse levels (RoPE'd
     * keys of neighbouring tokens are not closer than keys in general). */
    static const struct { float k, v, d0; int group; } lv[KVL_CG_LEVELS] = {
        {0.25f, 0.35f, 1.0f, 1}, {0.5f, 0.8f, 0.5f, 1}, {1.05f, 2.1f, 0.5f, 4}, {1.8f, 3.6f, 0.5f, 4}};
    if (level < 0 || level >= KVL_CG_LEVELS)
        return kvl_err_set(err, KVL_ERR_ARG, "cachegen: level %d (0..%d)", level, KVL_CG_LEVELS - 1);
    if (!(scale > 0) || scale > 1000) return kvl_err_set(err, KVL_ERR_ARG, "cachegen: step scale %g (0, 1000]", (double)scale);
    memset(out, 0, sizeof *out);
    out->level = level;
    out->group = lv[level].group;
    out->chan_group = 8;
    out->anchor[0] = out->delta[0] = lv[level].k * scale;
    out->anchor[1] = out->delta[1] = lv[level].v * scale;
    out->depth[0] = lv[level].d0, out->depth[1] = 1.0f, out->depth[2] = 1.0f;
    out->per_head = 1;
    out->n_sink = 4;
    return KVL_OK;
}

/* ---- encoder ------------------------------------------------------------------------- */

static int n_contexts(int C, int cg) { return 4 * ((C + cg - 1) / cg); }
static uint16_t ctx_of(int s, int delta, int c, int cg, int ncg) { return (uint16_t)((s * 2 + delta) * ncg + c / cg); }

typedef struct layer_enc {
    int T, C, G, cg, S; /* S: sink tokens stored as f16, not quantized */
    int i0;        /* first list row encoded (range encoding) */
    float *x;      /* [T][2][C] (sinks first) */
    uint16_t *mean;/* [2][C] f16 */
    uint8_t *ca, *cd; /* [2][C] step codes */
    uint8_t *sym;  /* [T-S][2][C] */
    uint16_t *ctx; /* [T-S][2][C] */
} layer_enc;

/* per_head: replace each channel's sum of squares acc [C] by the mean over
 * its head's D channels (one step for the head: equal absolute error in
 * every channel, the MSE-optimal allocation for uniform quantizers). */
static void head_rms(double *acc, int C, int D, int per_head) {
    if (!per_head) return;
    for (int h = 0; h < C / D; h++) {
        double m = 0;
        for (int d = 0; d < D; d++) m += acc[h * D + d];
        for (int d = 0; d < D; d++) acc[h * D + d] = m / D;
    }
}

/* Fill x from the table, choose means and steps, quantize into sym / ctx. */
static kvl_status quantize_layer(const kvl_kv_table *t, int l, int n_layer, const kvl_cachegen_params *prm, layer_enc *e,
                                 kvl_err *err) {
    const kvl_kv_config *cfg = kvl_kv_pool_config(kvl_kv_table_pool(t));
    const int H = cfg->n_head_kv, D = cfg->head_dim, T = e->T, C = e->C, G = e->G;
    for (int i = 0; i < T; i++)
        for (int h = 0; h < H; h++) {
            float *row = e->x + (size_t)i * 2 * C;
            if (kvl_kv_table_decode(t, l, h, e->i0 + i, row + h * D, row + C + h * D) != KVL_OK)
                return kvl_err_set(err, KVL_ERR_ARG, "cachegen: cannot decode token %d of layer %d head %d", i, l, h);
        }
    const float depth = prm->depth[l * 3 / n_layer];
    double *acc = calloc((size_t)C * 3, sizeof *acc);
    float *xa = malloc((size_t)C * sizeof *xa);
    if (!acc || !xa) {
        free(acc), free(xa);
        return kvl_err_set(err, KVL_ERR_NOMEM, "cachegen: out of memory");
    }
    const int ncg = (C + e->cg - 1) / e->cg;
    kvl_status st = KVL_OK;
    const int S = e->S, Tq = T - S;
    const float *X = e->x + (size_t)S * 2 * C; /* tokens after the sinks */
    if (Tq == 0) { /* every token is a sink: nothing quantized */
        for (int c = 0; c < 2 * C; c++) e->mean[c] = 0, e->ca[c] = e->cd[c] = CODE_ZERO;
    }
    for (int s = 0; s < 2 && !st && Tq > 0; s++) {
        /* anchors: mean, RMS about it, max |x - mean| */
        int na = 0, nd = 0;
        memset(acc, 0, (size_t)C * 3 * sizeof *acc);
        for (int i = 0; i < Tq; i += G, na++)
            for (int c = 0; c < C; c++) acc[c] += X[((size_t)i * 2 + s) * C + c];
        for (int c = 0; c < C; c++) {
            const float mu = (float)(acc[c] / na);
            if (!isfinite(mu)) {
                st = kvl_err_set(err, KVL_ERR_ARG, "cachegen: layer %d %c channel %d is not finite", l, "KV"[s], c);
                break;
            }
            e->mean[s * C + c] = kvl_fp32_to_fp16(mu);
            acc[c] = 0;
        }
        if (st) break;
        for (int i = 0; i < Tq; i += G)
            for (int c = 0; c < C; c++) {
                const double d = X[((size_t)i * 2 + s) * C + c] - kvl_fp16_to_fp32(e->mean[s * C + c]);
                acc[c] += d * d;
                if (fabs(d) > acc[2 * C + c]) acc[2 * C + c] = fabs(d);
            }
        head_rms(acc, C, D, prm->per_head);
        for (int c = 0; c < C && !st; c++) {
            const int code = code_for(sqrt(acc[c] / na) * prm->anchor[s] * depth, acc[2 * C + c] / QMAX);
            if (code < 0) st = kvl_err_set(err, KVL_ERR_ARG, "cachegen: layer %d %c channel %d: values too large", l, "KV"[s], c);
            e->ca[s * C + c] = (uint8_t)code;
        }
        if (st) break;
        /* deltas from the reconstructed anchor of their group */
        memset(acc, 0, (size_t)C * 3 * sizeof *acc);
        for (int i = 0; i < Tq; i++) {
            const float *x = X + ((size_t)i * 2 + s) * C;
            if (i % G == 0) {
                for (int c = 0; c < C; c++) {
                    const float mu = kvl_fp16_to_fp32(e->mean[s * C + c]), sa = step_of(e->ca[s * C + c]);
                    const int q = qround((x[c] - mu) / sa);
                    xa[c] = mu + (float)q * sa;
                    e->sym[((size_t)i * 2 + s) * C + c] = (uint8_t)(q + 128);
                    e->ctx[((size_t)i * 2 + s) * C + c] = ctx_of(s, 0, c, e->cg, ncg);
                }
                continue;
            }
            nd++;
            for (int c = 0; c < C; c++) {
                const double d = x[c] - xa[c];
                acc[c] += d * d;
                if (fabs(d) > acc[2 * C + c]) acc[2 * C + c] = fabs(d);
            }
        }
        head_rms(acc, C, D, prm->per_head);
        for (int c = 0; c < C && !st; c++) {
            const int code = nd ? code_for(sqrt(acc[c] / nd) * prm->delta[s] * depth, acc[2 * C + c] / QMAX) : CODE_ZERO;
            if (code < 0) st = kvl_err_set(err, KVL_ERR_ARG, "cachegen: layer %d %c channel %d: deltas too large", l, "KV"[s], c);
            e->cd[s * C + c] = (uint8_t)code;
        }
        if (st) break;
        for (int i = 0; i < Tq; i++) {
            const float *x = X + ((size_t)i * 2 + s) * C;
            uint8_t *sy = e->sym + ((size_t)i * 2 + s) * C;
            if (i % G == 0) {
                for (int c = 0; c < C; c++)
                    xa[c] = kvl_fp16_to_fp32(e->mean[s * C + c]) + (float)(sy[c] - 128) * step_of(e->ca[s * C + c]);
                continue;
            }
            for (int c = 0; c < C; c++) {
                sy[c] = (uint8_t)(qround((x[c] - xa[c]) / step_of(e->cd[s * C + c])) + 128);
                e->ctx[((size_t)i * 2 + s) * C + c] = ctx_of(s, 1, c, e->cg, ncg);
            }
        }
    }
    free(acc);
    free(xa);
    return st;
}

/* Prefix err's message with "cachegen: layer L[ token I]: " (copied first: no overlap). */
static kvl_status wrap(kvl_err *err, kvl_status st, int l, int i) {
    if (!err) return st;
    char m[sizeof err->msg];
    memcpy(m, err->msg, sizeof m);
    if (i >= 0) return kvl_err_set(err, st, "cachegen: layer %d token %d: %s", l, i, m);
    return kvl_err_set(err, st, "cachegen: layer %d: %s", l, m);
}

/* Every list holds the same positions; pos [n_tok] = those of rows [tok0,
 * tok0 + n_tok). exact: the lists must hold exactly n_tok rows (tok0 0). */
static kvl_status check_table(const kvl_kv_table *t, int tok0, int n_tok, int exact, int32_t *pos, kvl_err *err) {
    const kvl_kv_config *cfg = kvl_kv_pool_config(kvl_kv_table_pool(t));
    const int len0 = kvl_kv_table_len(t, 0, 0);
    if (tok0 < 0 || (exact ? len0 != n_tok : tok0 + n_tok > len0))
        return kvl_err_set(err, KVL_ERR_ARG, "cachegen: layer 0 head 0 holds %d tokens, not %s%d", len0, exact ? "" : "at least ",
                           tok0 + n_tok);
    int32_t *p0 = malloc((size_t)len0 * sizeof *p0 * 2);
    if (!p0) return kvl_err_set(err, KVL_ERR_NOMEM, "cachegen: out of memory");
    int32_t *p2 = p0 + len0;
    kvl_status st = KVL_OK;
    for (int l = 0; l < cfg->n_layer && !st; l++)
        for (int h = 0; h < cfg->n_head_kv && !st; h++) {
            const int n = kvl_kv_table_positions(t, l, h, l || h ? p2 : p0, len0);
            if (n != len0)
                st = kvl_err_set(err, KVL_ERR_ARG,
                                 "cachegen: layer %d head %d holds %d tokens, not %d (a policy evicted: lists differ)", l, h,
                                 n, len0);
            else if ((l || h) && memcmp(p2, p0, (size_t)len0 * sizeof *p0))
                st = kvl_err_set(err, KVL_ERR_ARG, "cachegen: layer %d head %d holds other positions than layer 0", l, h);
        }
    if (!st) memcpy(pos, p0 + tok0, (size_t)n_tok * sizeof *pos);
    for (int i = 1; i < n_tok && !st; i++)
        if (pos[i] <= pos[i - 1]) st = kvl_err_set(err, KVL_ERR_ARG, "cachegen: positions not increasing at token %d", i);
    free(p0);
    return st;
}

static void put_header(kvl_ser_buf *b, uint64_t identity) {
    kvl_ser_put(b, KVL_CG_MAGIC, 8);
    kvl_ser_put_u32(b, KVL_CG_VERSION);
    kvl_ser_put_u32(b, 0);
    kvl_ser_put_u64(b, identity);
    kvl_ser_put_u32(b, 0);
    kvl_ser_put_u32(b, 0);
}

static void enc_free(layer_enc *e) {
    free(e->x), free(e->mean), free(e->ca), free(e->cd), free(e->sym), free(e->ctx);
}

static kvl_status enc_alloc(layer_enc *e, int T, int C) {
    const size_t n = (size_t)T * 2 * C;
    e->x = malloc(n * sizeof *e->x);
    e->mean = malloc((size_t)2 * C * sizeof *e->mean);
    e->ca = malloc((size_t)2 * C);
    e->cd = malloc((size_t)2 * C);
    e->sym = malloc(n);
    e->ctx = malloc(n * sizeof *e->ctx);
    return e->x && e->mean && e->ca && e->cd && e->sym && e->ctx ? KVL_OK : KVL_ERR_NOMEM;
}

static kvl_status encode(const kvl_kv_table *t, int tok0, int n_tok, int exact, const int32_t *tokens, uint64_t identity,
                         const char *src_spec, const kvl_cachegen_params *prm, kvl_ser_buf *b, kvl_cachegen_sizes *sizes,
                         kvl_err *err);

kvl_status kvl_cachegen_encode(const kvl_kv_table *t, int n_tok, const int32_t *tokens, uint64_t identity,
                               const char *src_spec, const kvl_cachegen_params *prm, kvl_ser_buf *b,
                               kvl_cachegen_sizes *sizes, kvl_err *err) {
    return encode(t, 0, n_tok, 1, tokens, identity, src_spec, prm, b, sizes, err);
}

kvl_status kvl_cachegen_encode_range(const kvl_kv_table *t, int tok0, int n_tok, const int32_t *tokens, uint64_t identity,
                                     const char *src_spec, const kvl_cachegen_params *prm, kvl_ser_buf *b,
                                     kvl_cachegen_sizes *sizes, kvl_err *err) {
    return encode(t, tok0, n_tok, 0, tokens, identity, src_spec, prm, b, sizes, err);
}

static kvl_status encode(const kvl_kv_table *t, int tok0, int n_tok, int exact, const int32_t *tokens, uint64_t identity,
                         const char *src_spec, const kvl_cachegen_params *prm, kvl_ser_buf *b, kvl_cachegen_sizes *sizes,
                         kvl_err *err) {
    const kvl_kv_config *cfg = kvl_kv_pool_config(kvl_kv_table_pool(t));
    const int L = cfg->n_layer, H = cfg->n_head_kv, D = cfg->head_dim, C = H * D;
    if (n_tok < 1) return kvl_err_set(err, KVL_ERR_ARG, "cachegen: nothing to encode (%d tokens)", n_tok);
    if (L > KVL_CG_MAX_LAYERS) return kvl_err_set(err, KVL_ERR_ARG, "cachegen: %d layers (at most %d)", L, KVL_CG_MAX_LAYERS);
    if (prm->group < 1 || prm->chan_group < 1 || n_contexts(C, prm->chan_group) > KVL_RANS_MAX_CTX)
        return kvl_err_set(err, KVL_ERR_ARG, "cachegen: bad group %d / channel group %d", prm->group, prm->chan_group);
    if (kvl_kv_txn_open(t)) return kvl_err_set(err, KVL_ERR_ARG, "cachegen: the table has an open transaction");
    int32_t *pos = malloc((size_t)n_tok * sizeof *pos);
    if (!pos) return kvl_err_set(err, KVL_ERR_NOMEM, "cachegen: out of memory");
    kvl_status st = check_table(t, tok0, n_tok, exact, pos, err);
    if (st) {
        free(pos);
        return st;
    }
    kvl_cachegen_sizes sz;
    memset(&sz, 0, sizeof sz);
    const size_t start = b->n;
    put_header(b, identity);
    size_t at = kvl_ser_section_begin(b, KVL_CG_SEC_CONFIG);
    /* sinks: the sequence's first tokens only (a later chunk has none) */
    const int S = tok0 > 0 ? 0 : prm->n_sink < n_tok ? prm->n_sink : n_tok;
    const uint32_t cf[8] = {(uint32_t)L, (uint32_t)H, (uint32_t)D, (uint32_t)n_tok, (uint32_t)prm->group,
                            (uint32_t)prm->chan_group, (uint32_t)prm->level, (uint32_t)S};
    for (int i = 0; i < 8; i++) kvl_ser_put_u32(b, cf[i]);
    kvl_ser_put_str(b, src_spec ? src_spec : "", src_spec ? strlen(src_spec) : 0);
    kvl_ser_section_end(b, at);
    at = kvl_ser_section_begin(b, KVL_CG_SEC_POS);
    for (int i = 0; i < n_tok; i++) kvl_ser_put_u32(b, (uint32_t)pos[i]);
    kvl_ser_section_end(b, at);
    at = kvl_ser_section_begin(b, KVL_CG_SEC_TOKENS);
    kvl_ser_put_u32(b, tokens ? (uint32_t)n_tok : 0);
    for (int i = 0; tokens && i < n_tok; i++) kvl_ser_put_u32(b, (uint32_t)tokens[i]);
    kvl_ser_section_end(b, at);
    sz.header = b->n - start;
    free(pos);

    layer_enc e = {.T = n_tok, .C = C, .G = prm->group, .cg = prm->chan_group, .S = S, .i0 = tok0};
    kvl_rans_models *m = NULL;
    uint8_t *buf = NULL;
    const size_t nsym = (size_t)(n_tok - S) * 2 * C, cap = kvl_rans_bound(nsym);
    if (enc_alloc(&e, n_tok, C) || !(buf = malloc(cap))) st = kvl_err_set(err, KVL_ERR_NOMEM, "cachegen: out of memory");
    if (!st) st = kvl_rans_models_create(n_contexts(C, prm->chan_group), &m, err);
    for (int l = 0; l < L && !st; l++) {
        if ((st = quantize_layer(t, l, L, prm, &e, err))) break;
        kvl_rans_models_reset(m);
        if ((st = kvl_rans_count(m, e.sym, e.ctx, nsym, err))) break;
        kvl_rans_normalize(m);
        size_t slen = 0;
        if ((st = kvl_rans_encode(m, e.sym, e.ctx, nsym, buf, cap, &slen, err))) break;
        at = kvl_ser_section_begin(b, KVL_CG_SEC_LAYER);
        const size_t p0 = b->n;
        kvl_ser_put_u32(b, (uint32_t)l);
        for (int s = 0; s < 2; s++)
            for (int c = 0; c < C; c++) {
                const uint16_t mu = e.mean[s * C + c];
                const uint8_t f[4] = {(uint8_t)mu, (uint8_t)(mu >> 8), e.ca[s * C + c], e.cd[s * C + c]};
                kvl_ser_put(b, f, 4);
            }
        for (size_t j = 0; j < (size_t)S * 2 * C; j++) { /* sink rows as f16 */
            const uint16_t h = kvl_fp32_to_fp16(e.x[j]);
            const uint8_t f[2] = {(uint8_t)h, (uint8_t)(h >> 8)};
            if (!kvl_codec_f16_ok(f)) {
                st = kvl_err_set(err, KVL_ERR_ARG, "cachegen: layer %d: sink token value not finite in f16", l);
                break;
            }
            kvl_ser_put(b, f, 2);
        }
        if (st) break;
        const size_t mb = kvl_rans_models_bytes(m);
        kvl_ser_put_u32(b, (uint32_t)mb);
        uint8_t *mbuf = malloc(mb ? mb : 1);
        if (!mbuf) {
            st = kvl_err_set(err, KVL_ERR_NOMEM, "cachegen: out of memory");
            break;
        }
        kvl_rans_models_write(m, mbuf, mb);
        kvl_ser_put(b, mbuf, mb);
        free(mbuf);
        kvl_ser_put_u32(b, (uint32_t)slen);
        kvl_ser_put(b, buf, slen);
        kvl_ser_section_end(b, at);
        sz.layer[l] = b->n - p0;
        sz.models += mb;
        sz.steps += (size_t)2 * C * 4 + (size_t)S * 2 * C * 2;
        sz.header += KVL_SER_SECTION_BYTES;
    }
    enc_free(&e);
    free(buf);
    kvl_rans_models_free(m);
    if (!st && b->oom) st = kvl_err_set(err, KVL_ERR_NOMEM, "cachegen: out of memory writing the file");
    if (!st) st = kvl_ser_finish(b, err);
    sz.total = b->n - start;
    sz.values = (size_t)n_tok * L * C * 2;
    if (!st && sizes) *sizes = sz;
    return st;
}

/* ---- parser and decoder ---------------------------------------------------------------- */

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

int kvl_cachegen_is(const void *buf, size_t len) { return buf && len >= 8 && !memcmp(buf, KVL_CG_MAGIC, 8); }

kvl_status kvl_cachegen_parse(const void *buf, size_t len, kvl_cachegen_file *f, kvl_err *err) {
    memset(f, 0, sizeof *f);
    const uint8_t *p = buf;
    if (!p || len < KVL_SER_HEADER_BYTES) return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: file too short (%zu bytes)", len);
    if (!kvl_cachegen_is(p, len)) return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: bad magic (not a CacheGen KV file)");
    if (rd32(p + 28) != kvl_crc32c(p, 28)) return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: header checksum mismatch");
    f->version = rd32(p + 8);
    if (f->version != KVL_CG_VERSION)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "cachegen: format version %u (this build reads %u)", f->version,
                           KVL_CG_VERSION);
    if (rd32(p + 12)) return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: unknown header flags 0x%x", rd32(p + 12));
    f->identity = rd64(p + 16);
    const uint32_t ns = rd32(p + 24);
    if (ns < 4 || ns > 3 + KVL_CG_MAX_LAYERS) return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: %u sections", ns);
    size_t off = KVL_SER_HEADER_BYTES;
    for (uint32_t i = 0; i < ns; i++) {
        if (len - off < KVL_SER_SECTION_BYTES) return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: truncated at section %u", i);
        const uint32_t type = rd32(p + off), crc = rd32(p + off + 4);
        const uint64_t sl = rd64(p + off + 8);
        off += KVL_SER_SECTION_BYTES;
        if (sl > len - off)
            return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: section %u runs past the end (truncated file)", i);
        const uint32_t want = i < 3 ? i + 1 : KVL_CG_SEC_LAYER;
        if (type != want) return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: section %u has type %u (want %u)", i, type, want);
        if (kvl_crc32c(p + off, (size_t)sl) != crc) return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: section %u checksum mismatch", i);
        const uint8_t *d = p + off;
        kvl_ser_rd r = {d, (size_t)sl, 0, 0};
        if (i == 0) {
            uint32_t v[8];
            for (int j = 0; j < 8; j++) v[j] = kvl_ser_get_u32(&r);
            f->src_spec = kvl_ser_get_str(&r, 255, &f->src_spec_len);
            if (r.bad || kvl_ser_left(&r)) return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: malformed config section");
            if (v[0] < 1 || v[0] > KVL_CG_MAX_LAYERS || v[0] != ns - 3)
                return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: n_layer %u with %u layer sections", v[0], ns - 3);
            if (v[1] < 1 || v[1] > 256 || v[2] < 1 || v[2] > 1024 || v[1] * v[2] > 16384)
                return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: bad geometry (%u kv-heads x %u)", v[1], v[2]);
            const uint32_t C = v[1] * v[2];
            if (v[3] < 1 || v[3] > (1u << 24)) return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: bad token count %u", v[3]);
            if (v[4] < 1 || v[4] > (1u << 24) || v[5] < 1 || v[5] > C || n_contexts((int)C, (int)v[5]) > KVL_RANS_MAX_CTX)
                return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: bad group %u / channel group %u", v[4], v[5]);
            if ((int32_t)v[6] < -1 || (int32_t)v[6] >= KVL_CG_LEVELS)
                return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: bad level %d", (int)v[6]);
            f->n_layer = (int)v[0], f->n_head_kv = (int)v[1], f->head_dim = (int)v[2], f->n_tok = (int)v[3];
            if (v[7] > v[3]) return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: %u sink tokens of %u", v[7], v[3]);
            f->group = (int)v[4], f->chan_group = (int)v[5], f->level = (int)(int32_t)v[6], f->n_sink = (int)v[7];
        } else if (i == 1) {
            if (sl != (uint64_t)f->n_tok * 4) return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: positions section of %llu bytes for %d tokens", (unsigned long long)sl, f->n_tok);
            for (int j = 0; j < f->n_tok; j++) {
                const int32_t q = (int32_t)rd32(d + 4 * (size_t)j);
                if (q < 0 || (j && q <= (int32_t)rd32(d + 4 * (size_t)(j - 1))))
                    return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: position %d of token %d (negative or not increasing)", q, j);
            }
            f->pos = d;
        } else if (i == 2) {
            const uint32_t n = kvl_ser_get_u32(&r);
            if (r.bad || (n != 0 && n != (uint32_t)f->n_tok) || kvl_ser_left(&r) != (size_t)n * 4)
                return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: malformed tokens section");
            f->n_tokens = (int)n;
            f->tokens = n ? d + 4 : NULL;
        } else {
            const int l = (int)(i - 3);
            if (sl < 4 || rd32(d) != (uint32_t)l) return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: layer section %d misnumbered", l);
            f->layer[l] = d;
            f->layer_len[l] = (size_t)sl;
        }
        off += (size_t)sl;
    }
    if (off != len) return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: %zu trailing bytes", len - off);
    f->total = len;
    return KVL_OK;
}

kvl_status kvl_cachegen_models(const kvl_cachegen_file *f, kvl_rans_models **m, kvl_err *err) {
    return kvl_rans_models_create(n_contexts(f->n_head_kv * f->head_dim, f->chan_group), m, err);
}

/* Streaming decoder of one layer: call next() for each token in order. */
typedef struct layer_dec {
    const kvl_cachegen_file *f;
    int l, C, i;
    const uint8_t *steps; /* [2][C][4] */
    const uint8_t *sink;  /* [n_sink][2][C] f16 */
    kvl_rans_dec rd;
    float *xa;            /* [2][C] reconstructed anchor */
    float *mu, *sa, *sd;  /* [2][C] */
    uint16_t *cx[2];      /* [2C] contexts of an anchor / a delta row */
    uint8_t *sym;         /* [2C] */
} layer_dec;

static void dec_free(layer_dec *d) {
    free(d->xa), free(d->mu), free(d->sa), free(d->sd), free(d->cx[0]), free(d->cx[1]), free(d->sym);
}

static kvl_status dec_open(layer_dec *d, const kvl_cachegen_file *f, int l, kvl_rans_models *m, kvl_err *err) {
    memset(d, 0, sizeof *d);
    d->f = f, d->l = l;
    const int C = d->C = f->n_head_kv * f->head_dim;
    kvl_ser_rd r = {f->layer[l], f->layer_len[l], 4, 0};
    d->steps = kvl_ser_get(&r, (size_t)C * 8);
    d->sink = kvl_ser_get(&r, (size_t)f->n_sink * 2 * C * 2);
    const uint32_t mb = kvl_ser_get_u32(&r);
    const uint8_t *mp = kvl_ser_get(&r, mb);
    const uint32_t sb = kvl_ser_get_u32(&r);
    const uint8_t *sp = kvl_ser_get(&r, sb);
    if (r.bad || kvl_ser_left(&r)) return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: layer %d section malformed", l);
    d->xa = malloc((size_t)2 * C * sizeof(float));
    d->mu = malloc((size_t)2 * C * sizeof(float));
    d->sa = malloc((size_t)2 * C * sizeof(float));
    d->sd = malloc((size_t)2 * C * sizeof(float));
    d->cx[0] = malloc((size_t)2 * C * sizeof(uint16_t));
    d->cx[1] = malloc((size_t)2 * C * sizeof(uint16_t));
    d->sym = malloc((size_t)2 * C);
    if (!d->xa || !d->mu || !d->sa || !d->sd || !d->cx[0] || !d->cx[1] || !d->sym)
        return kvl_err_set(err, KVL_ERR_NOMEM, "cachegen: out of memory");
    const int ncg = (C + f->chan_group - 1) / f->chan_group;
    for (int s = 0; s < 2; s++)
        for (int c = 0; c < C; c++) {
            const uint8_t *q = d->steps + ((size_t)s * C + c) * 4;
            if (!kvl_codec_f16_ok(q)) return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: layer %d %c channel %d: mean not finite", l, "KV"[s], c);
            d->mu[s * C + c] = kvl_fp16_to_fp32((uint16_t)(q[0] | q[1] << 8));
            d->sa[s * C + c] = step_of(q[2]);
            d->sd[s * C + c] = step_of(q[3]);
            d->cx[0][s * C + c] = ctx_of(s, 0, c, f->chan_group, ncg);
            d->cx[1][s * C + c] = ctx_of(s, 1, c, f->chan_group, ncg);
        }
    for (size_t j = 0; j < (size_t)f->n_sink * 2 * C; j++)
        if (!kvl_codec_f16_ok(d->sink + 2 * j)) return kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: layer %d: sink value not finite", l);
    size_t used = 0;
    kvl_status st = kvl_rans_models_read(m, mp, mb, &used, err);
    if (!st && used != mb) st = kvl_err_set(err, KVL_ERR_FORMAT, "cachegen: layer %d: %zu bytes after the models", l, (size_t)mb - used);
    if (!st) st = kvl_rans_dec_init(&d->rd, sp, sb, err);
    if (st) return wrap(err, st, l, -1);
    return KVL_OK;
}

/* Decode token d->i into k [C] and v [C]. */
static kvl_status dec_next(layer_dec *d, const kvl_rans_models *m, float *k, float *v, kvl_err *err) {
    const int C = d->C, S = d->f->n_sink, anchor = (d->i - S) % d->f->group == 0;
    kvl_status st = KVL_OK;
    if (d->i < S) {
        const uint8_t *q = d->sink + (size_t)d->i * 4 * C;
        for (int c = 0; c < C; c++) {
            k[c] = kvl_fp16_to_fp32((uint16_t)(q[2 * c] | q[2 * c + 1] << 8));
            v[c] = kvl_fp16_to_fp32((uint16_t)(q[2 * (C + c)] | q[2 * (C + c) + 1] << 8));
        }
        goto done;
    }
    st = kvl_rans_dec_run(&d->rd, m, d->cx[!anchor], (size_t)2 * C, d->sym, err);
    if (st) return wrap(err, st, d->l, d->i);
    for (int s = 0; s < 2; s++) {
        float *out = s ? v : k, *xa = d->xa + s * C;
        const uint8_t *sy = d->sym + s * C;
        if (anchor)
            for (int c = 0; c < C; c++) out[c] = xa[c] = d->mu[s * C + c] + (float)(sy[c] - 128) * d->sa[s * C + c];
        else
            for (int c = 0; c < C; c++) out[c] = xa[c] + (float)(sy[c] - 128) * d->sd[s * C + c];
    }
done:
    d->i++;
    if (d->i == d->f->n_tok && (st = kvl_rans_dec_end(&d->rd, err)))
        return wrap(err, st, d->l, -1);
    return KVL_OK;
}

kvl_status kvl_cachegen_decode_layer(const kvl_cachegen_file *f, int l, kvl_rans_models *m, float *k, float *v,
                                     kvl_err *err) {
    if (l < 0 || l >= f->n_layer) return kvl_err_set(err, KVL_ERR_ARG, "cachegen: layer %d", l);
    layer_dec d;
    kvl_status st = dec_open(&d, f, l, m, err);
    const size_t C = (size_t)f->n_head_kv * f->head_dim;
    for (int i = 0; i < f->n_tok && !st; i++) st = dec_next(&d, m, k + i * C, v + i * C, err);
    dec_free(&d);
    return st;
}

kvl_status kvl_cachegen_verify(const kvl_cachegen_file *f, kvl_cachegen_sizes *sizes, kvl_err *err) {
    kvl_rans_models *m = NULL;
    kvl_status st = kvl_cachegen_models(f, &m, err);
    const size_t C = (size_t)f->n_head_kv * f->head_dim;
    float *k = malloc(C * sizeof *k), *v = malloc(C * sizeof *v);
    if (!st && (!k || !v)) st = kvl_err_set(err, KVL_ERR_NOMEM, "cachegen: out of memory");
    kvl_cachegen_sizes sz;
    memset(&sz, 0, sizeof sz);
    sz.total = f->total;
    sz.header = f->total;
    for (int l = 0; l < f->n_layer && !st; l++) {
        layer_dec d;
        st = dec_open(&d, f, l, m, err);
        for (int i = 0; i < f->n_tok && !st; i++) st = dec_next(&d, m, k, v, err);
        dec_free(&d);
        sz.layer[l] = f->layer_len[l];
        sz.header -= f->layer_len[l];
        sz.steps += C * 8;
        sz.steps += (size_t)f->n_sink * C * 4;
        sz.models += rd32(f->layer[l] + 4 + C * 8 + (size_t)f->n_sink * C * 4);
    }
    sz.values = (size_t)f->n_tok * f->n_layer * C * 2;
    free(k), free(v);
    kvl_rans_models_free(m);
    if (!st && sizes) *sizes = sz;
    return st;
}

static kvl_status load(kvl_kv_table *t, const kvl_cachegen_file *f, int n_ctx, int append, kvl_err *err);

kvl_status kvl_cachegen_load(kvl_kv_table *t, const kvl_cachegen_file *f, int n_ctx, kvl_err *err) {
    return load(t, f, n_ctx, 0, err);
}

kvl_status kvl_cachegen_load_append(kvl_kv_table *t, const kvl_cachegen_file *f, int n_ctx, kvl_err *err) {
    return load(t, f, n_ctx, 1, err);
}

static kvl_status load(kvl_kv_table *t, const kvl_cachegen_file *f, int n_ctx, int append, kvl_err *err) {
    const kvl_kv_config *cfg = kvl_kv_pool_config(kvl_kv_table_pool(t));
    if (f->n_layer != cfg->n_layer || f->n_head_kv != cfg->n_head_kv || f->head_dim != cfg->head_dim)
        return kvl_err_set(err, KVL_ERR_ARG, "cachegen: geometry differs (file %d layers x %d kv-heads x %d, model %d x %d x %d)",
                           f->n_layer, f->n_head_kv, f->head_dim, cfg->n_layer, cfg->n_head_kv, cfg->head_dim);
    if (kvl_kv_txn_open(t) || (!append && kvl_kv_table_n_pages(t) != 0))
        return kvl_err_set(err, KVL_ERR_ARG, "cachegen: load into an empty table only");
    if (append) {
        /* every list holds the same number of rows, all before the file's first position */
        const int len0 = kvl_kv_table_len(t, 0, 0);
        for (int l = 0; l < cfg->n_layer; l++)
            for (int h = 0; h < cfg->n_head_kv; h++)
                if (kvl_kv_table_len(t, l, h) != len0)
                    return kvl_err_set(err, KVL_ERR_ARG, "cachegen: append needs lists of equal length (layer %d head %d)", l, h);
        int32_t last = -1;
        if (len0 > 0) {
            int32_t *pp = malloc((size_t)len0 * sizeof *pp);
            if (!pp) return kvl_err_set(err, KVL_ERR_NOMEM, "cachegen: out of memory");
            kvl_kv_table_positions(t, 0, 0, pp, len0);
            last = pp[len0 - 1];
            free(pp);
        }
        if ((int32_t)rd32(f->pos) <= last)
            return kvl_err_set(err, KVL_ERR_ARG, "cachegen: the file starts at position %d, the table already holds %d",
                               (int)rd32(f->pos), (int)last);
    }
    if (f->n_tok > n_ctx || (int32_t)rd32(f->pos + 4 * (size_t)(f->n_tok - 1)) >= n_ctx)
        return kvl_err_set(err, KVL_ERR_ARG, "cachegen: context too small (%d tokens up to position %d, context %d)", f->n_tok,
                           (int)rd32(f->pos + 4 * (size_t)(f->n_tok - 1)), n_ctx);
    const int H = f->n_head_kv, D = f->head_dim, C = H * D;
    kvl_rans_models *m = NULL;
    kvl_status st = kvl_cachegen_models(f, &m, err);
    float *k = malloc((size_t)BLOCK * C * sizeof *k), *v = malloc((size_t)BLOCK * C * sizeof *v);
    int32_t *pos = malloc((size_t)BLOCK * sizeof *pos);
    if (!st && (!k || !v || !pos)) st = kvl_err_set(err, KVL_ERR_NOMEM, "cachegen: out of memory");
    if (!st) st = kvl_kv_txn_begin(t, err);
    const int began = st == KVL_OK;
    for (int l = 0; l < f->n_layer && !st; l++) {
        layer_dec d;
        st = dec_open(&d, f, l, m, err);
        for (int i0 = 0; i0 < f->n_tok && !st; i0 += BLOCK) {
            const int nb = f->n_tok - i0 < BLOCK ? f->n_tok - i0 : BLOCK;
            for (int j = 0; j < nb && !st; j++) {
                /* rows [C] = [H][D] are the layout kvl_kv_append takes for one token */
                st = dec_next(&d, m, k + (size_t)j * C, v + (size_t)j * C, err);
                pos[j] = (int32_t)rd32(f->pos + 4 * (size_t)(i0 + j));
            }
            if (!st) st = kvl_kv_append(t, l, nb, pos, k, v, err);
        }
        dec_free(&d);
        if (!st) st = kvl_kv_seal(t, l, err);
    }
    if (!st) st = kvl_kv_policy_step(t, err);
    if (began) {
        if (st) kvl_kv_txn_rollback(t);
        else kvl_kv_txn_commit(t);
    }
    free(k), free(v), free(pos);
    kvl_rans_models_free(m);
    return st;
}

kvl_status kvl_cachegen_layer_symbols(const kvl_kv_table *t, int n_tok, int l, const kvl_cachegen_params *prm,
                                      uint8_t *sym, uint16_t *ctx, int *n_ctx, size_t *n_sym, kvl_err *err) {
    const kvl_kv_config *cfg = kvl_kv_pool_config(kvl_kv_table_pool(t));
    const int C = cfg->n_head_kv * cfg->head_dim;
    const int S = prm->n_sink < n_tok ? prm->n_sink : n_tok;
    layer_enc e = {.T = n_tok, .C = C, .G = prm->group, .cg = prm->chan_group, .S = S};
    kvl_status st = enc_alloc(&e, n_tok, C) ? kvl_err_set(err, KVL_ERR_NOMEM, "cachegen: out of memory") : KVL_OK;
    if (!st) st = quantize_layer(t, l, cfg->n_layer, prm, &e, err);
    if (!st) {
        memcpy(sym, e.sym, (size_t)(n_tok - S) * 2 * C);
        memcpy(ctx, e.ctx, (size_t)(n_tok - S) * 2 * C * sizeof *ctx);
        *n_sym = (size_t)(n_tok - S) * 2 * C;
        *n_ctx = n_contexts(C, prm->chan_group);
    }
    enc_free(&e);
    return st;
}
