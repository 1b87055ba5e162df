/* The random-weight GGUF writer (tools/gguf_random.c, compiled in here):
 * bad specs rejected with a message naming the problem; the bytes fixed by
 * spec + seed whatever the thread count; the tiny preset in every weight
 * type written, loaded through the normal loader (kvl_model_load), its
 * synthetic vocabulary tokenizing text, and a forward pass on the CPU giving
 * finite logits with a spread (std ~1 by construction: 0.5..2 accepted)
 * whose greedy continuation does not collapse to one token (>= 8 distinct
 * of 16; the untied presets give 15-16). */
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "kvlite.h"
#include "../tools/gguf_random.c"

static void bad(grand_spec s, const char *word) {
    char msg[256] = "";
    CHECK_MSG(grand_validate(&s, msg, sizeof msg) == -1 && strstr(msg, word), "expected '%s' in '%s'", word, msg);
}

static void check_validate(void) {
    grand_spec s;
    CHECK(!grand_preset("nope", &s));
    CHECK(grand_preset("llama3-8b", &s));
    CHECK(s.n_layer == 32 && s.n_embd == 4096 && s.n_head == 32 && s.n_head_kv == 8 && s.n_ff == 14336 &&
          s.n_vocab == 128256 && s.rope_theta == 500000.0f && s.wtype == KVL_TYPE_Q8_0);
    CHECK(grand_preset("llama3-1b", &s) && !s.tied && s.n_embd == 2048);
    CHECK(grand_preset("tiny", &s));
    char msg[256];
    CHECK(grand_validate(&s, msg, sizeof msg) == 0);
    CHECK(grand_type_parse("Q4_1") == KVL_TYPE_Q4_1 && grand_type_parse("q5_k") == -1);
    grand_spec b = s;
    b.wtype = KVL_TYPE_Q4_K, bad(b, "weight type");
    b = s, b.n_layer = 0, bad(b, "layers");
    b = s, b.n_embd = 100, bad(b, "dim");
    b = s, b.n_ff = 33, bad(b, "ffn");
    b = s, b.n_head = 3, bad(b, "heads 3");
    b = s, b.n_head = 256, bad(b, "head dim"); /* head dim 1: odd */
    b = s, b.n_head_kv = 3, bad(b, "kv-heads");
    b = s, b.n_vocab = 299, bad(b, "vocab");
    b = s, b.n_ctx = 0, bad(b, "ctx");
    b = s, b.rope_theta = 0, bad(b, "theta");
    b = s, b.norm_eps = -1, bad(b, "eps");
    b = s, b.gain = 0, bad(b, "gain");
    CHECK(grand_write(&s, "/nonexistent-dir/x.gguf", NULL, msg, sizeof msg) == -1 && strstr(msg, "cannot write"));
    b = s, b.n_vocab = 1;
    CHECK(grand_write(&b, "/tmp/never-written.gguf", NULL, msg, sizeof msg) == -1 && access("/tmp/never-written.gguf", F_OK));
}

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n);
    if (b && fread(b, 1, *n, f) != *n) free(b), b = NULL;
    fclose(f);
    return b;
}

static void check_determinism(const char *dir) {
    grand_spec s;
    grand_preset("tiny", &s);
    char p1[512], p2[512], p3[512], msg[256];
    snprintf(p1, sizeof p1, "%s/a.gguf", dir), snprintf(p2, sizeof p2, "%s/b.gguf", dir);
    snprintf(p3, sizeof p3, "%s/c.gguf", dir);
    uint64_t n1 = 0;
    s.n_threads = 1;
    CHECK(grand_write(&s, p1, &n1, msg, sizeof msg) == 0);
    s.n_threads = 3;
    CHECK(grand_write(&s, p2, NULL, msg, sizeof msg) == 0);
    s.seed = 2;
    CHECK(grand_write(&s, p3, NULL, msg, sizeof msg) == 0);
    size_t a = 0, b = 0, c = 0;
    unsigned char *A = slurp(p1, &a), *B = slurp(p2, &b), *C = slurp(p3, &c);
    CHECK(A && B && C && a == n1 && a == b && a == c);
    CHECK(A && B && a == b && !memcmp(A, B, a)); /* 1 and 3 threads: the same bytes */
    CHECK(A && C && a == c && memcmp(A, C, a));  /* another seed: other weights */
    free(A), free(B), free(C);
    remove(p1), remove(p2), remove(p3);
}

