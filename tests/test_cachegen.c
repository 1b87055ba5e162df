/* CacheGen format (src/kv/cachegen.c, src/engine/cachegen_seq.c):
 *  - table level: synthetic K/V with outlier channels and a huge sink token
 *    round-trip within half a quantization step per value (the step read
 *    back from the stream; sinks within f16 rounding), for every level;
 *    bits/value fall and error grows with the level; group sizes 1..7;
 *    unequal lists (evicted) refused with a message;
 *  - sequence level on the committed tiny model: a prefilled f16 sequence
 *    exported and imported into contexts of every codec (f32, f16, int8,
 *    int4, int4z, fp8, kivi2, kivi4z, int4z+rot, squat): positions and token
 *    ids restored, rows within the target codec's error of the decoded
 *    file, decoding continues; describe works without a model; chunks
 *    of the sequence at different levels appended in order rebuild it
 *    (out of order refused, nothing changed); per-chunk sizes per level;
 *  - hostile files: every truncation and sampled single-byte corruptions
 *    rejected with a message and the pool unchanged; a foreign model
 *    identity and geometry named in the error; corruptions behind
 *    recomputed checksums never crash and leave the pool unchanged when
 *    rejected.
 * KVL_WRITE_SEEDS=DIR writes small files as fuzz seeds (tests/fuzz_cachegen.c). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "kv/cachegen.h"
#include "kv/codec.h"
#include "test.h"
#include "util/crc32c.h"
#include "util/fp16.h"
#include "util/rans.h"

static uint64_t rng = 0x12345678abcdefull;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static float grand(void) { return (float)(sqrt(-2 * log(urand() + 1e-12)) * cos(6.283185307 * urand())); }

static float step_of_code(int code) { return ldexpf(powf(2.0f, (float)(code & 7) / 8.0f), (code >> 3) - 24); }

/* ---- table level ---------------------------------------------------------------------- */

