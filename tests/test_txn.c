/* Transactional forward pass: a failed kvl_prefill leaves the sequence as it
 * was. KV level: begin / append / drop / rollback restores lengths,
 * positions, rows, pool bytes and statistics (per-token codec, a sealing
 * test codec, shared pages of a fork). Engine level, on a committed tiny
 * model: the pool fails the N-th page allocation for every N a prefill makes
 * (over several n_batch chunks, from an empty sequence, a partial last page
 * and a fork), and after each failure lengths, positions, pool bytes and
 * the position are unchanged and a following prefill gives logits
 * bit-identical to a sequence that never failed. */
#include <math.h>
#include <string.h>

#include "engine/engine.h"
#include "kv/codec.h"
#include "kv/kv.h"
#include "test.h"

enum { NL = 3, NKV = 2, NH = 4, HD = 16 };

static float frand(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* Append n tokens at positions pos0.. to every layer, then seal it (as the
 * engine does after each forward call's attention). */
static kvl_status add(kvl_kv_table *t, int pos0, int n, unsigned seed) {
    float k[64 * NKV * HD], v[64 * NKV * HD];
    int32_t pos[64];
    kvl_err err;
    for (int i = 0; i < n; i++) pos[i] = pos0 + i;
    for (int l = 0; l < NL; l++) {
        for (int i = 0; i < n * NKV * HD; i++) k[i] = frand(&seed), v[i] = frand(&seed);
        kvl_status s = kvl_kv_append(t, l, n, pos, k, v, &err);
        if (s == KVL_OK) s = kvl_kv_seal(t, l, &err);
        if (s) return s;
    }
    return KVL_OK;
}

/* Snapshot of a table: lengths, positions and decoded rows of every list. */
typedef struct {
    int len[NL][NKV];
    int32_t pos[NL][NKV][256];
    float k[NL][NKV][256][HD], v[NL][NKV][256][HD];
    float mass[NL][NH][256];
    int n_sealed[NL][NKV];
    size_t pool_used, table_bytes;
} snap;

static void take(const kvl_kv_table *t, snap *s) {
    memset(s, 0, sizeof *s);
    for (int l = 0; l < NL; l++)
        for (int h = 0; h < NKV; h++) {
            s->len[l][h] = kvl_kv_table_positions(t, l, h, s->pos[l][h], 256);
            for (int i = 0; i < s->len[l][h] && i < 256; i++)
                kvl_kv_table_decode(t, l, h, i, s->k[l][h][i], s->v[l][h][i]);
            s->n_sealed[l][h] = kvl_kv_table_n_sealed(t, l, h);
        }
    s->table_bytes = kvl_kv_table_bytes(t);
    if (kvl_kv_table_stats_flags(t))
        for (int l = 0; l < NL; l++)
            for (int qh = 0; qh < NH; qh++)
                memcpy(s->mass[l][qh], kvl_kv_table_stat_mass(t, l, qh),
                       sizeof(float) * (size_t)s->len[l][qh / (NH / NKV)]);
    s->pool_used = kvl_kv_pool_used(kvl_kv_table_pool(t));
}

static int same(const snap *a, const snap *b) { return memcmp(a, b, sizeof *a) == 0; }

/* a sealing codec (f32 rows + a flag written at seal; writing a sealed page is a violation) */
#define SEALED 0x5EA1EDu
static int seal_violations;
static size_t ts_seg_bytes(int d, int P) { return (size_t)P * d * 4 + 4; }
static uint32_t *ts_flag(const uint8_t *seg, int d, int P) { return (uint32_t *)(seg + (size_t)P * d * 4); }
static void ts_seal(const void *st, uint8_t *seg, const uint8_t *open, int d, int P) {
    memcpy(seg, open, (size_t)P * d * 4);
    *ts_flag(seg, d, P) = SEALED;
}
static void ts_decode(const uint8_t *seg, int d, int P, int i, float *x) {
    memcpy(x, seg + (size_t)i * d * 4, (size_t)d * 4);
}
static void ts_qk(const uint8_t *seg, int d, int P, int n, const float *q, float *s) {
    kvl_codec_find("f32")->ref.qk(seg, d, P, n, q, s);
}
static void ts_av(const uint8_t *seg, int d, int P, int n, const float *pr, float *acc) {
    kvl_codec_find("f32")->ref.av(seg, d, P, n, pr, acc);
}
extern const kvl_codec kvl_codec_f32;
/* rows open in f32, sealed into f32 rows + a flag */
static const kvl_codec codec_sealed = {.name = "test-sealed", .seg_bytes = ts_seg_bytes, .open = &kvl_codec_f32,
                                       .seal = ts_seal, .decode = ts_decode, .ref = {"scalar", ts_qk, ts_av, NULL, NULL}};

static void attend_all(kvl_kv_table *t, int n, int32_t qpos0, unsigned seed) {
    float q[8 * NH * HD], o[8 * NH * HD];
    int32_t qp[8];
    char scratch[1 << 16];
    for (int i = 0; i < n; i++) qp[i] = qpos0 + i;
    for (int i = 0; i < n * NH * HD; i++) q[i] = frand(&seed);
    CHECK(kvl_kv_attend_scratch_bytes(kvl_kv_table_pool(t)) <= sizeof scratch);
    for (int l = 0; l < NL; l++) kvl_kv_attend(t, l, n, q, qp, NH, 0.25f, o, scratch, 0, 1);
}

/* One scenario: table with `base` tokens, optional fork sharing them, then a
 * transaction that appends `more` tokens (and drops some when drop != 0) and
 * rolls back. Everything must be as before; a commit keeps it. */
static void kv_case(const kvl_codec *codec, int P, int base, int more, int fork, int drop, int stats) {
    kvl_kv_config cfg = {.n_layer = NL, .n_head_kv = NKV, .head_dim = HD, .page_tokens = P,
                         .budget_bytes = (size_t)8 << 20, .codec = codec, .n_head = NH};
    kvl_kv_pool *p;
    kvl_kv_table *t, *f = NULL;
    kvl_err err;
    CHECK(kvl_kv_pool_create(&cfg, &p, &err) == KVL_OK);
    CHECK(kvl_kv_table_create(p, &t, &err) == KVL_OK);
    if (stats) CHECK(kvl_kv_table_stats_enable(t, KVL_KV_STAT_MASS, &err) == KVL_OK);
    seal_violations = 0;
    CHECK(add(t, 0, base, 7) == KVL_OK);
    if (stats && base) attend_all(t, 1, base - 1, 3);
    if (fork) CHECK(kvl_kv_table_fork(t, &f, &err) == KVL_OK);
    static snap before, after, fsnap, fafter;
    take(t, &before);
    if (f) take(f, &fsnap);
    const int64_t taken0 = kvl_kv_pool_pages_taken(p);

    CHECK(kvl_kv_txn_begin(t, &err) == KVL_OK);
    CHECK(kvl_kv_txn_begin(t, &err) == KVL_ERR_ARG); /* no nesting */
    CHECK(add(t, base, more, 11) == KVL_OK);
    if (stats) attend_all(t, 1, base + more - 1, 5);
    if (drop && base + more > 3) {
        const int idx[] = {0, 2, base + more - 1};
        for (int l = 0; l < NL; l++) CHECK(kvl_kv_drop(t, l, l % NKV, idx, 3, &err) == KVL_OK);
    }
    CHECK(add(t, base + more, 3, 13) == KVL_OK); /* a second chunk */
    CHECK(kvl_kv_pool_pages_taken(p) > taken0 || more + 3 <= P - base % P);
    kvl_kv_txn_rollback(t);
    CHECK(!kvl_kv_txn_open(t));
    take(t, &after);
    CHECK_MSG(same(&before, &after), "codec %s P %d base %d more %d fork %d drop %d stats %d: state differs after rollback",
              kvl_codec_name(codec), P, base, more, fork, drop, stats);
    if (f) {
        take(f, &fafter);
        fafter.pool_used = fsnap.pool_used;
        CHECK(same(&fsnap, &fafter));
    }
    /* after a rollback the table works as if nothing happened: same result as a clean append */
    CHECK(kvl_kv_txn_begin(t, &err) == KVL_OK);
    CHECK(add(t, base, more, 17) == KVL_OK);
    kvl_kv_txn_commit(t);
    CHECK(kvl_kv_table_len(t, NL - 1, NKV - 1) == base + more);
    kvl_kv_table *clean;
    CHECK(kvl_kv_table_create(p, &clean, &err) == KVL_OK);
    CHECK(add(clean, 0, base, 7) == KVL_OK);
    CHECK(add(clean, base, more, 17) == KVL_OK);
    static snap a, b;
    take(t, &a);
    take(clean, &b);
    a.pool_used = b.pool_used = 0;
    memset(a.mass, 0, sizeof a.mass);
    memset(b.mass, 0, sizeof b.mass);
    CHECK(same(&a, &b));
    CHECK(seal_violations == 0);
    kvl_kv_table_free(clean);
    /* a table freed with a transaction open gives everything back */
    CHECK(kvl_kv_txn_begin(t, &err) == KVL_OK);
    CHECK(add(t, base + more, 5, 19) == KVL_OK);
    kvl_kv_table_free(t);
    kvl_kv_table_free(f);
    CHECK(kvl_kv_pool_used(p) == 0);
    kvl_kv_pool_free(p);
}

static void test_kv_txn(void) {
    const kvl_codec *codecs[] = {kvl_codec_find("f16"), kvl_codec_find("int8"), &codec_sealed};
    for (int c = 0; c < 3; c++)
        for (int P = 4; P <= 16; P *= 4)
            for (int base = 0; base <= 9; base += 3)
                for (int fork = 0; fork < 2; fork++)
                    for (int drop = 0; drop < 2; drop++)
                        kv_case(codecs[c], P, base, 10, fork, drop, c == 0 && !fork);
}

/* Injected failure: the reserve that would take the N-th page fails once. */
static void test_fault_injection(void) {
    kvl_kv_config cfg = {.n_layer = NL, .n_head_kv = NKV, .head_dim = HD, .page_tokens = 4,
                         .budget_bytes = (size_t)1 << 20, .codec = kvl_codec_find("f16"), .n_head = NH};
    kvl_kv_pool *p;
    kvl_kv_table *t;
    kvl_err err;
    CHECK(kvl_kv_pool_create(&cfg, &p, &err) == KVL_OK && kvl_kv_table_create(p, &t, &err) == KVL_OK);
    CHECK(add(t, 0, 4, 1) == KVL_OK); /* 2 pages per layer, 6 in all */
    CHECK(kvl_kv_pool_pages_taken(p) == NL * NKV);
    kvl_kv_pool_fail_page(p, 3); /* layer 1's pages */
    CHECK(add(t, 4, 4, 1) == KVL_ERR_NOMEM);
    CHECK(kvl_kv_table_len(t, 0, 0) == 8 && kvl_kv_table_len(t, 1, 0) == 4); /* append is per layer */
    CHECK(add(t, 8, 4, 1) == KVL_OK); /* fires once */
    kvl_kv_table_free(t);
    kvl_kv_pool_free(p);
}

/* ---- engine level ---- */

static const char *tiny_dir(void) {
    const char *d = getenv("KVL_TINY_DIR");
    return d && *d ? d : "tests/data/tiny";
}

static void state_of(const kvl_seq *s, int *lens, int32_t *pos, int nl, int nkv, int cap) {
    for (int l = 0; l < nl; l++)
        for (int h = 0; h < nkv; h++)
            lens[l * nkv + h] = kvl_kv_table_positions(s->t, l, h, pos + (size_t)(l * nkv + h) * cap, cap);
}

static void engine_case(kvl_ctx *c, const kvl_token *toks, int base, int n, int fork) {
    const kvl_model *m = c->m;
    const int nl = m->n_layer, nkv = m->n_head_kv, V = m->n_vocab, cap = 256;
    float *ref = malloc(sizeof(float) * V), *got = malloc(sizeof(float) * V);
    int *l0 = malloc(sizeof(int) * nl * nkv), *l1 = malloc(sizeof(int) * nl * nkv);
    int32_t *p0 = calloc((size_t)nl * nkv * cap, 4), *p1 = calloc((size_t)nl * nkv * cap, 4);
    /* the sequence that never fails */
    kvl_seq *r, *parent = NULL;
    CHECK(kvl_seq_create(c, &r) == KVL_OK);
    if (base) CHECK(kvl_prefill(r, toks, base, NULL, NULL) == KVL_OK);
    if (fork) { /* same structure as the failing runs: the fork copies the shared partial pages */
        parent = r;
        CHECK(kvl_seq_fork(parent, &r) == KVL_OK);
    }
    const int64_t t0 = kvl_kv_pool_pages_taken(c->pool);
    CHECK(kvl_prefill(r, toks + base, n, ref, NULL) == KVL_OK);
    const int64_t pages = kvl_kv_pool_pages_taken(c->pool) - t0;
    kvl_seq_free(r);
    kvl_seq_free(parent);
    parent = NULL;
    CHECK(pages > 2);
    int fails = 0, ok_after = 0, same_state = 0, same_logits = 0;
    for (int64_t k = 1; k <= pages + 1; k++) {
        kvl_seq *s;
        if (fork) {
            CHECK(kvl_seq_create(c, &parent) == KVL_OK);
            if (base) CHECK(kvl_prefill(parent, toks, base, NULL, NULL) == KVL_OK);
            CHECK(kvl_seq_fork(parent, &s) == KVL_OK);
        } else {
            CHECK(kvl_seq_create(c, &s) == KVL_OK);
            if (base) CHECK(kvl_prefill(s, toks, base, NULL, NULL) == KVL_OK);
        }
        state_of(s, l0, p0, nl, nkv, cap);
        const size_t used0 = kvl_kv_pool_used(c->pool);
        const size_t bytes0 = kvl_kv_table_bytes(s->t);
        kvl_kv_pool_fail_page(c->pool, k);
        kvl_status st = kvl_prefill(s, toks + base, n, got, NULL);
        kvl_kv_pool_fail_page(c->pool, 0);
        if (k <= pages) {
            fails += st == KVL_ERR_NOMEM && strstr(kvl_ctx_error(c), "injected") != NULL;
            state_of(s, l1, p1, nl, nkv, cap);
            same_state += kvl_seq_pos(s) == base && kvl_kv_pool_used(c->pool) == used0 &&
                          kvl_kv_table_bytes(s->t) == bytes0 && !kvl_kv_txn_open(s->t) &&
                          !memcmp(l0, l1, sizeof(int) * nl * nkv) &&
                          !memcmp(p0, p1, sizeof(int32_t) * (size_t)nl * nkv * cap);
            st = kvl_prefill(s, toks + base, n, got, NULL);
        }
        ok_after += st == KVL_OK && kvl_seq_pos(s) == base + n;
        same_logits += st == KVL_OK && !memcmp(got, ref, sizeof(float) * V);
        kvl_seq_free(s);
        kvl_seq_free(parent);
        parent = NULL;
        CHECK(kvl_kv_pool_used(c->pool) == 0);
    }
    CHECK_MSG(fails == pages, "base %d fork %d: %d of %lld injected failures reported", base, fork, fails,
              (long long)pages);
    CHECK_MSG(same_state == pages, "base %d fork %d: state changed by %lld of %lld failed prefills", base, fork,
              (long long)(pages - same_state), (long long)pages);
    CHECK_MSG(ok_after == pages + 1 && same_logits == pages + 1, "base %d fork %d: retry ok %d, same logits %d of %lld",
              base, fork, ok_after, same_logits, (long long)pages + 1);
    printf("measured: fault injection base %d fork %d: %lld page allocations, each failure rolled back\n", base, fork,
           (long long)pages);
    free(ref), free(got), free(l0), free(l1), free(p0), free(p1);
}

static void test_engine_txn(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/llama_q.gguf", tiny_dir());
    kvl_model *m;
    char err[256];
    if (kvl_model_load(path, &m, err, sizeof err) != KVL_OK) {
        CHECK_MSG(0, "cannot load %s: %s", path, err);
        return;
    }
    kvl_ctx_params p;
    kvl_ctx_params_default(&p);
    p.n_ctx = 200;
    p.n_batch = 16; /* several forward calls per prefill */
    p.page_tokens = 8;
    p.n_threads = 2;
    kvl_ctx *c;
    CHECK(kvl_ctx_create(m, &p, &c, err, sizeof err) == KVL_OK);
    kvl_token toks[120];
    unsigned seed = 5;
    kvl_model_info mi;
    kvl_model_get_info(m, &mi);
    for (int i = 0; i < 120; i++) toks[i] = (kvl_token)((unsigned)(frand(&seed) * 1e4 + 2e4) % (unsigned)mi.n_vocab);
    engine_case(c, toks, 0, 40, 0);
    engine_case(c, toks, 13, 40, 0); /* partial last page, several chunks */
    engine_case(c, toks, 13, 40, 1); /* shared partial page: copy-on-write undone */

    /* the up-front checks also leave nothing behind */
    kvl_seq *s;
    CHECK(kvl_seq_create(c, &s) == KVL_OK);
    CHECK(kvl_prefill(s, toks, 100, NULL, NULL) == KVL_OK);
    CHECK(kvl_prefill(s, toks, 101, NULL, NULL) == KVL_ERR_CTX_FULL && kvl_seq_pos(s) == 100);
    kvl_seq_free(s);
    kvl_ctx_free(c);
    kvl_model_free(m);
}

int main(void) {
    test_kv_txn();
    test_fault_injection();
    test_engine_txn();
    KVL_TEST_END();
}