/* Write the tiny preset as type t, load it, tokenize, prefill, decode. */
static void check_model(const char *dir, int t, int tied) {
    grand_spec s;
    grand_preset("tiny", &s);
    s.wtype = t, s.tied = tied;
    char path[512], msg[256], err[256];
    snprintf(path, sizeof path, "%s/tiny-%s.gguf", dir, kvl_type_name(t));
    CHECK_MSG(grand_write(&s, path, NULL, msg, sizeof msg) == 0, "%s", msg);
    kvl_model *m = NULL;
    CHECK_MSG(kvl_model_load(path, &m, err, sizeof err) == KVL_OK, "%s", err);
    if (!m) return;
    kvl_model_info mi;
    kvl_model_get_info(m, &mi);
    CHECK(mi.n_layer == 2 && mi.n_embd == 256 && mi.n_head == 4 && mi.n_head_kv == 2 && mi.n_ff == 512 &&
          mi.n_vocab == 512 && mi.head_dim == 64);
    const char *text = "hello world, 123!";
    kvl_token tok[64];
    const int64_t nt = kvl_tokenize(m, text, strlen(text), 1, 0, tok, 64);
    CHECK(nt > 5 && tok[0] == 1); /* <s> first */
    char round[128] = "", pc[32];
    for (int64_t i = 1; i < nt; i++) {
        const int n = kvl_token_to_piece(m, tok[i], 0, pc, (int)sizeof pc - 1);
        if (n > 0 && n < (int)sizeof pc) pc[n] = 0, strncat(round, pc, sizeof round - strlen(round) - 1);
    }
    CHECK_MSG(strstr(round, "hello world, 123!") != NULL, "pieces give '%s'", round);
    kvl_ctx_params p;
    kvl_ctx_params_default(&p);
    p.n_ctx = 128, p.n_threads = 1;
    kvl_ctx *c = NULL;
    CHECK_MSG(kvl_ctx_create(m, &p, &c, err, sizeof err) == KVL_OK, "%s", err);
    kvl_seq *q = NULL;
    if (c) CHECK(kvl_seq_create(c, &q) == KVL_OK);
    float *lg = malloc(sizeof(float) * 512);
    if (q && lg && nt > 0) {
        CHECK(kvl_prefill(q, tok, (int)nt, lg, NULL) == KVL_OK);
        double sum = 0, sq = 0;
        int finite = 1;
        for (int i = 0; i < 512; i++) finite &= isfinite(lg[i]) != 0, sum += lg[i], sq += (double)lg[i] * lg[i];
        const double sd = sqrt(fmax(0, sq / 512 - (sum / 512) * (sum / 512)));
        CHECK(finite);
        CHECK_MSG(sd > 0.5 && sd < 2.0, "logits std %g", sd);
        printf("note: tiny %s%s: logits std %.3f over the vocabulary\n", kvl_type_name(t), tied ? " tied" : "", sd);
        int seen[512] = {0}, distinct = 0;
        for (int i = 0; i < 16; i++) {
            int best = 0;
            for (int v = 1; v < 512; v++)
                if (lg[v] > lg[best]) best = v;
            distinct += !seen[best]++;
            if (kvl_decode(q, best, lg) != KVL_OK) break;
        }
        /* tied: no bound (its greedy decoding may repeat, gguf_random.c says why) */
        if (!tied) CHECK_MSG(distinct >= 8, "%d distinct of 16 greedy tokens", distinct);
        printf("note: tiny %s%s: %d distinct of 16 greedy tokens\n", kvl_type_name(t), tied ? " tied" : "", distinct);
    }
    free(lg);
    kvl_seq_free(q);
    kvl_ctx_free(c);
    kvl_model_free(m);
    remove(path);
}

int main(void) {
    char dir[] = "/tmp/kvl-gguf-random-XXXXXX";
    if (!mkdtemp(dir)) {
        fprintf(stderr, "mkdtemp failed\n");
        return 1;
    }
    check_validate();
    check_determinism(dir);
    const int types[4] = {KVL_TYPE_Q8_0, KVL_TYPE_Q4_0, KVL_TYPE_Q4_1, KVL_TYPE_F16};
    for (int i = 0; i < 4; i++) check_model(dir, types[i], 0);
    check_model(dir, KVL_TYPE_Q8_0, 1);
    rmdir(dir);
    KVL_TEST_END();
}
