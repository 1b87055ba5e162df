/* Tests for the GGUF reader: a small in-test GGUF writer produces files with
 * every metadata value type, v2/v3, several alignments and all the weight
 * types kvlite knows; every getter and tensor descriptor is checked, then a
 * catalogue of hostile files (bad magic/version, truncation at every byte,
 * huge counts and lengths, bad tensor infos, duplicates, bad alignment) and
 * seeded random corruption must fail cleanly (run under ASan: exact-size heap
 * copies make any out-of-bounds read visible). If the real model is present
 * (KVL_MODEL or ~/.cache/kvlite/...), its basic structure is checked too; the
 * committed fuzz seeds (tests/fuzz/corpus/fuzz_gguf) behave as named. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include "kvlite.h"
#include "model/gguf.h"
#include "model/tok.h"
#include "test.h"

/* ---- byte buffer writer ------------------------------------------------------ */

typedef struct wbuf {
    uint8_t *p;
    size_t n, cap;
} wbuf;

static void put(wbuf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        if (!np) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
        b->p = np;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void put_u8(wbuf *b, uint8_t v) { put(b, &v, 1); }
static void put_u16(wbuf *b, uint16_t v) {
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    put(b, x, 2);
}
static void put_u32(wbuf *b, uint32_t v) {
    uint8_t x[4];
    for (int i = 0; i < 4; i++) x[i] = (uint8_t)(v >> (8 * i));
    put(b, x, 4);
}
static void put_u64(wbuf *b, uint64_t v) {
    uint8_t x[8];
    for (int i = 0; i < 8; i++) x[i] = (uint8_t)(v >> (8 * i));
    put(b, x, 8);
}
static void put_f32(wbuf *b, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(b, u);
}
static void put_f64(wbuf *b, double d) {
    uint64_t u;
    memcpy(&u, &d, 8);
    put_u64(b, u);
}
static void put_strn(wbuf *b, const char *s, size_t n) {
    put_u64(b, n);
    put(b, s, n);
}
static void put_str(wbuf *b, const char *s) { put_strn(b, s, strlen(s)); }
static void put_key(wbuf *b, const char *key, uint32_t type) {
    put_str(b, key);
    put_u32(b, type);
}
static void pad_to(wbuf *b, size_t align) {
    while (b->n % align) put_u8(b, 0);
}
static void patch_u32(uint8_t *p, size_t at, uint32_t v) {
    for (int i = 0; i < 4; i++) p[at + i] = (uint8_t)(v >> (8 * i));
}
static void patch_u64(uint8_t *p, size_t at, uint64_t v) {
    for (int i = 0; i < 8; i++) p[at + i] = (uint8_t)(v >> (8 * i));
}

static void header(wbuf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    put(b, "GGUF", 4);
    put_u32(b, version);
    put_u64(b, n_tensors);
    put_u64(b, n_kv);
}

/* Tensor info; returns the position of the info record. */
static size_t put_tinfo(wbuf *b, const char *name, uint32_t n_dims, const int64_t *ne, uint32_t type,
                        uint64_t offset) {
    size_t at = b->n;
    put_str(b, name);
    put_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) put_u64(b, (uint64_t)ne[d]);
    put_u32(b, type);
    put_u64(b, offset);
    return at;
}

static uint8_t data_byte(int t, size_t j) { return (uint8_t)(t * 37 + j * 11 + 5); }

/* ---- the reference file ------------------------------------------------------- */

typedef struct tdesc {
    const char *name;
    kvl_type type;
    int n_dims;
    int64_t ne[4];
} tdesc;

static const tdesc TENSORS[] = {
    {"token_embd.weight", KVL_TYPE_F32, 2, {8, 3, 1, 1}},
    {"t.f16", KVL_TYPE_F16, 2, {16, 2, 1, 1}},
    {"t.bf16", KVL_TYPE_BF16, 1, {4, 1, 1, 1}},
    {"t.q8_0", KVL_TYPE_Q8_0, 2, {64, 2, 1, 1}},
    {"t.q4_0", KVL_TYPE_Q4_0, 2, {32, 3, 1, 1}},
    {"t.q4_1", KVL_TYPE_Q4_1, 1, {32, 1, 1, 1}},
    {"t.q5_0", KVL_TYPE_Q5_0, 1, {96, 1, 1, 1}},
    {"t.q5_1", KVL_TYPE_Q5_1, 2, {32, 2, 1, 1}},
    {"t.q4_k", KVL_TYPE_Q4_K, 2, {256, 2, 1, 1}},
    {"t.q2_k", KVL_TYPE_Q2_K, 1, {256, 1, 1, 1}}, /* unsupported by the engine, still loads */
    {"t.4d", KVL_TYPE_F32, 4, {2, 3, 4, 5}},
    {"t.q6_k", KVL_TYPE_Q6_K, 1, {512, 1, 1, 1}}, /* last: file ends with its data */
};
#define N_TENSORS ((int)(sizeof TENSORS / sizeof TENSORS[0]))
#define N_BIGSTR 300

typedef struct layout {
    size_t key0_len;     /* position of the first key's length field */
    size_t str_val_len;  /* position of t.str's value length field */
    size_t tinfo[N_TENSORS];
    size_t ndims_at[N_TENSORS], type_at[N_TENSORS], off_at[N_TENSORS];
    size_t data_off;
    size_t toff[N_TENSORS];
    size_t nbytes[N_TENSORS];
    uint32_t align;
} layout;

static size_t tensor_bytes(const tdesc *t) {
    size_t n = kvl_type_row_bytes(t->type, t->ne[0]);
    for (int d = 1; d < 4; d++) n *= (size_t)t->ne[d];
    return n;
}

