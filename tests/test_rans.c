/* rANS coder (src/util/rans.c): round trips on uniform, skewed,
 * single-symbol, empty and random inputs with several contexts; the fast
 * decoder against the scalar reference; normalization invariants; the
 * serialized models parsed back; hostile streams and models rejected. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "util/rans.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

/* Encode sym/ctx, parse the models back into fresh ones, decode with both
 * decoders; returns the stream bytes (models + stream), or 0 on failure. */
static size_t round_trip(const uint8_t *sym, const uint16_t *ctx, size_t n, int n_ctx) {
    kvl_err e;
    kvl_rans_models *m = NULL, *d = NULL;
    CHECK(kvl_rans_models_create(n_ctx, &m, &e) == KVL_OK);
    CHECK(kvl_rans_count(m, sym, ctx, n, &e) == KVL_OK);
    kvl_rans_normalize(m);
    for (int k = 0; k < n_ctx; k++) {
        uint32_t s = 0;
        for (int v = 0; v < KVL_RANS_ALPHA; v++) s += kvl_rans_freq(m, k, v);
        CHECK(s == 0 || s == KVL_RANS_TOTAL);
    }
    for (size_t i = 0; i < n; i++)
        if (!kvl_rans_freq(m, ctx[i], sym[i])) {
            CHECK_MSG(0, "counted symbol %u has no frequency", sym[i]);
            break;
        }
    const size_t mb = kvl_rans_models_bytes(m), cap = kvl_rans_bound(n);
    uint8_t *mbuf = malloc(mb + 1), *sbuf = malloc(cap), *out = malloc(n + 1), *out2 = malloc(n + 1);
    CHECK(kvl_rans_models_write(m, mbuf, mb) == mb);
    CHECK(kvl_rans_models_write(m, mbuf, mb ? mb - 1 : 0) == 0 || mb == 0);
    size_t len = 0, used = 0;
    CHECK(kvl_rans_encode(m, sym, ctx, n, sbuf, cap, &len, &e) == KVL_OK);
    CHECK(kvl_rans_models_create(n_ctx, &d, &e) == KVL_OK);
    CHECK(kvl_rans_models_read(d, mbuf, mb, &used, &e) == KVL_OK);
    CHECK(used == mb);
    for (int k = 0; k < n_ctx; k++)
        for (int v = 0; v < KVL_RANS_ALPHA; v++)
            if (kvl_rans_freq(d, k, v) != kvl_rans_freq(m, k, v)) {
                CHECK_MSG(0, "model of context %d differs after parsing", k);
                k = n_ctx;
                break;
            }
    kvl_status st = kvl_rans_decode(d, ctx, n, sbuf, len, out, &e);
    CHECK_MSG(st == KVL_OK, "%s", e.msg);
    CHECK(st == KVL_OK && (n == 0 || memcmp(out, sym, n) == 0));
    st = kvl_rans_decode_ref(d, ctx, n, sbuf, len, out2, &e);
    CHECK_MSG(st == KVL_OK, "%s", e.msg);
    CHECK(st == KVL_OK && (n == 0 || memcmp(out2, sym, n) == 0));
    /* the stream is within 1% + 16 bytes of the ideal cost */
    CHECK_MSG(len * 8.0 <= kvl_rans_cost_bits(m) * 1.01 + 16 * 8 + 64, "len %zu ideal %.0f bits", len,
              kvl_rans_cost_bits(m));
    /* truncated and extended streams are rejected */
    if (len > 8) CHECK(kvl_rans_decode(d, ctx, n, sbuf, len - 1, out, &e) == KVL_ERR_FORMAT);
    CHECK(kvl_rans_decode(d, ctx, n, sbuf, len > 3 ? 3 : len, out, &e) == KVL_ERR_FORMAT);
    free(mbuf), free(sbuf), free(out), free(out2);
    kvl_rans_models_free(m);
    kvl_rans_models_free(d);
    return mb + len;
}

