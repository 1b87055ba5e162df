/* Codec specs and codec instances in the pool: parsing (names, +rot,
 * parameters, per-layer overrides) with their errors, `kvlite codecs`
 * information, per-layer codecs reaching the pages (bytes per layer), and
 * the +rot rotation: attention with rotated f32 pages equals attention
 * without rotation, and decoded rows come back un-rotated. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kv/codec_spec.h"
#include "kv/kv.h"
#include "kvlite.h"
#include "test.h"

enum { NL = 4, NKV = 2, NH = 6, HD = 64 };

static void test_parse(void) {
    kvl_codec_spec s;
    kvl_err err;
    CHECK(kvl_codec_spec_parse("int8", 0, &s, &err) == KVL_OK && s.c == kvl_codec_find("int8") && !s.prm.rot);
    CHECK(kvl_codec_spec_parse("f16+rot", 1, &s, &err) == KVL_OK && s.prm.rot && s.c == kvl_codec_find("f16"));
    char buf[128];
    kvl_codec_spec_str(&s, buf, sizeof buf);
    CHECK(strcmp(buf, "f16+rot") == 0);
    const char *bad[] = {"", "int3", "f16+", "f16+rat", "int8:", "int8:x=1", "int8:=1", "int8:r", "int8:r=",
                         "f16,int8", "F16"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kvl_err_clear(&err);
        CHECK_MSG(kvl_codec_spec_parse(bad[i], 0, &s, &err) == KVL_ERR_ARG && err.msg[0], "spec '%s' accepted",
                  bad[i]);
    }
    CHECK(kvl_codec_spec_parse("int3", 0, &s, &err) == KVL_ERR_ARG && strstr(err.msg, "int3") &&
          strstr(err.msg, "f16"));
    CHECK(kvl_codec_spec_parse(NULL, 0, &s, &err) == KVL_ERR_ARG);
    /* parameters: typed access with range checks */
    kvl_codec_params prm = {0};
    prm.n = 2;
    strcpy(prm.key[0], "r"), strcpy(prm.val[0], "64");
    strcpy(prm.key[1], "x"), strcpy(prm.val[1], "1e9");
    int r;
    double x;
    CHECK(kvl_codec_param_int(&prm, "r", 0, 1, 1000, &r, &err) == KVL_OK && r == 64);
    CHECK(kvl_codec_param_int(&prm, "r", 0, 1, 10, &r, &err) == KVL_ERR_ARG && strstr(err.msg, "r=64"));
    CHECK(kvl_codec_param_int(&prm, "q", 7, 1, 10, &r, &err) == KVL_OK && r == 7);
    CHECK(kvl_codec_param_float(&prm, "x", 0, 0, 1, &x, &err) == KVL_ERR_ARG);
    CHECK(kvl_codec_param_int(&prm, "x", 0, 0, 10, &r, &err) == KVL_ERR_ARG);
}

static void test_layers(void) {
    kvl_codec_spec k[NL], v[NL];
    kvl_err err;
    for (int l = 0; l < NL; l++) {
        CHECK(kvl_codec_spec_parse("f16", 0, &k[l], &err) == KVL_OK);
        v[l] = k[l];
    }
    CHECK(kvl_codec_layers_apply("0,-1=int8;k1-2=f32;v2=f32+rot", NL, k, v, &err) == KVL_OK);
    const char *ek[NL] = {"int8", "f32", "f32", "int8"}, *ev[NL] = {"int8", "f16", "f32", "int8"};
    for (int l = 0; l < NL; l++) CHECK(!strcmp(k[l].c->name, ek[l]) && !strcmp(v[l].c->name, ev[l]));
    CHECK(v[2].prm.rot && !k[2].prm.rot);
    const char *bad[] = {"=int8", "4=int8", "-5=int8", "0-9=int8", "2-1=int8", "0=nope", "0", "x0=int8", "0;1=f16"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kvl_err_clear(&err);
        CHECK_MSG(kvl_codec_layers_apply(bad[i], NL, k, v, &err) == KVL_ERR_ARG && err.msg[0],
                  "layers '%s' accepted", bad[i]);
    }
    CHECK(kvl_codec_layers_apply(NULL, NL, k, v, &err) == KVL_OK && kvl_codec_layers_apply("", NL, k, v, &err) == KVL_OK);
}