/* Full reference file. align = 0: no general.alignment key (default 32). */
static void build_ref(wbuf *b, uint32_t version, uint32_t align, layout *L) {
    memset(L, 0, sizeof *L);
    L->align = align ? align : 32;
    int n_kv = 33 + (align ? 1 : 0);
    header(b, version, N_TENSORS, (uint64_t)n_kv);
    L->key0_len = b->n;
    put_key(b, "general.architecture", KVL_GGUF_STRING);
    put_str(b, "llama");
    put_key(b, "t.u8", KVL_GGUF_UINT8); put_u8(b, 200);
    put_key(b, "t.i8", KVL_GGUF_INT8); put_u8(b, (uint8_t)-100);
    put_key(b, "t.u16", KVL_GGUF_UINT16); put_u16(b, 60000);
    put_key(b, "t.i16", KVL_GGUF_INT16); put_u16(b, (uint16_t)-30000);
    put_key(b, "t.u32", KVL_GGUF_UINT32); put_u32(b, 4000000000u);
    put_key(b, "t.i32", KVL_GGUF_INT32); put_u32(b, (uint32_t)-2000000000);
    put_key(b, "t.f32", KVL_GGUF_FLOAT32); put_f32(b, 3.5f);
    put_key(b, "t.bool", KVL_GGUF_BOOL); put_u8(b, 1);
    put_key(b, "t.bool0", KVL_GGUF_BOOL); put_u8(b, 0);
    put_key(b, "t.str", KVL_GGUF_STRING);
    L->str_val_len = b->n;
    put_strn(b, "hello\0world", 11);
    put_key(b, "t.empty", KVL_GGUF_STRING); put_str(b, "");
    if (align) {
        put_key(b, "general.alignment", KVL_GGUF_UINT32);
        put_u32(b, align);
    }
    put_key(b, "t.u64", KVL_GGUF_UINT64); put_u64(b, (1ull << 63) + 5);
    put_key(b, "t.u64s", KVL_GGUF_UINT64); put_u64(b, 12345);
    put_key(b, "t.i64", KVL_GGUF_INT64); put_u64(b, (uint64_t)-(int64_t)(1ll << 40));
    put_key(b, "t.i64s", KVL_GGUF_INT64); put_u64(b, 7);
    put_key(b, "t.i64neg", KVL_GGUF_INT64); put_u64(b, (uint64_t)-1);
    put_key(b, "t.f64", KVL_GGUF_FLOAT64); put_f64(b, 2.718281828459045);
    put_key(b, "a.u8", KVL_GGUF_ARRAY); put_u32(b, KVL_GGUF_UINT8); put_u64(b, 3);
    put_u8(b, 1); put_u8(b, 2); put_u8(b, 255);
    put_key(b, "a.i8", KVL_GGUF_ARRAY); put_u32(b, KVL_GGUF_INT8); put_u64(b, 2);
    put_u8(b, (uint8_t)-128); put_u8(b, 127);
    put_key(b, "a.i16", KVL_GGUF_ARRAY); put_u32(b, KVL_GGUF_INT16); put_u64(b, 2);
    put_u16(b, (uint16_t)-2); put_u16(b, 300);
    put_key(b, "a.u16", KVL_GGUF_ARRAY); put_u32(b, KVL_GGUF_UINT16); put_u64(b, 1); put_u16(b, 65535);
    put_key(b, "a.i32", KVL_GGUF_ARRAY); put_u32(b, KVL_GGUF_INT32); put_u64(b, 3);
    put_u32(b, (uint32_t)-1); put_u32(b, 7); put_u32(b, 2147483647u);
    put_key(b, "a.u32", KVL_GGUF_ARRAY); put_u32(b, KVL_GGUF_UINT32); put_u64(b, 1); put_u32(b, 4294967295u);
    put_key(b, "a.f32", KVL_GGUF_ARRAY); put_u32(b, KVL_GGUF_FLOAT32); put_u64(b, 2);
    put_f32(b, 0.5f); put_f32(b, -1.25f);
    put_key(b, "a.bool", KVL_GGUF_ARRAY); put_u32(b, KVL_GGUF_BOOL); put_u64(b, 2); put_u8(b, 1); put_u8(b, 0);
    put_key(b, "a.u64", KVL_GGUF_ARRAY); put_u32(b, KVL_GGUF_UINT64); put_u64(b, 2);
    put_u64(b, 1ull << 63); put_u64(b, 42);
    put_key(b, "a.i64", KVL_GGUF_ARRAY); put_u32(b, KVL_GGUF_INT64); put_u64(b, 1);
    put_u64(b, (uint64_t)INT64_MIN);
    put_key(b, "a.f64", KVL_GGUF_ARRAY); put_u32(b, KVL_GGUF_FLOAT64); put_u64(b, 1); put_f64(b, 1e300);
    put_key(b, "a.str", KVL_GGUF_ARRAY); put_u32(b, KVL_GGUF_STRING); put_u64(b, 4);
    put_str(b, "a"); put_str(b, ""); put_str(b, "hello"); put_str(b, "<|im_end|>");
    put_key(b, "a.empty", KVL_GGUF_ARRAY); put_u32(b, KVL_GGUF_UINT32); put_u64(b, 0);
    put_key(b, "a.emptystr", KVL_GGUF_ARRAY); put_u32(b, KVL_GGUF_STRING); put_u64(b, 0);
    put_key(b, "tokenizer.ggml.tokens", KVL_GGUF_ARRAY); put_u32(b, KVL_GGUF_STRING); put_u64(b, N_BIGSTR);
    for (int i = 0; i < N_BIGSTR; i++) {
        char s[32];
        snprintf(s, sizeof s, "tok%d", i * 7);
        put_str(b, s);
    }
    /* Tensor infos with aligned, packed data offsets. */
    size_t off = 0;
    for (int i = 0; i < N_TENSORS; i++) {
        const tdesc *t = &TENSORS[i];
        L->nbytes[i] = tensor_bytes(t);
        L->toff[i] = off;
        L->tinfo[i] = put_tinfo(b, t->name, (uint32_t)t->n_dims, t->ne, (uint32_t)t->type, off);
        L->ndims_at[i] = L->tinfo[i] + 8 + strlen(t->name);
        L->type_at[i] = L->ndims_at[i] + 4 + 8 * (size_t)t->n_dims;
        L->off_at[i] = L->type_at[i] + 4;
        off += L->nbytes[i];
        off = (off + L->align - 1) / L->align * L->align;
    }
    pad_to(b, L->align);
    L->data_off = b->n;
    for (int i = 0; i < N_TENSORS; i++) {
        while (b->n < L->data_off + L->toff[i]) put_u8(b, 0xAA);
        for (size_t j = 0; j < L->nbytes[i]; j++) put_u8(b, data_byte(i, j));
    }
}

/* Exact-size heap copy so that ASan catches any read past the end. */
static uint8_t *dup_bytes(const uint8_t *p, size_t n) {
    uint8_t *q = malloc(n ? n : 1);
    if (!q) exit(2);
    if (n) memcpy(q, p, n);
    return q;
}

static kvl_status open_copy(const uint8_t *p, size_t n, kvl_err *err) {
    uint8_t *q = dup_bytes(p, n);
    kvl_gguf *g = (kvl_gguf *)1;
    kvl_status st = kvl_gguf_open_mem(q, n, &g, err);
    if (st == KVL_OK) {
        CHECK(g != NULL);
        kvl_gguf_free(g);
    } else {
        CHECK(g == NULL);
        CHECK(err->msg[0] != 0);
    }
    free(q);
    return st;
}

/* Expect a failure with status st whose message contains needle. */
#define EXPECT_FAIL(buf, n, st_, needle)                                                   \
    do {                                                                                   \
        kvl_err e_;                                                                        \
        kvl_status s_ = open_copy((buf), (n), &e_);                                        \
        CHECK_MSG(s_ == (st_), "status %d, msg '%s'", (int)s_, s_ == KVL_OK ? "" : e_.msg); \
        if (s_ != KVL_OK && getenv("KVL_TEST_VERBOSE")) printf("  rejected: %s\n", e_.msg); \
        if (s_ != KVL_OK)                                                                  \
            CHECK_MSG(strstr(e_.msg, (needle)) != NULL, "message '%s' lacks '%s'", e_.msg, \
                      (needle));                                                           \
    } while (0)