int main(void) {
    enum { N = 200000 };
    uint8_t *sym = malloc(N);
    uint16_t *ctx = malloc(N * sizeof *ctx);
    if (!sym || !ctx) return 1;
    memset(sym, 0, N);
    memset(ctx, 0, N * sizeof *ctx);
    /* empty */
    CHECK(round_trip(sym, ctx, 0, 1) == 1 + 8);
    /* one symbol, single-symbol context (frequency TOTAL: zero bits a symbol) */
    for (int i = 0; i < N; i++) sym[i] = 7, ctx[i] = 0;
    size_t b = round_trip(sym, ctx, 1, 1);
    CHECK(b > 0);
    b = round_trip(sym, ctx, N, 1);
    CHECK_MSG(b <= 16, "single-symbol stream of %d symbols took %zu bytes", N, b);
    /* uniform bytes: ~8 bits a symbol */
    for (int i = 0; i < N; i++) sym[i] = (uint8_t)rnd(), ctx[i] = 0;
    b = round_trip(sym, ctx, N, 1);
    CHECK_MSG(b * 8.0 / N < 8.05 && b * 8.0 / N > 7.9, "uniform: %.3f bits", b * 8.0 / N);
    /* skewed, several contexts: geometric around 128 with per-context spread */
    for (int i = 0; i < N; i++) {
        const int k = i % 7;
        int v = 128;
        while ((rnd() & 255) < 64u + 24u * (unsigned)k && v < 255) v++;
        sym[i] = (uint8_t)((rnd() & 1) ? v : 256 - v);
        ctx[i] = (uint16_t)k;
    }
    b = round_trip(sym, ctx, N, 9); /* contexts 7 and 8 empty */
    CHECK(b < N);
    /* extreme skew: one symbol almost always, rare others (frequencies of 1) */
    for (int i = 0; i < N; i++) sym[i] = (rnd() % 5000) ? 3 : (uint8_t)rnd(), ctx[i] = (uint16_t)(i & 1);
    b = round_trip(sym, ctx, N, 2);
    CHECK_MSG(b * 8.0 / N < 0.1, "skewed: %.3f bits", b * 8.0 / N);
    /* every byte value in one context at random counts (normalization with 256 symbols) */
    for (int i = 0; i < N; i++) sym[i] = (uint8_t)(i < 256 ? (uint32_t)i : (rnd() % 3 ? 0u : rnd())), ctx[i] = 0;
    round_trip(sym, ctx, N, 1);
    /* random models, random lengths */
    for (int it = 0; it < 40; it++) {
        const int nc = 1 + (int)(rnd() % 50), n = (int)(rnd() % 5000);
        const int span = 1 + (int)(rnd() % 256);
        for (int i = 0; i < n; i++) sym[i] = (uint8_t)((rnd() % span) * (rnd() % span) / span), ctx[i] = (uint16_t)(rnd() % nc);
        round_trip(sym, ctx, (size_t)n, nc);
    }

    /* fuzz seeds (KVL_WRITE_SEEDS=DIR): [n_ctx-1][u16 n][models][stream] of
     * 3 contexts round-robin, as tests/fuzz_rans.c reads them */
    const char *seeds = getenv("KVL_WRITE_SEEDS");
    for (int sd = 0; seeds && sd < 3; sd++) {
        const int n = 300 * (sd + 1);
        uint16_t rc[900];
        for (int i = 0; i < n; i++) rc[i] = (uint16_t)(i % 3), sym[i] = (uint8_t)(120 + (rnd() % (3u + 20u * (unsigned)sd)) * (rnd() & 1));
        kvl_err e0;
        kvl_rans_models *m0 = NULL;
        if (kvl_rans_models_create(3, &m0, &e0)) break;
        kvl_rans_count(m0, sym, rc, (size_t)n, &e0);
        kvl_rans_normalize(m0);
        uint8_t buf[4096];
        buf[0] = 2, buf[1] = (uint8_t)n, buf[2] = (uint8_t)(n >> 8);
        size_t mb = kvl_rans_models_write(m0, buf + 3, sizeof buf - 3), len = 0;
        if (kvl_rans_encode(m0, sym, rc, (size_t)n, buf + 3 + mb, sizeof buf - 3 - mb, &len, &e0) == KVL_OK) {
            char path[512];
            snprintf(path, sizeof path, "%s/real%d", seeds, sd);
            FILE *f = fopen(path, "wb");
            if (f) fwrite(buf, 1, 3 + mb + len, f), fclose(f);
        }
        kvl_rans_models_free(m0);
    }

    /* hostile inputs */
    kvl_err e;
    kvl_rans_models *m = NULL;
    CHECK(kvl_rans_models_create(2, &m, &e) == KVL_OK);
    const uint8_t bad_sum[] = {2, 10, 11, 0x80, 0x10, 1}; /* 2048 + 1 != 4096 */
    CHECK(kvl_rans_models_read(m, bad_sum, sizeof bad_sum, NULL, &e) == KVL_ERR_FORMAT);
    const uint8_t bad_range[] = {1, 20, 10, 0x80, 0x20};
    CHECK(kvl_rans_models_read(m, bad_range, sizeof bad_range, NULL, &e) == KVL_ERR_FORMAT);
    const uint8_t trunc[] = {1, 5};
    CHECK(kvl_rans_models_read(m, trunc, sizeof trunc, NULL, &e) == KVL_ERR_FORMAT);
    const uint8_t zero_edge[] = {1, 4, 5, 0x80, 0x20, 0}; /* hi has frequency 0 */
    CHECK(kvl_rans_models_read(m, zero_edge, sizeof zero_edge, NULL, &e) == KVL_ERR_FORMAT);
    const uint8_t ok[] = {1, 9, 9, 0x80, 0x20, 0}; /* context 0: symbol 9 only; context 1 empty */
    CHECK(kvl_rans_models_read(m, ok, sizeof ok, NULL, &e) == KVL_OK);
    uint16_t c2[4] = {0, 1, 0, 0};
    uint8_t out[4];
    const uint8_t st_ok[8] = {0, 0, 0x80, 0, 0, 0, 0x80, 0};
    CHECK(kvl_rans_decode(m, c2, 1, st_ok, 8, out, &e) == KVL_OK && out[0] == 9);
    CHECK(kvl_rans_decode(m, c2, 2, st_ok, 8, out, &e) == KVL_ERR_FORMAT);     /* empty context 1 */
    CHECK(kvl_rans_decode_ref(m, c2, 2, st_ok, 8, out, &e) == KVL_ERR_FORMAT);
    const uint8_t st_low[8] = {0, 0, 0x7f, 0, 0, 0, 0x80, 0};
    CHECK(kvl_rans_decode(m, c2, 1, st_low, 8, out, &e) == KVL_ERR_FORMAT);   /* state below L */
    const uint8_t st_high[8] = {0, 0, 0x80, 0x80, 0, 0, 0x80, 0};
    CHECK(kvl_rans_decode(m, c2, 1, st_high, 8, out, &e) == KVL_ERR_FORMAT);  /* state >= 2^31 */
    uint16_t c3[1] = {5};
    CHECK(kvl_rans_decode(m, c3, 1, st_ok, 8, out, &e) == KVL_ERR_FORMAT);    /* context out of range */
    CHECK(kvl_rans_encode(m, sym, c3, 1, (uint8_t[64]){0}, 64, &(size_t){0}, &e) == KVL_ERR_ARG);
    kvl_rans_models_free(m);
    free(sym);
    free(ctx);
    KVL_TEST_END();
}