static void table_round_trip(void) {
    enum { L = 3, H = 2, D = 16, T = 45, C = H * D };
    kvl_kv_config cfg = {.n_layer = L, .n_head_kv = H, .head_dim = D, .page_tokens = 8, .budget_bytes = 1 << 24,
                         .codec = kvl_codec_find("f32")};
    kvl_err e;
    kvl_kv_pool *p = NULL;
    kvl_kv_table *t = NULL;
    CHECK(kvl_kv_pool_create(&cfg, &p, &e) == KVL_OK);
    CHECK(kvl_kv_table_create(p, &t, &e) == KVL_OK);
    static float k[T][H][D], v[T][H][D];
    int32_t pos[T];
    for (int l = 0; l < L; l++) {
        for (int i = 0; i < T; i++) {
            pos[i] = i;
            for (int h = 0; h < H; h++)
                for (int d = 0; d < D; d++) {
                    const float outl = d == 3 ? 20.0f : d == 7 ? -8.0f : 0.0f; /* outlier channels */
                    k[i][h][d] = outl + grand() * (1 + (float)d / 4) + 0.3f * sinf((float)i * 0.2f + (float)d);
                    v[i][h][d] = grand() * 0.5f + (i == 0 ? 100.0f : 0.0f); /* a huge sink token */
                }
        }
        CHECK(kvl_kv_append(t, l, T, pos, &k[0][0][0], &v[0][0][0], &e) == KVL_OK);
    }
    double prev_bits = 1e9, prev_err = 0;
    for (int level = 0; level < KVL_CG_LEVELS; level++) {
        for (int group = 1; group <= 7; group += level == 0 ? 1 : 6) {
            kvl_cachegen_params prm;
            CHECK(kvl_cachegen_level(level, 1.0f, &prm, &e) == KVL_OK);
            prm.group = group;
            prm.chan_group = 3;
            kvl_ser_buf b = {0};
            kvl_cachegen_sizes sz;
            kvl_status st = kvl_cachegen_encode(t, T, NULL, 42, "f32", &prm, &b, &sz, &e);
            CHECK_MSG(st == KVL_OK, "%s", e.msg);
            CHECK(sz.total == b.n && sz.values == (size_t)T * L * C * 2);
            kvl_cachegen_file *f = malloc(sizeof *f);
            if (st == KVL_OK) st = kvl_cachegen_parse(b.p, b.n, f, &e);
            CHECK_MSG(st == KVL_OK, "%s", e.msg);
            if (st) {
                free(f), free(b.p);
                continue;
            }
            CHECK(f->identity == 42 && f->n_tok == T && f->group == group && f->level == level && !f->tokens);
            kvl_cachegen_sizes vz;
            CHECK(kvl_cachegen_verify(f, &vz, &e) == KVL_OK && vz.total == sz.total && vz.models == sz.models);
            kvl_rans_models *m = NULL;
            CHECK(kvl_cachegen_models(f, &m, &e) == KVL_OK);
            static float dk[T][C], dv[T][C];
            double se = 0, ss = 0;
            int bad = 0;
            for (int l = 0; l < L; l++) {
                CHECK(kvl_cachegen_decode_layer(f, l, m, &dk[0][0], &dv[0][0], &e) == KVL_OK);
                const uint8_t *codes = f->layer[l] + 4;
                for (int i = 0; i < T; i++)
                    for (int c = 0; c < C; c++)
                        for (int s = 0; s < 2; s++) {
                            float x[D], y[D];
                            kvl_kv_table_decode(t, l, c / D, i, s ? NULL : x, s ? x : NULL);
                            (void)y;
                            const float want = x[c % D], got = s ? dv[i][c] : dk[i][c];
                            float tol;
                            if (i < f->n_sink) tol = fabsf(want) * 1.0f / 2048 + 1e-7f;
                            else {
                                const int anchor = (i - f->n_sink) % group == 0;
                                tol = 0.5f * step_of_code(codes[(s * C + c) * 4 + (anchor ? 2 : 3)]) * 1.0001f + 1e-6f;
                                se += (double)(want - got) * (want - got), ss += (double)want * want;
                            }
                            if (!(fabsf(want - got) <= tol) && bad++ < 3)
                                CHECK_MSG(0, "level %d group %d layer %d token %d %c channel %d: %g vs %g (tol %g)", level,
                                          group, l, i, "KV"[s], c, want, got, tol);
                        }
            }
            CHECK(bad == 0);
            if (group == 1) { /* coarser levels: fewer bits, more error */
                const double bits = 8.0 * (double)b.n / (double)sz.values, err = sqrt(se / ss);
                CHECK_MSG(bits < prev_bits && err > prev_err, "level %d: %.3f bits, rel err %.4f", level, bits, err);
                prev_bits = bits, prev_err = err;
            }
            kvl_rans_models_free(m);
            free(f);
            free(b.p);
        }
    }
    /* unequal lists (as after an eviction) are refused */
    int idx[1] = {5};
    CHECK(kvl_kv_drop(t, 1, 1, idx, 1, &e) == KVL_OK);
    kvl_cachegen_params prm;
    kvl_cachegen_level(1, 1.0f, &prm, &e);
    kvl_ser_buf b = {0};
    CHECK(kvl_cachegen_encode(t, T, NULL, 42, "f32", &prm, &b, NULL, &e) == KVL_ERR_ARG);
    CHECK_MSG(strstr(e.msg, "layer 1 head 1") != NULL, "%s", e.msg);
    free(b.p);
    CHECK(kvl_cachegen_level(4, 1.0f, &prm, &e) == KVL_ERR_ARG);
    CHECK(kvl_cachegen_level(0, 0.0f, &prm, &e) == KVL_ERR_ARG);
    kvl_kv_table_free(t);
    kvl_kv_pool_free(p);
}

/* ---- sequence level ---------------------------------------------------------------------- */

static const char *tiny(const char *name, char *buf, size_t cap) {
    const char *d = getenv("KVL_TINY_DIR");
    snprintf(buf, cap, "%s/%s", d && *d ? d : "tests/data/tiny", name);
    return buf;
}

static kvl_ctx *mkctx(const kvl_model *m, const char *codec) {
    kvl_ctx_params p;
    kvl_ctx_params_default(&p);
    p.n_ctx = 128;
    p.n_threads = 1;
    p.kv_codec = codec;
    p.page_tokens = 8;
    p.n_seq_max = 4;
    kvl_ctx *c = NULL;
    char err[256] = "";
    CHECK_MSG(kvl_ctx_create(m, &p, &c, err, sizeof err) == KVL_OK, "ctx %s: %s", codec, err);
    return c;
}