/* ---- checks on a valid file ------------------------------------------------------ */

static int str_eq(const char *s, size_t n, const char *want, size_t want_n) {
    return n == want_n && memcmp(s, want, n) == 0;
}

static void check_ref(const kvl_gguf *g, const uint8_t *base, uint32_t version, const layout *L) {
    CHECK(kvl_gguf_version(g) == version);
    int n_kv = 33 + (L->align != 32 || kvl_gguf_find_key(g, "general.alignment") >= 0 ? 1 : 0);
    CHECK(kvl_gguf_n_kv(g) == n_kv);
    for (int64_t i = 0; i < kvl_gguf_n_kv(g); i++) {
        const char *k = kvl_gguf_key_name(g, i);
        CHECK(k != NULL && kvl_gguf_find_key(g, k) == i);
    }
    CHECK(kvl_gguf_key_name(g, -1) == NULL && kvl_gguf_key_name(g, n_kv) == NULL);
    CHECK(strcmp(kvl_gguf_key_name(g, 0), "general.architecture") == 0);
    CHECK(kvl_gguf_key_type(g, 0) == KVL_GGUF_STRING);
    CHECK(kvl_gguf_key_type(g, kvl_gguf_find_key(g, "a.u8")) == KVL_GGUF_ARRAY);
    CHECK(kvl_gguf_key_type(g, kvl_gguf_find_key(g, "t.f64")) == KVL_GGUF_FLOAT64);
    CHECK(kvl_gguf_find_key(g, "missing") == -1);
    CHECK(kvl_gguf_find_key(g, "t.u") == -1);      /* prefix of a key */
    CHECK(kvl_gguf_find_key(g, "t.u88") == -1);    /* key is a prefix of it */
    CHECK(kvl_gguf_find_key(g, "") == -1);

    /* u32 */
    uint32_t u = 77;
    CHECK(kvl_gguf_get_u32(g, "t.u8", &u) && u == 200);
    CHECK(kvl_gguf_get_u32(g, "t.u16", &u) && u == 60000);
    CHECK(kvl_gguf_get_u32(g, "t.u32", &u) && u == 4000000000u);
    CHECK(kvl_gguf_get_u32(g, "t.u64s", &u) && u == 12345);
    CHECK(kvl_gguf_get_u32(g, "t.i64s", &u) && u == 7);
    u = 77;
    CHECK(!kvl_gguf_get_u32(g, "t.i8", &u) && u == 77);   /* negative */
    CHECK(!kvl_gguf_get_u32(g, "t.u64", &u) && u == 77);  /* too large */
    CHECK(!kvl_gguf_get_u32(g, "t.f32", &u) && u == 77);
    CHECK(!kvl_gguf_get_u32(g, "t.bool", &u) && u == 77);
    CHECK(!kvl_gguf_get_u32(g, "t.str", &u) && u == 77);
    CHECK(!kvl_gguf_get_u32(g, "a.u8", &u) && u == 77);
    CHECK(!kvl_gguf_get_u32(g, "missing", &u) && u == 77);
    if (L->align != 32) CHECK(kvl_gguf_get_u32(g, "general.alignment", &u) && u == L->align);
    /* i64 */
    int64_t i64 = 77;
    CHECK(kvl_gguf_get_i64(g, "t.i8", &i64) && i64 == -100);
    CHECK(kvl_gguf_get_i64(g, "t.i16", &i64) && i64 == -30000);
    CHECK(kvl_gguf_get_i64(g, "t.i32", &i64) && i64 == -2000000000);
    CHECK(kvl_gguf_get_i64(g, "t.u32", &i64) && i64 == 4000000000ll);
    CHECK(kvl_gguf_get_i64(g, "t.i64", &i64) && i64 == -(1ll << 40));
    CHECK(kvl_gguf_get_i64(g, "t.i64neg", &i64) && i64 == -1);
    CHECK(kvl_gguf_get_i64(g, "t.u64s", &i64) && i64 == 12345);
    i64 = 77;
    CHECK(!kvl_gguf_get_i64(g, "t.u64", &i64) && i64 == 77);
    CHECK(!kvl_gguf_get_i64(g, "t.f64", &i64) && i64 == 77);
    CHECK(!kvl_gguf_get_i64(g, "missing", &i64) && i64 == 77);
    /* f32 */
    float f = 77;
    CHECK(kvl_gguf_get_f32(g, "t.f32", &f) && f == 3.5f);
    CHECK(kvl_gguf_get_f32(g, "t.f64", &f));
    CHECK_NEAR(f, 2.718281828459045, 1e-6);
    CHECK(kvl_gguf_get_f32(g, "t.i16", &f) && f == -30000.0f);
    CHECK(kvl_gguf_get_f32(g, "t.u8", &f) && f == 200.0f);
    CHECK(kvl_gguf_get_f32(g, "t.i64", &f) && f == -1099511627776.0f);
    f = 77;
    CHECK(!kvl_gguf_get_f32(g, "t.str", &f) && f == 77);
    CHECK(!kvl_gguf_get_f32(g, "t.bool", &f) && f == 77);
    CHECK(!kvl_gguf_get_f32(g, "a.f32", &f) && f == 77);
    /* bool */
    int bv = 77;
    CHECK(kvl_gguf_get_bool(g, "t.bool", &bv) && bv == 1);
    CHECK(kvl_gguf_get_bool(g, "t.bool0", &bv) && bv == 0);
    bv = 77;
    CHECK(!kvl_gguf_get_bool(g, "t.u8", &bv) && bv == 77);
    CHECK(!kvl_gguf_get_bool(g, "missing", &bv) && bv == 77);
    /* strings */
    const char *s = NULL;
    size_t n = 0;
    CHECK(kvl_gguf_get_str(g, "general.architecture", &s, &n) && str_eq(s, n, "llama", 5));
    CHECK(kvl_gguf_get_str(g, "t.str", &s, &n) && str_eq(s, n, "hello\0world", 11));
    CHECK(kvl_gguf_get_str(g, "t.empty", &s, &n) && n == 0);
    s = NULL;
    CHECK(!kvl_gguf_get_str(g, "t.u8", &s, &n) && s == NULL);
    CHECK(!kvl_gguf_get_str(g, "a.str", &s, &n) && s == NULL);
    /* arrays */
    kvl_gguf_vtype et;
    uint64_t cnt;
    CHECK(kvl_gguf_get_arr(g, "a.str", &et, &cnt) && et == KVL_GGUF_STRING && cnt == 4);
    CHECK(kvl_gguf_get_arr(g, "a.u8", &et, &cnt) && et == KVL_GGUF_UINT8 && cnt == 3);
    CHECK(kvl_gguf_get_arr(g, "a.f64", &et, &cnt) && et == KVL_GGUF_FLOAT64 && cnt == 1);
    CHECK(kvl_gguf_get_arr(g, "a.empty", &et, &cnt) && et == KVL_GGUF_UINT32 && cnt == 0);
    CHECK(kvl_gguf_get_arr(g, "a.emptystr", &et, &cnt) && et == KVL_GGUF_STRING && cnt == 0);
    CHECK(!kvl_gguf_get_arr(g, "t.u8", &et, &cnt));
    CHECK(kvl_gguf_arr_str(g, "a.str", 0, &s, &n) && str_eq(s, n, "a", 1));
    CHECK(kvl_gguf_arr_str(g, "a.str", 1, &s, &n) && n == 0);
    CHECK(kvl_gguf_arr_str(g, "a.str", 2, &s, &n) && str_eq(s, n, "hello", 5));
    CHECK(kvl_gguf_arr_str(g, "a.str", 3, &s, &n) && str_eq(s, n, "<|im_end|>", 10));
    CHECK(!kvl_gguf_arr_str(g, "a.str", 4, &s, &n));
    CHECK(!kvl_gguf_arr_str(g, "a.emptystr", 0, &s, &n));
    CHECK(!kvl_gguf_arr_str(g, "a.u8", 0, &s, &n));
    CHECK(!kvl_gguf_arr_str(g, "t.str", 0, &s, &n));
    CHECK(kvl_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &cnt) && cnt == N_BIGSTR);
    int tok_ok = 1;
    for (int i = N_BIGSTR - 1; i >= 0; i--) {
        char want[32];
        snprintf(want, sizeof want, "tok%d", i * 7);
        if (!kvl_gguf_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)i, &s, &n) || !str_eq(s, n, want, strlen(want)))
            tok_ok = 0;
    }
    CHECK(tok_ok);
    const uint8_t *raw = kvl_gguf_arr_data(g, "a.u8");
    CHECK(raw && raw[0] == 1 && raw[1] == 2 && raw[2] == 255);
    CHECK(kvl_gguf_arr_data(g, "a.str") == NULL);
    CHECK(kvl_gguf_arr_data(g, "t.u8") == NULL);
    CHECK(kvl_gguf_arr_data(g, "missing") == NULL);
    const uint8_t *rf = kvl_gguf_arr_data(g, "a.f32");
    float f0;
    CHECK(rf != NULL);
    if (rf) {
        memcpy(&f0, rf + 4, 4); /* little-endian host */
        CHECK(f0 == -1.25f);
    }
    i64 = 77;
    CHECK(kvl_gguf_arr_i64(g, "a.u8", 2, &i64) && i64 == 255);
    CHECK(kvl_gguf_arr_i64(g, "a.i8", 0, &i64) && i64 == -128);
    CHECK(kvl_gguf_arr_i64(g, "a.i8", 1, &i64) && i64 == 127);
    CHECK(kvl_gguf_arr_i64(g, "a.i16", 0, &i64) && i64 == -2);
    CHECK(kvl_gguf_arr_i64(g, "a.i16", 1, &i64) && i64 == 300);
    CHECK(kvl_gguf_arr_i64(g, "a.u16", 0, &i64) && i64 == 65535);
    CHECK(kvl_gguf_arr_i64(g, "a.i32", 0, &i64) && i64 == -1);
    CHECK(kvl_gguf_arr_i64(g, "a.i32", 2, &i64) && i64 == 2147483647);
    CHECK(kvl_gguf_arr_i64(g, "a.u32", 0, &i64) && i64 == 4294967295ll);
    CHECK(kvl_gguf_arr_i64(g, "a.u64", 1, &i64) && i64 == 42);
    CHECK(kvl_gguf_arr_i64(g, "a.i64", 0, &i64) && i64 == INT64_MIN);
    i64 = 77;
    CHECK(!kvl_gguf_arr_i64(g, "a.u64", 0, &i64) && i64 == 77); /* 2^63 does not fit */
    CHECK(!kvl_gguf_arr_i64(g, "a.i32", 3, &i64) && i64 == 77);
    CHECK(!kvl_gguf_arr_i64(g, "a.f32", 0, &i64) && i64 == 77);
    CHECK(!kvl_gguf_arr_i64(g, "a.str", 0, &i64) && i64 == 77);
    CHECK(!kvl_gguf_arr_i64(g, "a.empty", 0, &i64) && i64 == 77);
    CHECK(!kvl_gguf_arr_i64(g, "t.i32", 0, &i64) && i64 == 77);
    double d = 77;
    CHECK(kvl_gguf_arr_f64(g, "a.f32", 0, &d) && d == 0.5);
    CHECK(kvl_gguf_arr_f64(g, "a.f32", 1, &d) && d == -1.25);
    CHECK(kvl_gguf_arr_f64(g, "a.f64", 0, &d) && d == 1e300);
    CHECK(kvl_gguf_arr_f64(g, "a.i32", 0, &d) && d == -1.0);
    d = 77;
    CHECK(!kvl_gguf_arr_f64(g, "a.f64", 1, &d) && d == 77);
    CHECK(!kvl_gguf_arr_f64(g, "a.str", 0, &d) && d == 77);
    CHECK(!kvl_gguf_arr_f64(g, "a.bool", 0, &d) && d == 77);

    /* tensors */
    CHECK(kvl_gguf_n_tensors(g) == N_TENSORS);
    size_t total = 0;
    for (int i = 0; i < N_TENSORS; i++) {
        const tdesc *w = &TENSORS[i];
        const kvl_gguf_tensor *t = kvl_gguf_tensor_at(g, i);
        CHECK(t != NULL);
        if (!t) continue;
        CHECK(strcmp(t->name, w->name) == 0);
        CHECK(kvl_gguf_find_tensor(g, w->name) == t);
        CHECK(t->type == w->type);
        CHECK(t->n_dims == w->n_dims);
        CHECK(t->ne[0] == w->ne[0] && t->ne[1] == w->ne[1] && t->ne[2] == w->ne[2] && t->ne[3] == w->ne[3]);
        CHECK(t->nbytes == L->nbytes[i]);
        CHECK((const uint8_t *)t->data == base + L->data_off + L->toff[i]);
        CHECK(((uintptr_t)t->data - (uintptr_t)base) % L->align == 0);
        CHECK((uintptr_t)t->data % L->align == 0); /* buffers here are 4096-aligned */
        int same = 1;
        for (size_t j = 0; j < t->nbytes; j++) same &= ((const uint8_t *)t->data)[j] == data_byte(i, j);
        CHECK(same);
        total += t->nbytes;
    }
    CHECK(kvl_gguf_tensor_at(g, -1) == NULL && kvl_gguf_tensor_at(g, N_TENSORS) == NULL);
    CHECK(kvl_gguf_find_tensor(g, "nope") == NULL);
    CHECK(kvl_gguf_find_tensor(g, "t.q4") == NULL);
    CHECK(kvl_gguf_data_bytes(g) == total);
    CHECK(!kvl_type_supported(kvl_gguf_find_tensor(g, "t.q2_k")->type));
}