static void test_info(void) {
    kvl_codec_info ci;
    int n = 0, have_int8 = 0;
    for (; kvl_codec_info_get(n, 64, 32, &ci); n++) {
        CHECK(ci.name && ci.desc && ci.params && ci.bits_k > 0 && ci.bits_v > 0);
        if (!strcmp(ci.name, "int8")) have_int8 = ci.bits_k == 8.5 && ci.bits_v == 8.5 && !ci.sealing;
    }
    CHECK(n >= 3 && have_int8);
    CHECK(!kvl_codec_info_get(n, 64, 32, &ci) && !kvl_codec_info_get(-1, 64, 32, &ci));
}

static unsigned rs = 12345;
static float frand(void) {
    rs = rs * 1103515245u + 12345u;
    return (float)((rs >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* Pool with k_spec/v_spec/layer_spec; n tokens appended to every layer. */
static kvl_kv_pool *pool_with(const char *ks, const char *vs, const char *ls, kvl_kv_table **t, int n, kvl_err *err) {
    kvl_kv_config cfg = {.n_layer = NL, .n_head_kv = NKV, .head_dim = HD, .page_tokens = 16,
                         .budget_bytes = (size_t)64 << 20, .n_head = NH, .k_spec = ks, .v_spec = vs, .layer_spec = ls};
    kvl_kv_pool *p;
    if (kvl_kv_pool_create(&cfg, &p, err) != KVL_OK) return NULL;
    CHECK(kvl_kv_table_create(p, t, err) == KVL_OK);
    rs = 777;
    float *k = malloc(sizeof(float) * n * NKV * HD), *v = malloc(sizeof(float) * n * NKV * HD);
    int32_t *pos = malloc(sizeof(int32_t) * n);
    for (int l = 0; l < NL; l++) {
        for (int i = 0; i < n * NKV * HD; i++) k[i] = frand() * (i % HD == 3 ? 20 : 1), v[i] = frand();
        for (int i = 0; i < n; i++) pos[i] = i;
        CHECK(kvl_kv_append(*t, l, n, pos, k, v, err) == KVL_OK);
    }
    free(k);
    free(v);
    free(pos);
    return p;
}

static void attend_layer(kvl_kv_table *t, int l, int n, float *out) {
    float q[2 * NH * HD];
    int32_t qp[2] = {n / 2, n - 1};
    rs = 99;
    for (int i = 0; i < 2 * NH * HD; i++) q[i] = frand();
    static char scratch[1 << 20];
    kvl_kv_attend(t, l, 2, q, qp, NH, 0.125f, out, scratch, 0, 1);
}

static void test_pool_codecs(void) {
    kvl_err err;
    kvl_kv_table *t, *r;
    /* per-layer overrides reach the pages: bytes per layer follow the codec sizes */
    kvl_kv_pool *p = pool_with("f16", NULL, "0,-1=int8;k1=f32", &t, 40, &err);
    CHECK(p != NULL);
    if (!p) return;
    CHECK(!strcmp(kvl_kv_pool_codec(p, 0, 0)->name, "int8") && !strcmp(kvl_kv_pool_codec(p, 1, 0)->name, "f32") &&
          !strcmp(kvl_kv_pool_codec(p, 1, 1)->name, "f16") && !strcmp(kvl_kv_pool_codec(p, 2, 1)->name, "f16"));
    CHECK(kvl_kv_pool_n_classes(p) == 3);
    const size_t b0 = kvl_kv_table_layer_bytes(t, 0), b1 = kvl_kv_table_layer_bytes(t, 1),
                 b2 = kvl_kv_table_layer_bytes(t, 2), b3 = kvl_kv_table_layer_bytes(t, 3);
    CHECK(b0 == b3 && b0 < b2 && b2 < b1);
    CHECK(b0 + b1 + b2 + b3 == kvl_kv_table_bytes(t) && kvl_kv_table_bytes(t) == kvl_kv_pool_used(p));
    /* page bytes: pos (16 x 4 -> 64) + K + V segments padded to 64 */
    CHECK(b2 == (size_t)NKV * 3 * (64 + 16 * HD * 2 * 2));
    CHECK(b0 == (size_t)NKV * 3 * (64 + 2 * ((16 * (HD + 4) + 63) / 64 * 64)));
    CHECK(kvl_kv_table_codec_bytes(t) == (size_t)NKV * 3 * (2 * 2 * 16 * (HD + 4) + 16 * HD * (4 + 2) + 2 * 16 * HD * 2));
    kvl_kv_table_free(t);
    kvl_kv_pool_free(p);

    /* +rot: f32 pages rotated give the same attention as unrotated (rounding only) */
    float o1[2 * NH * HD], o2[2 * NH * HD];
    kvl_kv_pool *pr = pool_with("f32+rot", NULL, NULL, &r, 37, &err), *pp = pool_with("f32", NULL, NULL, &t, 37, &err);
    CHECK(pr && pp);
    if (!pr || !pp) return;
    double md = 0;
    for (int l = 0; l < NL; l++) {
        attend_layer(r, l, 37, o1);
        attend_layer(t, l, 37, o2);
        for (int i = 0; i < 2 * NH * HD; i++) md = fmax(md, fabs(o1[i] - o2[i]));
    }
    CHECK_MSG(md < 2e-5, "rotated f32 attention differs by %g", md);
    float k1[HD], v1[HD], k2[HD], v2[HD];
    double mk = 0;
    CHECK(kvl_kv_table_decode(r, 2, 1, 5, k1, v1) == KVL_OK && kvl_kv_table_decode(t, 2, 1, 5, k2, v2) == KVL_OK);
    for (int j = 0; j < HD; j++) mk = fmax(mk, fmax(fabs(k1[j] - k2[j]), fabs(v1[j] - v2[j])));
    CHECK_MSG(mk < 1e-5, "un-rotated rows differ by %g", mk);
    kvl_kv_table_free(r);
    kvl_kv_table_free(t);
    kvl_kv_pool_free(pr);
    kvl_kv_pool_free(pp);
    /* +rot on int8: a planted outlier channel costs less after rotation */
    pr = pool_with("int8+rot", NULL, NULL, &r, 32, &err);
    pp = pool_with("int8", NULL, NULL, &t, 32, &err);
    kvl_kv_pool *pf = NULL;
    kvl_kv_table *f;
    pf = pool_with("f32", NULL, NULL, &f, 32, &err);
    float of[2 * NH * HD];
    double er = 0, ep = 0;
    for (int l = 0; l < NL; l++) {
        attend_layer(r, l, 32, o1);
        attend_layer(t, l, 32, o2);
        attend_layer(f, l, 32, of);
        for (int i = 0; i < 2 * NH * HD; i++) er += fabs(o1[i] - of[i]), ep += fabs(o2[i] - of[i]);
    }
    CHECK_MSG(er < ep, "int8+rot error %g not below int8 %g with an outlier channel", er, ep);
    kvl_kv_table_free(r);
    kvl_kv_table_free(t);
    kvl_kv_table_free(f);
    kvl_kv_pool_free(pr);
    kvl_kv_pool_free(pp);
    kvl_kv_pool_free(pf);
    /* errors */
    kvl_kv_config cfg = {.n_layer = NL, .n_head_kv = NKV, .head_dim = 48, .page_tokens = 16,
                         .budget_bytes = 1 << 20, .k_spec = "f16+rot"};
    CHECK(kvl_kv_pool_create(&cfg, &p, &err) == KVL_ERR_ARG && strstr(err.msg, "power of two"));
    cfg.head_dim = HD;
    cfg.k_spec = "nope";
    CHECK(kvl_kv_pool_create(&cfg, &p, &err) == KVL_ERR_ARG && strstr(err.msg, "nope"));
    cfg.k_spec = "f16";
    cfg.layer_spec = "7=int8";
    CHECK(kvl_kv_pool_create(&cfg, &p, &err) == KVL_ERR_ARG && strstr(err.msg, "layer"));
}

int main(void) {
    test_parse();
    test_layers();
    test_info();
    test_pool_codecs();
    KVL_TEST_END();
}
