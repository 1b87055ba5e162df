/* Device test of sealing (make test-cuda; needs a GPU): kvl_cuda_kv_seal
 * (src/cuda/kv_seal_kivi.cu) against the CPU seal of the same open pages,
 * byte for byte: kivi2z and kivi4z, head_dim 64 and 128, P 16, 32, 64 and
 * 256 (the last with more than 48 KB of shared memory), fit=cover and
 * fit=mse, on open pages whose rows exercise the edge cases of the
 * parameter choice and the code rounding: random values, values on a grid
 * of quarter steps (exact ties of (x - min) / s), constant and all-zero
 * channels and groups (zero ranges), values near +-65504 with f16 inf and
 * NaN (open_val's clamping, zero points at the int8 limits), and small
 * rows with outliers. The reference page is what kvl_kv_seal writes:
 * positions copied, K and V segments by the codec's seal() with its
 * instance state from the spec, padding zero. Also: the pages given empty
 * ranges and the pages of other lists stay untouched (poison kept), and
 * page_ids[k] becomes the sealed page's id exactly for the sealed pages. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/kvl_cuda.h"
#include "cuda/lm_ops.h"
#include "kv/codec.h"
#include "kv/codec_spec.h"
#include "test.h"
#include "cuda_test.h"
#include "util/fp16.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

/* open value (f16 bits) of token i, channel j of a page of kind `kind` */
static uint16_t open_value(int kind, int i, int j, int D) {
    (void)D;
    switch (kind) {
    case 0: return kvl_fp32_to_fp16((float)((2 * urand() - 1) * 4));
    case 1: { /* quarter steps in [-0.75, 0.75] + a channel offset: ties of the codes */
        const int q = (int)(urand() * 7) - 3;
        return kvl_fp32_to_fp16(0.25f * q + 0.5f * (j % 3));
    }
    case 2: /* zero ranges: channel 0 mod 4 all zero, 1 mod 4 constant, rest random small */
        if (j % 4 == 0) return 0;
        if (j % 4 == 1) return kvl_fp32_to_fp16(0.3f);
        if (i % 8 == 0 && j % 4 == 2) return kvl_fp32_to_fp16(-0.3f); /* a constant V group nowhere */
        return kvl_fp32_to_fp16((float)((2 * urand() - 1) * 0.01));
    case 3: { /* near the f16 limits, inf and NaN bits */
        const double u = urand();
        if (u < 0.05) return 0x7c00; /* +inf */
        if (u < 0.10) return 0xfc00; /* -inf */
        if (u < 0.13) return 0x7e00; /* NaN */
        if (u < 0.5) return kvl_fp32_to_fp16((float)(65504.0 - urand() * 100));
        return kvl_fp32_to_fp16((float)(100 + urand()));
    }
    default: { /* small values with rare outliers */
        const double u = urand();
        return kvl_fp32_to_fp16((float)(u < 0.03 ? (urand() < 0.5 ? -1 : 1) * 300 * urand() : (2 * urand() - 1) * 0.1));
    }
    }
}

static int n_pages_same, n_pages_sealed;