static uint8_t *aligned_copy(const wbuf *b) {
    size_t sz = (b->n + 4095) / 4096 * 4096;
    uint8_t *p = aligned_alloc(4096, sz);
    if (!p) exit(2);
    memcpy(p, b->p, b->n);
    return p;
}

static void test_valid(void) {
    const uint32_t aligns[] = {0, 32, 8, 16, 64, 256, 4096};
    for (uint32_t version = 2; version <= 3; version++) {
        for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++) {
            wbuf b = {0};
            layout L;
            build_ref(&b, version, aligns[a], &L);
            uint8_t *p = aligned_copy(&b);
            kvl_gguf *g = NULL;
            kvl_err err;
            kvl_status st = kvl_gguf_open_mem(p, b.n, &g, &err);
            CHECK_MSG(st == KVL_OK, "v%u align %u: %s", version, aligns[a], err.msg);
            CHECK(err.status == KVL_OK);
            if (st == KVL_OK) check_ref(g, p, version, &L);
            kvl_gguf_free(g);
            free(p);
            free(b.p);
        }
    }
    kvl_gguf_free(NULL);
    /* No tensors, no metadata. */
    wbuf b = {0};
    header(&b, 3, 0, 0);
    kvl_gguf *g = NULL;
    kvl_err err;
    CHECK(kvl_gguf_open_mem(b.p, b.n, &g, &err) == KVL_OK);
    CHECK(kvl_gguf_n_kv(g) == 0 && kvl_gguf_n_tensors(g) == 0 && kvl_gguf_data_bytes(g) == 0);
    CHECK(kvl_gguf_find_key(g, "x") == -1 && kvl_gguf_find_tensor(g, "x") == NULL);
    kvl_gguf_free(g);
    free(b.p);
    /* Argument errors. */
    CHECK(kvl_gguf_open_mem(NULL, 10, &g, &err) == KVL_ERR_ARG);
    CHECK(kvl_gguf_open_mem("GGUF", 4, NULL, &err) == KVL_ERR_ARG);
    CHECK(kvl_gguf_open_mem(NULL, 0, &g, &err) == KVL_ERR_FORMAT && g == NULL);
    CHECK(kvl_gguf_open_mem("GGUF", 4, &g, NULL) == KVL_ERR_FORMAT); /* err may be NULL */
}