static void fix_crcs(uint8_t *b, size_t n) {
    size_t off = KVL_SER_HEADER_BYTES;
    while (off + KVL_SER_SECTION_BYTES <= n) {
        uint64_t sl;
        memcpy(&sl, b + off + 8, 8);
        if (sl > n - off - KVL_SER_SECTION_BYTES) break;
        const uint32_t c = kvl_crc32c(b + off + KVL_SER_SECTION_BYTES, (size_t)sl);
        memcpy(b + off + 4, &c, 4);
        off += KVL_SER_SECTION_BYTES + (size_t)sl;
    }
    if (n >= 32) {
        const uint32_t c = kvl_crc32c(b, 28);
        memcpy(b + 28, &c, 4);
    }
}

static void write_seed(const char *dir, const char *name, const void *b, size_t n) {
    if (!dir) return;
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f) fwrite(b, 1, n, f), fclose(f);
}

static void seq_level(void) {
    char path[512];
    kvl_model *m = NULL, *m2 = NULL;
    char err[256];
    if (kvl_model_load(tiny("llama_q.gguf", path, sizeof path), &m, err, sizeof err) != KVL_OK) {
        CHECK_MSG(0, "cannot load %s: %s", path, err);
        return;
    }
    kvl_model_info info;
    kvl_model_get_info(m, &info);
    const int nv = info.n_vocab, C = info.n_head_kv * info.head_dim;
    enum { N = 40 };
    kvl_token toks[N];
    for (int i = 0; i < N; i++) toks[i] = (kvl_token)((7 + 31 * i) % nv);
    kvl_ctx *src = mkctx(m, "f16");
    kvl_seq *s = NULL;
    CHECK(kvl_seq_create(src, &s) == KVL_OK && kvl_prefill(s, toks, N, NULL, NULL) == KVL_OK);
    const char *seeds = getenv("KVL_WRITE_SEEDS");
    static const char *const codecs[] = {"f32", "f16", "int8", "int4", "int4z", "fp8", "kivi2", "kivi4z", "int4z+rot", "squat"};
    static const float tol[] = {1e-6f, 1e-3f, 0.01f, 0.1f, 0.12f, 0.07f, 0.7f, 0.2f, 0.15f, 0.7f};
    float *logits = malloc(sizeof(float) * (size_t)nv);
    for (int level = 0; level < KVL_CG_LEVELS; level++) {
        const kvl_cachegen_opts o = {level, 0, 0, 0};
        void *buf = NULL;
        size_t len = 0;
        kvl_status st = kvl_seq_save_cachegen(s, &o, &buf, &len);
        CHECK_MSG(st == KVL_OK, "%s", kvl_ctx_error(src));
        if (st) continue;
        char sn[32];
        snprintf(sn, sizeof sn, "tiny_level%d", level);
        write_seed(seeds, sn, buf, len);
        char *text = NULL;
        int max_pos = 0;
        CHECK(kvl_cachegen_describe(buf, len, &text, &max_pos, err, sizeof err) == KVL_OK);
        CHECK(text && strstr(text, "bits/value") && max_pos == N);
        free(text);
        /* the file decoded to float, for the per-codec checks */
        kvl_cachegen_file *f = malloc(sizeof *f);
        CHECK(kvl_cachegen_parse(buf, len, f, NULL) == KVL_OK);
        kvl_rans_models *rm = NULL;
        kvl_cachegen_models(f, &rm, NULL);
        float *fk = malloc(sizeof(float) * (size_t)info.n_layer * N * C), *fv = malloc(sizeof(float) * (size_t)info.n_layer * N * C);
        for (int l = 0; l < info.n_layer; l++)
            CHECK(kvl_cachegen_decode_layer(f, l, rm, fk + (size_t)l * N * C, fv + (size_t)l * N * C, NULL) == KVL_OK);
        kvl_rans_models_free(rm);
        for (size_t ci = 0; ci < sizeof codecs / sizeof *codecs; ci++) {
            if (level > 0 && ci > 2 && ci != 6) continue; /* every codec at level 0, a few at the others */
            kvl_ctx *c = mkctx(m, codecs[ci]);
            if (!c) continue;
            kvl_seq *r = NULL;
            st = kvl_seq_load_cachegen(c, buf, len, &r);
            CHECK_MSG(st == KVL_OK, "level %d into %s: %s", level, codecs[ci], kvl_ctx_error(c));
            if (st) {
                kvl_ctx_free(c);
                continue;
            }
            CHECK(kvl_seq_pos(r) == N);
            kvl_token back[N];
            CHECK(kvl_seq_tokens(r, back, N) == N && !memcmp(back, toks, sizeof toks));
            int32_t pp[N];
            CHECK(kvl_kv_table_positions(r->t, info.n_layer - 1, info.n_head_kv - 1, pp, N) == N && pp[N - 1] == N - 1);
            int bad = 0;
            for (int l = 0; l < info.n_layer; l++)
                for (int h = 0; h < info.n_head_kv; h++)
                    for (int i = 0; i < N; i++) {
                        float k[256], v[256];
                        kvl_kv_table_decode(r->t, l, h, i, k, v);
                        const float *wk = fk + ((size_t)l * N + i) * C + h * info.head_dim;
                        const float *wv = fv + ((size_t)l * N + i) * C + h * info.head_dim;
                        float mx = 0;
                        for (int d = 0; d < info.head_dim; d++) mx = fmaxf(mx, fmaxf(fabsf(wk[d]), fabsf(wv[d])));
                        for (int d = 0; d < info.head_dim; d++)
                            if ((fabsf(k[d] - wk[d]) > tol[ci] * mx + 1e-6f || fabsf(v[d] - wv[d]) > tol[ci] * mx + 1e-6f) &&
                                bad++ < 2)
                                CHECK_MSG(0, "%s layer %d head %d token %d: %g/%g vs %g/%g", codecs[ci], l, h, i, k[d], v[d],
                                          wk[d], wv[d]);
                    }
            CHECK(bad == 0);
            st = kvl_decode(r, toks[0], logits);
            CHECK(st == KVL_OK && isfinite(logits[0]));
            kvl_seq_free(r);
            kvl_ctx_free(c);
        }
        free(fk), free(fv), free(f);
        free(buf);
    }

    /* chunks (streaming): [0,16) level 0, [16,32) level 3, [32,40) level 2 appended into int8 pages */
    {
        kvl_ctx *ci = mkctx(m, "int8");
        kvl_seq *r = NULL;
        CHECK(kvl_seq_create(ci, &r) == KVL_OK);
        static const int t0s[3] = {0, 16, 32}, ns[3] = {16, 16, 8}, lvs[3] = {0, 3, 2};
        void *cb[3] = {0};
        size_t cl[3] = {0};
        for (int k = 0; k < 3; k++) {
            const kvl_cachegen_opts oc = {lvs[k], 0, 0, 0};
            CHECK_MSG(kvl_seq_save_cachegen_chunk(s, t0s[k], ns[k], &oc, &cb[k], &cl[k]) == KVL_OK, "%s", kvl_ctx_error(src));
        }
        const size_t used = kvl_kv_pool_used(ci->pool);
        CHECK(kvl_seq_append_cachegen(r, cb[1], cl[1]) == KVL_ERR_FORMAT && strstr(kvl_ctx_error(ci), "continues at 0"));
        CHECK(kvl_seq_pos(r) == 0 && kvl_kv_pool_used(ci->pool) == used);
        int bad = 0;
        for (int k = 0; k < 3; k++) {
            CHECK_MSG(kvl_seq_append_cachegen(r, cb[k], cl[k]) == KVL_OK, "chunk %d: %s", k, kvl_ctx_error(ci));
            kvl_cachegen_file *f = malloc(sizeof *f);
            kvl_rans_models *rm = NULL;
            CHECK(kvl_cachegen_parse(cb[k], cl[k], f, NULL) == KVL_OK && kvl_cachegen_models(f, &rm, NULL) == KVL_OK);
            CHECK(f->n_sink == (k == 0 ? 4 : 0));
            float *fk = malloc(sizeof(float) * (size_t)ns[k] * C), *fv = malloc(sizeof(float) * (size_t)ns[k] * C);
            for (int l = 0; l < info.n_layer; l++) {
                CHECK(kvl_cachegen_decode_layer(f, l, rm, fk, fv, NULL) == KVL_OK);
                for (int i = 0; i < ns[k]; i++)
                    for (int h = 0; h < info.n_head_kv; h++) {
                        float kk[256], vv[256];
                        kvl_kv_table_decode(r->t, l, h, t0s[k] + i, kk, vv);
                        const float *wk = fk + (size_t)i * C + h * info.head_dim, *wv = fv + (size_t)i * C + h * info.head_dim;
                        float mx = 0;
                        for (int d = 0; d < info.head_dim; d++) mx = fmaxf(mx, fmaxf(fabsf(wk[d]), fabsf(wv[d])));
                        for (int d = 0; d < info.head_dim; d++)
                            bad += fabsf(kk[d] - wk[d]) > 0.01f * mx + 1e-6f || fabsf(vv[d] - wv[d]) > 0.01f * mx + 1e-6f;
                    }
            }
            free(fk), free(fv), free(f);
            kvl_rans_models_free(rm);
        }
        CHECK_MSG(bad == 0, "%d values of the appended chunks off", bad);
        kvl_token back[N];
        CHECK(kvl_seq_pos(r) == N && kvl_seq_tokens(r, back, N) == N && !memcmp(back, toks, sizeof toks));
        CHECK(kvl_decode(r, toks[1], logits) == KVL_OK && isfinite(logits[0]));
        CHECK(kvl_seq_append_cachegen(r, cb[2], cl[2]) == KVL_ERR_FORMAT); /* positions already held */
        for (int k = 0; k < 3; k++) free(cb[k]);
        if (seeds) { /* a chunk at positions 2.. for the fuzzer's append path */
            const kvl_cachegen_opts oc = {1, 0, 0, 0};
            void *sb2 = NULL;
            size_t sl2 = 0;
            if (kvl_seq_save_cachegen_chunk(s, 2, 10, &oc, &sb2, &sl2) == KVL_OK) write_seed(seeds, "tiny_chunk_at2", sb2, sl2);
            free(sb2);
        }
        kvl_cachegen_chunk ch[3];
        int nch = 0;
        CHECK(kvl_cachegen_chunk_sizes(s, 16, ch, 2, &nch) == KVL_ERR_ARG && nch == 3);
        CHECK(kvl_cachegen_chunk_sizes(s, 16, ch, 3, &nch) == KVL_OK && nch == 3);
        CHECK(ch[2].tok0 == 32 && ch[2].n_tok == 8);
        for (int k = 0; k < 3; k++)
            CHECK(ch[k].bytes[0] > ch[k].bytes[1] && ch[k].bytes[1] > ch[k].bytes[3] && ch[k].enc_s[0] > 0 && ch[k].dec_s[3] > 0);
        kvl_seq_free(r);
        kvl_ctx_free(ci);
    }

    /* hostile files: level 2 into int8 pages */
    const kvl_cachegen_opts o = {2, 0, 0, 0};
    void *vb = NULL;
    size_t len = 0;
    CHECK(kvl_seq_save_cachegen(s, &o, &vb, &len) == KVL_OK);
    uint8_t *good = vb, *tmp = malloc(len);
    kvl_ctx *c = mkctx(m, "int8");
    const size_t used0 = kvl_kv_pool_used(c->pool);
    int rejected = 0, total = 0;
    for (size_t n = 0; n < len; n += n < 64 ? 1 : 1 + len / 300) { /* truncations */
        kvl_seq *r = NULL;
        total++;
        rejected += kvl_seq_load_cachegen(c, good, n, &r) != KVL_OK && r == NULL && kvl_ctx_error(c)[0];
        kvl_seq_free(r);
    }
    CHECK_MSG(rejected == total, "%d of %d truncations rejected", rejected, total);
    CHECK(kvl_kv_pool_used(c->pool) == used0);
    rejected = total = 0;
    for (size_t at = 0; at < len; at += at < 96 ? 1 : 1 + len / 400) { /* single-byte corruptions */
        memcpy(tmp, good, len);
        tmp[at] ^= (uint8_t)(1u << (at % 8));
        kvl_seq *r = NULL;
        total++;
        rejected += kvl_seq_load_cachegen(c, tmp, len, &r) != KVL_OK && r == NULL;
        kvl_seq_free(r);
    }
    CHECK_MSG(rejected == total, "%d of %d corruptions rejected", rejected, total);
    CHECK(kvl_kv_pool_used(c->pool) == used0);
    /* behind recomputed checksums: no crash, pool unchanged when rejected */
    int loaded = 0;
    for (int it = 0; it < 300; it++) {
        memcpy(tmp, good, len);
        const size_t at = 32 + (size_t)(urand() * (double)(len - 32));
        tmp[at] = (uint8_t)(urand() * 256);
        fix_crcs(tmp, len);
        kvl_seq *r = NULL;
        if (kvl_seq_load_cachegen(c, tmp, len, &r) == KVL_OK) loaded++, kvl_seq_free(r);
        else CHECK(r == NULL);
        CHECK(kvl_kv_pool_used(c->pool) == used0);
        if (it == 7) write_seed(seeds, "mutated", tmp, len);
    }
    printf("structural mutations behind fresh checksums: %d of 300 still loaded (symbol bytes decode to other values)\n", loaded);
    /* foreign model, geometry */
    memcpy(tmp, good, len);
    tmp[16] ^= 1;
    fix_crcs(tmp, len);
    kvl_seq *r = NULL;
    CHECK(kvl_seq_load_cachegen(c, tmp, len, &r) == KVL_ERR_ARG && strstr(kvl_ctx_error(c), "identity"));
    if (kvl_model_load(tiny("qwen2_q8.gguf", path, sizeof path), &m2, err, sizeof err) == KVL_OK) {
        kvl_ctx *c2 = mkctx(m2, "f16");
        CHECK(kvl_seq_load_cachegen(c2, good, len, &r) == KVL_ERR_ARG && strstr(kvl_ctx_error(c2), "identity"));
        kvl_ctx_free(c2);
    }
    /* a file of the right identity but other geometry: rewrite CONFIG's n_head_kv via the table API */
    kvl_cachegen_file *f = malloc(sizeof *f);
    CHECK(kvl_cachegen_parse(good, len, f, NULL) == KVL_OK);
    kvl_kv_config kc = {.n_layer = info.n_layer, .n_head_kv = info.n_head_kv, .head_dim = info.head_dim + 1,
                        .page_tokens = 8, .budget_bytes = 1 << 24, .codec = kvl_codec_find("f16")};
    kvl_kv_pool *pp = NULL;
    kvl_kv_table *tt = NULL;
    kvl_err e;
    CHECK(kvl_kv_pool_create(&kc, &pp, &e) == KVL_OK && kvl_kv_table_create(pp, &tt, &e) == KVL_OK);
    CHECK(kvl_cachegen_load(tt, f, 128, &e) == KVL_ERR_ARG && strstr(e.msg, "geometry"));
    CHECK(kvl_kv_pool_used(pp) == 0);
    kvl_kv_table_free(tt);
    kvl_kv_pool_free(pp);
    free(f);
    /* session files are not CacheGen files */
    void *sb = NULL;
    size_t sl = 0;
    CHECK(kvl_seq_save(s, &sb, &sl) == KVL_OK);
    CHECK(!kvl_cachegen_is_file(sb, sl) && kvl_cachegen_is_file(good, len));
    CHECK(kvl_seq_load_cachegen(c, sb, sl, &r) == KVL_ERR_FORMAT && strstr(kvl_ctx_error(c), "magic"));
    free(sb);
    /* an evicted sequence (a list shorter than the position) cannot be exported */
    kvl_seq *se = NULL;
    CHECK(kvl_seq_fork(s, &se) == KVL_OK);
    int drop[1] = {9};
    CHECK(kvl_kv_drop(se->t, 1, 0, drop, 1, &e) == KVL_OK);
    void *eb = NULL;
    size_t el = 0;
    const kvl_status est = kvl_seq_save_cachegen(se, &o, &eb, &el);
    CHECK_MSG(est == KVL_ERR_ARG && strstr(kvl_ctx_error(src), "evicted"), "%d %s", est, kvl_ctx_error(src));
    free(eb);
    kvl_seq_free(se);
    free(tmp);
    free(good);
    free(logits);
    kvl_ctx_free(c);
    kvl_seq_free(s);
    kvl_ctx_free(src);
    kvl_model_free(m);
    kvl_model_free(m2);
}

int main(void) {
    table_round_trip();
    seq_level();
    KVL_TEST_END();
}