static void seal_case(const char *codec, int D, int P, const char *fit) {
    kvl_err err = {0};
    const int L = 2, Hkv = 2, slots = 2, ppl = 4;
    const int64_t n_pages = (int64_t)slots * L * Hkv * ppl;
    kvl_cuda_pool_config pc = {codec, NULL, D, P, n_pages, n_pages};
    kvl_cuda_pool *pool = NULL;
    CHECK(kvl_cuda_pool_create(&pc, &pool, &err) == KVL_OK);
    if (!pool) {
        fprintf(stderr, "pool %s D %d P %d: %s\n", codec, D, P, err.msg);
        return;
    }
    const size_t pb0 = kvl_cuda_pool_class_bytes(pool, 0), pb1 = kvl_cuda_pool_class_bytes(pool, 1);
    size_t koff0, voff0, koff1, voff1;
    kvl_cuda_pool_seg_offsets(pool, 0, &koff0, &voff0);
    kvl_cuda_pool_seg_offsets(pool, 1, &koff1, &voff1);
    uint8_t *open = malloc(pb0 * n_pages), *sealed = malloc(pb1 * n_pages), *ref = malloc(pb1);
    memset(open, 0, pb0 * n_pages);
    for (int64_t pg = 0; pg < n_pages; pg++) {
        uint8_t *o = open + pg * pb0;
        const int kind = (int)(pg % 5);
        for (int r = 0; r < P; r++) ((int32_t *)o)[r] = (int32_t)((pg % ppl) * P + r);
        for (int side = 0; side < 2; side++) {
            uint16_t *x = (uint16_t *)(o + (side ? voff0 : koff0));
            for (int i = 0; i < P; i++)
                for (int j = 0; j < D; j++) x[i * D + j] = open_value(kind, i, j, D);
        }
    }
    memset(sealed, 0xA5, pb1 * n_pages);
    CHECK(kvl_cuda_pool_upload(pool, 0, open, n_pages, &err) == KVL_OK);
    CHECK(kvl_cuda_pool_upload(pool, 1u << 28, sealed, n_pages, &err) == KVL_OK);
    uint32_t *ids = malloc(sizeof(uint32_t) * n_pages);
    for (int64_t i = 0; i < n_pages; i++) ids[i] = (uint32_t)i;
    void *d_ids = NULL, *d_meta = NULL;
    CHECK(kvl_cuda_alloc(&d_ids, sizeof(uint32_t) * n_pages, &err) == KVL_OK);
    CHECK(kvl_cuda_upload(d_ids, ids, sizeof(uint32_t) * n_pages, &err) == KVL_OK);
    /* entries: slot 0 pages [0, 3), slot 1 pages [1, 4), slot 0 again with an empty range */
    const int n = 3;
    const int32_t meta[9] = {0, 1, 0, /* slot */ 0, 1, 3, /* from */ 3, 4, 3 /* to */};
    CHECK(kvl_cuda_alloc(&d_meta, sizeof meta, &err) == KVL_OK);
    CHECK(kvl_cuda_upload(d_meta, meta, sizeof meta, &err) == KVL_OK);
    kvl_codec_spec sk, sv;
    char spec[64];
    snprintf(spec, sizeof spec, "%s:fit=%s", codec, fit);
    CHECK(kvl_codec_spec_parse(spec, 0, &sk, &err) == KVL_OK && kvl_codec_spec_parse(spec, 1, &sv, &err) == KVL_OK);
    uint8_t stk[64] = {0}, stv[64] = {0};
    CHECK(sk.c->state_bytes(D) <= sizeof stk && sv.c->state_bytes(D) <= sizeof stv);
    CHECK(sk.c->state_init(&sk.prm, 0, 0, 0, D, stk, &err) == KVL_OK);
    CHECK(sv.c->state_init(&sv.prm, 0, 0, 1, D, stv, &err) == KVL_OK);
    const int32_t *dm = d_meta;
    kvl_cuda_seal_args a = {n, L, Hkv, ppl, dm, dm + 3, dm + 6, d_ids, !strcmp(fit, "mse")};
    CHECK(kvl_cuda_kv_seal(pool, &a, NULL, &err) == KVL_OK);
    CHECK(kvl_cuda_sync(&err) == KVL_OK);
    CHECK(kvl_cuda_pool_download(pool, 1u << 28, sealed, n_pages, &err) == KVL_OK);
    CHECK(kvl_cuda_download(ids, d_ids, sizeof(uint32_t) * n_pages, &err) == KVL_OK);
    const kvl_codec *ck = kvl_codec_find(codec);
    const kvl_codec *cv = ck->as_v;
    int bad_pages = 0, bad_ids = 0, bad_untouched = 0;
    for (int64_t pg = 0; pg < n_pages; pg++) {
        const int64_t list = pg / ppl, k = pg % ppl;
        const int slot = (int)(list / (L * Hkv));
        const int want = slot == 0 ? k < 3 : k >= 1;
        const uint8_t *got = sealed + pg * pb1;
        if (ids[pg] != (want ? (1u << 28) | (uint32_t)pg : (uint32_t)pg)) bad_ids++;
        if (!want) {
            for (size_t b = 0; b < pb1; b++)
                if (got[b] != 0xA5) {
                    bad_untouched++;
                    break;
                }
            continue;
        }
        const uint8_t *o = open + pg * pb0;
        memset(ref, 0, pb1);
        memcpy(ref, o, (size_t)P * 4);
        ck->seal(stk, ref + koff1, o + koff0, D, P);
        cv->seal(stv, ref + voff1, o + voff0, D, P);
        n_pages_sealed++;
        if (!memcmp(ref, got, pb1)) {
            n_pages_same++;
            continue;
        }
        if (!bad_pages) {
            size_t b = 0;
            while (ref[b] == got[b]) b++;
            fprintf(stderr, "seal %s D %d P %d fit %s: page %lld (kind %d) byte %zu of %zu (K at %zu, V at %zu): "
                    "cpu %02x device %02x\n", codec, D, P, fit, (long long)pg, (int)(pg % 5), b, pb1, koff1, voff1,
                    ref[b], got[b]);
        }
        bad_pages++;
    }
    CHECK_MSG(bad_pages == 0 && bad_ids == 0 && bad_untouched == 0,
              "seal %s D=%d P=%d fit=%s: %d pages differ from the CPU seal, %d page ids, %d unsealed pages written",
              codec, D, P, fit, bad_pages, bad_ids, bad_untouched);
    kvl_cuda_free(d_ids), kvl_cuda_free(d_meta);
    kvl_cuda_pool_free(pool);
    free(open), free(sealed), free(ref), free(ids);
}

int main(void) {
    if (cuda_test_device()) return 1;
    kvl_err err = {0};
    const char *codecs[2] = {"kivi2z", "kivi4z"}, *fits[2] = {"cover", "mse"};
    const int Ps[3] = {16, 32, 64};
    for (int ci = 0; ci < 2; ci++)
        for (int D = 64; D <= 128; D *= 2)
            for (int pi = 0; pi < 3; pi++)
                for (int fi = 0; fi < 2; fi++) seal_case(codecs[ci], D, Ps[pi], fits[fi]);
    seal_case("kivi2z", 128, 256, "mse"); /* > 48 KB of shared memory */
    seal_case("kivi4z", 128, 256, "cover");
    printf("note: %d of %d sealed pages byte-identical to the CPU seal\n", n_pages_same, n_pages_sealed);
    { /* pools of per-token codecs do not seal */
        kvl_cuda_pool_config pc = {"int4z", NULL, 64, 32, 4, 0};
        kvl_cuda_pool *pool = NULL;
        CHECK(kvl_cuda_pool_create(&pc, &pool, &err) == KVL_OK);
        kvl_cuda_seal_args a = {1, 1, 1, 4, NULL, NULL, NULL, NULL, 0};
        CHECK(pool && kvl_cuda_kv_seal(pool, &a, NULL, &err) == KVL_ERR_UNSUPPORTED);
        kvl_cuda_pool_free(pool);
    }
    KVL_TEST_END();
}