static void test_file(void) {
    const char *tmp = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/kvl_test_gguf_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    wbuf b = {0};
    layout L;
    build_ref(&b, 3, 64, &L);
    CHECK(write(fd, b.p, b.n) == (ssize_t)b.n);
    close(fd);
    kvl_gguf *g = NULL;
    kvl_err err;
    kvl_status st = kvl_gguf_open(path, &g, &err);
    CHECK_MSG(st == KVL_OK, "%s", err.msg);
    if (st == KVL_OK) {
        const uint8_t *base = (const uint8_t *)kvl_gguf_tensor_at(g, 0)->data - L.data_off;
        check_ref(g, base, 3, &L);
    }
    kvl_gguf_free(g);
    /* Truncated file on disk. */
    fd = open(path, O_WRONLY | O_TRUNC);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(write(fd, b.p, 100) == 100);
        close(fd);
    }
    g = (kvl_gguf *)1;
    CHECK(kvl_gguf_open(path, &g, &err) == KVL_ERR_FORMAT && g == NULL);
    /* Empty file. */
    fd = open(path, O_WRONLY | O_TRUNC);
    if (fd >= 0) close(fd);
    CHECK(kvl_gguf_open(path, &g, &err) == KVL_ERR_FORMAT && g == NULL);
    CHECK(strstr(err.msg, "empty") != NULL);
    unlink(path);
    /* Missing file, directory. */
    CHECK(kvl_gguf_open(path, &g, &err) == KVL_ERR_IO && g == NULL);
    CHECK(strstr(err.msg, "cannot open") != NULL && strstr(err.msg, path) != NULL);
    CHECK(kvl_gguf_open("/", &g, &err) == KVL_ERR_IO && g == NULL);
    CHECK(strstr(err.msg, "directory") != NULL);
    CHECK(kvl_gguf_open(NULL, &g, &err) == KVL_ERR_ARG);
    free(b.p);
}

/* ---- hostile input ---------------------------------------------------------------- */

static void test_truncation(void) {
    for (uint32_t version = 2; version <= 3; version++) {
        wbuf b = {0};
        layout L;
        build_ref(&b, version, version == 2 ? 0 : 64, &L);
        int bad = 0;
        for (size_t n = 0; n < b.n; n++) {
            kvl_err e;
            if (open_copy(b.p, n, &e) != KVL_ERR_FORMAT) {
                if (!bad) fprintf(stderr, "truncation at %zu of %zu did not fail as format error\n", n, b.n);
                bad++;
            }
        }
        CHECK(bad == 0);
        kvl_err e;
        CHECK(open_copy(b.p, b.n, &e) == KVL_OK);
        free(b.p);
    }
}

static void test_patched(void) {
    wbuf b = {0};
    layout L;
    build_ref(&b, 3, 0, &L);
    uint8_t *p = dup_bytes(b.p, b.n);
    size_t n = b.n;
#define RESET() memcpy(p, b.p, n)

    RESET(); p[0] = 'X';
    EXPECT_FAIL(p, n, KVL_ERR_FORMAT, "magic");
    RESET(); patch_u32(p, 4, 1);
    EXPECT_FAIL(p, n, KVL_ERR_UNSUPPORTED, "unsupported GGUF version 1");
    RESET(); patch_u32(p, 4, 0);
    EXPECT_FAIL(p, n, KVL_ERR_UNSUPPORTED, "unsupported GGUF version 0");
    RESET(); patch_u32(p, 4, 4);
    EXPECT_FAIL(p, n, KVL_ERR_UNSUPPORTED, "unsupported GGUF version 4");
    RESET(); patch_u32(p, 4, 0x03000000);
    EXPECT_FAIL(p, n, KVL_ERR_UNSUPPORTED, "big-endian");
    /* Huge counts. */
    RESET(); patch_u64(p, 8, 1ull << 62);
    EXPECT_FAIL(p, n, KVL_ERR_FORMAT, "tensor count");
    RESET(); patch_u64(p, 16, 1ull << 62);
    EXPECT_FAIL(p, n, KVL_ERR_FORMAT, "metadata count");
    RESET(); patch_u64(p, 16, UINT64_MAX);
    EXPECT_FAIL(p, n, KVL_ERR_FORMAT, "metadata count");
    RESET(); patch_u64(p, 16, 34); /* one more key than present: runs into the tensor infos */
    {
        kvl_err e;
        CHECK(open_copy(p, n, &e) == KVL_ERR_FORMAT);
    }
    RESET(); patch_u64(p, 8, N_TENSORS + 1); /* one more tensor than present */
    {
        kvl_err e;
        CHECK(open_copy(p, n, &e) != KVL_OK);
    }
    /* Huge string lengths. */
    RESET(); patch_u64(p, L.key0_len, 1ull << 60);
    EXPECT_FAIL(p, n, KVL_ERR_FORMAT, "length");
    RESET(); patch_u64(p, L.key0_len, UINT64_MAX);
    EXPECT_FAIL(p, n, KVL_ERR_FORMAT, "length");
    RESET(); patch_u64(p, L.key0_len, 0);
    EXPECT_FAIL(p, n, KVL_ERR_FORMAT, "name length");
    RESET(); patch_u64(p, L.str_val_len, 1ull << 62);
    EXPECT_FAIL(p, n, KVL_ERR_FORMAT, "key 't.str' string value length");
    RESET(); p[L.key0_len + 8 + 3] = 0; /* NUL inside a key */
    EXPECT_FAIL(p, n, KVL_ERR_FORMAT, "NUL");
    /* Unknown value type of the first key. */
    RESET(); patch_u32(p, L.key0_len + 8 + strlen("general.architecture"), 13);
    EXPECT_FAIL(p, n, KVL_ERR_FORMAT, "unknown value type 13");
    /* Tensor infos. */
    RESET(); patch_u32(p, L.ndims_at[0], 5);
    EXPECT_FAIL(p, n, KVL_ERR_FORMAT, "n_dims = 5");
    RESET(); patch_u32(p, L.ndims_at[0], 0);
    EXPECT_FAIL(p, n, KVL_ERR_FORMAT, "n_dims = 0");
    RESET(); patch_u32(p, L.type_at[3], 99);
    EXPECT_FAIL(p, n, KVL_ERR_FORMAT, "tensor 't.q8_0' has unknown tensor type 99");
    RESET(); patch_u32(p, L.type_at[3], 4); /* removed Q4_2 */
    EXPECT_FAIL(p, n, KVL_ERR_FORMAT, "unknown tensor type 4");
    RESET(); patch_u32(p, L.type_at[3], 0xffffffffu);
    EXPECT_FAIL(p, n, KVL_ERR_FORMAT, "unknown tensor type 4294967295");
    RESET(); patch_u32(p, L.type_at[0], KVL_TYPE_Q4_0); /* ne[0] = 8 is not a multiple of 32 */
    EXPECT_FAIL(p, n, KVL_ERR_FORMAT, "not a multiple of its block size 32");
    RESET(); patch_u64(p, L.off_at[1], L.toff[1] + 1);
    EXPECT_FAIL(p, n, KVL_ERR_FORMAT, "tensor 't.f16' data offset");
    RESET(); patch_u64(p, L.off_at[N_TENSORS - 1], L.toff[N_TENSORS - 1] + 32);
    EXPECT_FAIL(p, n, KVL_ERR_FORMAT, "tensor 't.q6_k' data [offset");
    EXPECT_FAIL(p, n, KVL_ERR_FORMAT, "extends past end of file");
    RESET(); patch_u64(p, L.off_at[2], 0xffffffffffffffe0ull);
    EXPECT_FAIL(p, n, KVL_ERR_FORMAT, "extends past end of file");
    RESET(); patch_u64(p, L.ndims_at[0] + 4, 1ull << 63); /* ne[0] > INT64_MAX */
    EXPECT_FAIL(p, n, KVL_ERR_FORMAT, "too large");
    free(p);
    free(b.p);
#undef RESET
}

/* Single-tensor files for the cases that need a different layout. */
static kvl_status one_tensor(uint32_t n_dims, const int64_t *ne, uint32_t type, size_t data_len, kvl_err *e) {
    wbuf b = {0};
    header(&b, 3, 1, 0);
    put_tinfo(&b, "w", n_dims, ne, type, 0);
    pad_to(&b, 32);
    for (size_t i = 0; i < data_len; i++) put_u8(&b, (uint8_t)i);
    kvl_status st = open_copy(b.p, b.n, e);
    free(b.p);
    return st;
}

static void test_built_bad(void) {
    kvl_err e;
    /* Overflowing element count / byte size. */
    int64_t ne1[4] = {1ll << 32, 1ll << 32, 4, 1};
    CHECK(one_tensor(3, ne1, KVL_TYPE_F32, 64, &e) == KVL_ERR_FORMAT);
    CHECK_MSG(strstr(e.msg, "overflow") && strstr(e.msg, "'w'"), "%s", e.msg);
    int64_t ne2[4] = {1ll << 62, 1, 1, 1}; /* 2^62 floats = 2^64 bytes */
    CHECK(one_tensor(1, ne2, KVL_TYPE_F32, 64, &e) == KVL_ERR_FORMAT);
    CHECK_MSG(strstr(e.msg, "overflow"), "%s", e.msg);
    int64_t ne3[4] = {1ll << 40, 1ll << 20, 1, 1}; /* fits in int64 elements, far past EOF */
    CHECK(one_tensor(2, ne3, KVL_TYPE_Q8_0, 64, &e) == KVL_ERR_FORMAT);
    CHECK_MSG(strstr(e.msg, "extends past end of file"), "%s", e.msg);
    int64_t ne4[4] = {33, 1, 1, 1};
    CHECK(one_tensor(1, ne4, KVL_TYPE_Q4_0, 64, &e) == KVL_ERR_FORMAT);
    CHECK_MSG(strstr(e.msg, "ne[0] = 33"), "%s", e.msg);
    int64_t ne5[4] = {16, 0, 1, 1}; /* zero-size tensor is fine */
    CHECK(one_tensor(2, ne5, KVL_TYPE_F32, 0, &e) == KVL_OK);
    int64_t ne6[4] = {16, 1, 1, 1};
    CHECK(one_tensor(1, ne6, KVL_TYPE_F32, 64, &e) == KVL_OK);
    CHECK(one_tensor(1, ne6, KVL_TYPE_F32, 63, &e) == KVL_ERR_FORMAT);
    CHECK(one_tensor(1, ne6, KVL_TYPE_COUNT, 64, &e) == KVL_ERR_FORMAT);

    /* Duplicate tensor name. */
    wbuf b = {0};
    int64_t ne[4] = {8, 1, 1, 1};
    header(&b, 3, 2, 0);
    put_tinfo(&b, "blk.0.attn_q.weight", 1, ne, KVL_TYPE_F32, 0);
    put_tinfo(&b, "blk.0.attn_q.weight", 1, ne, KVL_TYPE_F32, 32);
    pad_to(&b, 32);
    for (int i = 0; i < 64; i++) put_u8(&b, 0);
    EXPECT_FAIL(b.p, b.n, KVL_ERR_FORMAT, "duplicate tensor name 'blk.0.attn_q.weight'");
    free(b.p);

    /* Duplicate key. */
    b = (wbuf){0};
    header(&b, 3, 0, 3);
    put_key(&b, "a", KVL_GGUF_UINT8); put_u8(&b, 1);
    put_key(&b, "b", KVL_GGUF_UINT8); put_u8(&b, 1);
    put_key(&b, "a", KVL_GGUF_UINT32); put_u32(&b, 1);
    EXPECT_FAIL(b.p, b.n, KVL_ERR_FORMAT, "duplicate key 'a'");
    free(b.p);

    /* Alignment: zero, not a power of two, not a multiple of 8 (1, 2, 4 would
     * misalign typed tensor data), wrong type. */
    const uint32_t bad_align[] = {0, 1, 2, 4, 3, 12, 24, 48, 0xffffffffu};
    for (size_t i = 0; i < sizeof bad_align / sizeof bad_align[0]; i++) {
        b = (wbuf){0};
        header(&b, 3, 0, 1);
        put_key(&b, "general.alignment", KVL_GGUF_UINT32);
        put_u32(&b, bad_align[i]);
        EXPECT_FAIL(b.p, b.n, KVL_ERR_FORMAT, "general.alignment");
        EXPECT_FAIL(b.p, b.n, KVL_ERR_FORMAT, "power of two and a multiple of 8");
        free(b.p);
    }
    /* A whole file with tensors at alignment 1 (f32 data at odd offsets). */
    {
        layout L1;
        b = (wbuf){0};
        build_ref(&b, 3, 1, &L1);
        EXPECT_FAIL(b.p, b.n, KVL_ERR_FORMAT, "general.alignment = 1 is invalid");
        free(b.p);
    }
    b = (wbuf){0};
    header(&b, 3, 0, 1);
    put_key(&b, "general.alignment", KVL_GGUF_UINT64);
    put_u64(&b, 64);
    EXPECT_FAIL(b.p, b.n, KVL_ERR_FORMAT, "must be uint32");
    free(b.p);

    /* Nested arrays are rejected cleanly. */
    b = (wbuf){0};
    header(&b, 3, 0, 1);
    put_key(&b, "nested", KVL_GGUF_ARRAY);
    put_u32(&b, KVL_GGUF_ARRAY);
    put_u64(&b, 1);
    put_u32(&b, KVL_GGUF_UINT8);
    put_u64(&b, 1);
    put_u8(&b, 1);
    EXPECT_FAIL(b.p, b.n, KVL_ERR_UNSUPPORTED, "nested arrays");
    free(b.p);

    /* Unknown array element type; array count too large for the file. */
    b = (wbuf){0};
    header(&b, 3, 0, 1);
    put_key(&b, "arr", KVL_GGUF_ARRAY);
    put_u32(&b, 77);
    put_u64(&b, 1);
    put_u8(&b, 1);
    EXPECT_FAIL(b.p, b.n, KVL_ERR_FORMAT, "unknown array element type 77");
    free(b.p);
    const uint32_t ets[] = {KVL_GGUF_UINT8, KVL_GGUF_UINT64, KVL_GGUF_STRING};
    for (size_t i = 0; i < 3; i++) {
        b = (wbuf){0};
        header(&b, 3, 0, 1);
        put_key(&b, "arr", KVL_GGUF_ARRAY);
        put_u32(&b, ets[i]);
        put_u64(&b, 1ull << 61);
        for (int j = 0; j < 64; j++) put_u8(&b, 0);
        EXPECT_FAIL(b.p, b.n, KVL_ERR_FORMAT, "cannot fit");
        free(b.p);
    }
    /* String array whose count fits the bound but whose strings run off the end. */
    b = (wbuf){0};
    header(&b, 3, 0, 1);
    put_key(&b, "arr", KVL_GGUF_ARRAY);
    put_u32(&b, KVL_GGUF_STRING);
    put_u64(&b, 3);
    put_str(&b, "ab");
    put_u64(&b, 1000);
    put_u64(&b, 0);
    EXPECT_FAIL(b.p, b.n, KVL_ERR_FORMAT, "exceeds");
    free(b.p);
    /* Tensor name with a NUL byte, empty name. */
    b = (wbuf){0};
    header(&b, 3, 1, 0);
    put_tinfo(&b, "", 1, ne, KVL_TYPE_F32, 0);
    pad_to(&b, 32);
    for (int i = 0; i < 32; i++) put_u8(&b, 0);
    EXPECT_FAIL(b.p, b.n, KVL_ERR_FORMAT, "name length");
    free(b.p);
}

static uint64_t lcg(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* Touch everything a successfully opened (corrupt) file exposes. */
static unsigned exercise(const kvl_gguf *g) {
    unsigned acc = 0;
    for (int64_t i = 0; i < kvl_gguf_n_kv(g); i++) {
        const char *k = kvl_gguf_key_name(g, i);
        uint32_t u;
        int64_t v;
        float f;
        int bv;
        const char *s;
        size_t n;
        kvl_gguf_vtype et;
        uint64_t cnt;
        acc += (unsigned)kvl_gguf_get_u32(g, k, &u) + (unsigned)kvl_gguf_get_i64(g, k, &v) +
               (unsigned)kvl_gguf_get_f32(g, k, &f) + (unsigned)kvl_gguf_get_bool(g, k, &bv);
        if (kvl_gguf_get_str(g, k, &s, &n))
            for (size_t j = 0; j < n; j++) acc += (uint8_t)s[j];
        if (kvl_gguf_get_arr(g, k, &et, &cnt)) {
            for (uint64_t j = 0; j < cnt; j++) {
                double d;
                if (kvl_gguf_arr_str(g, k, j, &s, &n)) acc += n ? (uint8_t)s[n - 1] : 0;
                acc += (unsigned)kvl_gguf_arr_i64(g, k, j, &v) + (unsigned)kvl_gguf_arr_f64(g, k, j, &d);
            }
            (void)kvl_gguf_arr_data(g, k);
        }
    }
    for (int64_t i = 0; i < kvl_gguf_n_tensors(g); i++) {
        const kvl_gguf_tensor *t = kvl_gguf_tensor_at(g, i);
        acc += kvl_gguf_find_tensor(g, t->name) != NULL;
        for (size_t j = 0; j < t->nbytes; j++) acc += ((const uint8_t *)t->data)[j];
    }
    return acc;
}

static void test_random_corruption(void) {
    wbuf b = {0};
    layout L;
    build_ref(&b, 3, 0, &L);
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    int ok = 0, failed = 0, crashed_msgs = 0;
    unsigned acc = 0;
    for (int it = 0; it < 4000; it++) {
        uint8_t *p = dup_bytes(b.p, b.n);
        int k = 1 + (int)(lcg(&seed) % 4);
        for (int m = 0; m < k; m++) {
            /* Mostly hit the header/metadata/tensor infos, sometimes anywhere. */
            size_t lim = lcg(&seed) % 8 ? L.data_off : b.n;
            size_t pos = (size_t)(lcg(&seed) % lim);
            switch (lcg(&seed) % 4) {
            case 0: p[pos] = (uint8_t)lcg(&seed); break;
            case 1: p[pos] ^= (uint8_t)(1u << (lcg(&seed) % 8)); break;
            case 2: p[pos] = lcg(&seed) % 2 ? 0xff : 0; break;
            default:
                if (pos + 8 <= b.n) {
                    static const uint64_t interesting[] = {0, 1, 0x7fffffffffffffffull, 0xffffffffffffffffull,
                                                           1ull << 32, 1ull << 62, 0x80000000ull, 4, 5};
                    patch_u64(p, pos, interesting[lcg(&seed) % 9]);
                }
            }
        }
        size_t n = b.n;
        if (lcg(&seed) % 8 == 0) n = (size_t)(lcg(&seed) % b.n); /* also truncate */
        kvl_gguf *g = NULL;
        kvl_err e;
        kvl_status st = kvl_gguf_open_mem(p, n, &g, &e);
        if (st == KVL_OK) {
            ok++;
            acc += exercise(g);
            kvl_gguf_free(g);
        } else {
            failed++;
            if (g != NULL || e.msg[0] == 0 || strncmp(e.msg, "gguf: ", 6) != 0) crashed_msgs++;
        }
        free(p);
    }
    CHECK(crashed_msgs == 0);
    CHECK(ok + failed == 4000);
    CHECK(failed > 0);
    printf("random corruption: %d opened, %d rejected (acc %u)\n", ok, failed, acc);
    free(b.p);
}

/* ---- the real model ------------------------------------------------------------------ */

static void test_real_model(void) {
    const char *path = getenv("KVL_MODEL");
    char buf[1024];
    if (!path || !*path) {
        const char *home = getenv("HOME");
        snprintf(buf, sizeof buf, "%s/.cache/kvlite/SmolLM2-135M-Instruct.Q4_1.gguf", home ? home : "/root");
        path = buf;
    }
    if (access(path, R_OK) != 0) {
        SKIP("real-model checks: %s not found", path);
        return;
    }
    kvl_gguf *g = NULL;
    kvl_err err;
    kvl_status st = kvl_gguf_open(path, &g, &err);
    CHECK_MSG(st == KVL_OK, "%s", err.msg);
    if (st != KVL_OK) return;
    CHECK(kvl_gguf_version(g) == 3);
    CHECK(kvl_gguf_n_tensors(g) == 272);
    const char *s;
    size_t n;
    CHECK(kvl_gguf_get_str(g, "general.architecture", &s, &n) && str_eq(s, n, "llama", 5));
    uint32_t u = 0;
    CHECK(kvl_gguf_get_u32(g, "llama.block_count", &u) && u == 30);
    kvl_gguf_vtype et;
    uint64_t cnt = 0;
    CHECK(kvl_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &cnt) && et == KVL_GGUF_STRING && cnt == 49152);
    CHECK(kvl_gguf_arr_str(g, "tokenizer.ggml.tokens", cnt - 1, &s, &n) && n > 0);
    CHECK(!kvl_gguf_arr_str(g, "tokenizer.ggml.tokens", cnt, &s, &n));
    const kvl_gguf_tensor *t = kvl_gguf_find_tensor(g, "token_embd.weight");
    CHECK(t != NULL);
    if (t) {
        CHECK(t->type == KVL_TYPE_Q8_0);
        CHECK(t->n_dims == 2 && t->ne[0] == 576 && t->ne[1] == 49152);
        CHECK(t->nbytes == kvl_type_row_bytes(KVL_TYPE_Q8_0, 576) * 49152);
    }
    size_t total = 0;
    for (int64_t i = 0; i < kvl_gguf_n_tensors(g); i++) total += kvl_gguf_tensor_at(g, i)->nbytes;
    CHECK(total == kvl_gguf_data_bytes(g) && total > 0);
    kvl_gguf_free(g);
}

/* ---- the committed fuzz seeds (tests/fuzz/corpus/fuzz_gguf) ------------------------- */

/* Each seed does what its name says (scripts/make_fuzz_seeds.py): bad-* and
 * trunc-* are rejected with a message, the rest open; tok-* and model-* build
 * a tokenizer; model-* load as models. Keeps the corpus from rotting when the
 * reader changes. */
static void test_fuzz_seeds(void) {
    const char *dir = "tests/fuzz/corpus/fuzz_gguf";
    DIR *d = opendir(dir);
    CHECK_MSG(d != NULL, "cannot open %s (run from the repo root)", dir);
    if (!d) return;
    int n = 0, models = 0, toks = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        uint8_t *buf = malloc(1 << 20);
        size_t len = buf ? fread(buf, 1, 1 << 20, f) : 0;
        fclose(f);
        n++;
        const int bad = !strncmp(e->d_name, "bad-", 4) || !strncmp(e->d_name, "trunc-", 6);
        const int tok = !strncmp(e->d_name, "tok-", 4), model = !strncmp(e->d_name, "model-", 6);
        kvl_gguf *g = NULL;
        kvl_err err;
        kvl_status st = kvl_gguf_open_mem(buf, len, &g, &err);
        if (bad) CHECK_MSG(st != KVL_OK && err.msg[0], "seed %s: opened", e->d_name);
        else CHECK_MSG(st == KVL_OK, "seed %s: %s", e->d_name, err.msg);
        if (st == KVL_OK && (tok || model)) {
            kvl_tok *t = NULL;
            CHECK_MSG(kvl_tok_create(g, &t, &err) == KVL_OK, "seed %s: tokenizer: %s", e->d_name, err.msg);
            toks += t != NULL;
            kvl_tok_free(t);
        }
        kvl_gguf_free(g);
        if (model) {
            kvl_model *m = NULL;
            char msg[256] = "";
            CHECK_MSG(kvl_model_load(path, &m, msg, sizeof msg) == KVL_OK, "seed %s: model: %s", e->d_name, msg);
            models += m != NULL;
            kvl_model_free(m);
        }
        free(buf);
    }
    closedir(d);
    CHECK_MSG(n >= 20 && toks >= 5 && models >= 2, "fuzz seeds: %d files, %d tokenizers, %d models", n, toks, models);
}

int main(void) {
    test_valid();
    test_file();
    test_truncation();
    test_patched();
    test_built_bad();
    test_random_corruption();
    test_real_model();
    test_fuzz_seeds();
    KVL_TEST_END();
}
