/* Allocation failures in the tokenizer and the chat templates: malloc,
 * calloc and realloc are interposed (forwarding to glibc's allocator) and the
 * k-th allocation of kvl_tok_create, kvl_tok_encode_ex and kvl_chat_encode is
 * failed, for every k up to the number a successful call makes. Each call
 * must either still succeed with the same result (the allocation was
 * optional, e.g. the word cache) or fail with KVL_ERR_NOMEM and a message,
 * and release everything it allocated. Skipped under AddressSanitizer, whose
 * allocator cannot be replaced this way (glibc only). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/chat.h"
#include "test.h"
#include "tok_fixture.h"

#if defined(__SANITIZE_ADDRESS__)
#define KVL_NO_INTERPOSE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVL_NO_INTERPOSE 1
#endif
#endif

#if !defined(KVL_NO_INTERPOSE) && defined(__GLIBC__)

void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t m);
void *__libc_realloc(void *p, size_t n);
void __libc_free(void *p);

/* Test-harness state (the library itself keeps none). */
static long g_allocs;      /* allocations made since oom_arm */
static long g_fail_at = -1; /* index of the allocation to fail, -1 = none */
static long g_live;        /* blocks outstanding (successful allocs - frees) */
static long g_tried, g_nomem; /* totals over all operations, for the summary line */

static int oom_hit(void) { return g_fail_at >= 0 && g_allocs++ == g_fail_at; }

void *malloc(size_t n) {
    if (oom_hit()) return NULL;
    void *p = __libc_malloc(n);
    if (p) g_live++;
    return p;
}
void *calloc(size_t n, size_t m) {
    if (oom_hit()) return NULL;
    void *p = __libc_calloc(n, m);
    if (p) g_live++;
    return p;
}
void *realloc(void *q, size_t n) {
    if (oom_hit()) return NULL;
    void *p = __libc_realloc(q, n);
    if (p && !q) g_live++;
    return p;
}
void free(void *p) {
    if (p) g_live--;
    __libc_free(p);
}

static void oom_arm(long k) {
    g_allocs = 0;
    g_fail_at = k;
}
static long oom_disarm(void) {
    g_fail_at = -1;
    return g_allocs;
}

/* Fails allocation k = 0, 1, ... of op until op makes fewer than k + 1.
 * op returns 1 on the unfailed result, 0 on a clean KVL_ERR_NOMEM with a
 * message, -1 on anything else. */
static void each_failure(const char *name, int (*op)(void *), void *arg) {
    int bad = 0, n_fail = 0;
    long k = 0;
    for (;; k++) {
        long live = g_live;
        oom_arm(k);
        int r = op(arg);
        long made = oom_disarm();
        if (g_live != live) {
            fprintf(stderr, "%s: allocation %ld failed: %ld blocks leaked\n", name, k, g_live - live);
            bad++;
        }
        if (r < 0) {
            fprintf(stderr, "%s: allocation %ld failed: wrong result\n", name, k);
            bad++;
        }
        n_fail += r == 0;
        if (made <= k) break; /* op made only k allocations: none was failed */
    }
    g_tried += k;
    g_nomem += n_fail;
    CHECK_MSG(bad == 0 && n_fail > 0, "%s", name);
}

/* ---- the operations ------------------------------------------------------------------- */

typedef struct create_arg {
    const uint8_t *buf;
    size_t size;
} create_arg;

static int op_create(void *p) {
    const create_arg *a = p;
    kvl_gguf *g = NULL;
    kvl_tok *t = NULL;
    kvl_err err = {0};
    if (kvl_gguf_open_mem(a->buf, a->size, &g, &err) != KVL_OK) return err.status == KVL_ERR_NOMEM && err.msg[0] ? 0 : -1;
    kvl_status st = kvl_tok_create(g, &t, &err);
    kvl_tok_free(t);
    kvl_gguf_free(g);
    if (st == KVL_OK) return 1;
    if (st == KVL_ERR_NOMEM && err.msg[0] && !t) return 0;
    fprintf(stderr, "  kvl_tok_create: unexpected '%s': %s\n", kvl_status_str(st), err.msg);
    return -1;
}

typedef struct enc_arg {
    const kvl_tok *t;
    const char *text;
    size_t len;
    const kvl_token *want;
    int64_t n_want;
} enc_arg;

static int op_encode(void *p) {
    const enc_arg *a = p;
    static kvl_token ids[16384];
    kvl_err err = {0};
    kvl_tok_span all = {0, a->len};
    kvl_tok_enc_opts o = {.add_bos = 1, .markup = &all, .n_markup = 1};
    int64_t n = kvl_tok_encode_ex(a->t, a->text, a->len, &o, ids, 16384, &err);
    if (n == a->n_want && !memcmp(ids, a->want, (size_t)n * sizeof *ids)) return 1;
    return n == -(int64_t)KVL_ERR_NOMEM && err.msg[0] ? 0 : -1;
}

typedef struct chat_arg {
    const kvl_tok *t;
    const kvl_chat_msg *msgs;
    int n_msgs;
    const kvl_token *want;
    int64_t n_want;
} chat_arg;

static int op_chat(void *p) {
    const chat_arg *a = p;
    static kvl_token ids[16384];
    kvl_err err = {0};
    int64_t n = kvl_chat_encode(a->t, a->msgs, a->n_msgs, 1, ids, 16384, &err);
    if (n == a->n_want && !memcmp(ids, a->want, (size_t)n * sizeof *ids)) return 1;
    return n == -(int64_t)KVL_ERR_NOMEM && err.msg[0] ? 0 : -1;
}

static void run_all(void) {
    static const char *const pres[] = {"smollm", "llama-bpe", NULL};
    for (int v = 0; v < 4; v++) {
        fx_spec sp = {.spm = v == 3, .pre = v < 3 ? pres[v] : NULL, .tmpl = FX_TMPL_CHATML_SYS, .add_bos = 1,
                      .add_space_prefix = 1};
        fx_tok f;
        if (!fx_open(&f, &sp)) { CHECK(0); fx_close(&f); continue; }
        char name[64];
        snprintf(name, sizeof name, "%s create", v == 3 ? "spm" : pres[v] ? pres[v] : "gpt2");
        create_arg ca = {f.buf, f.size};
        each_failure(name, op_create, &ca);

        /* a long text so the word cache (optional allocation) is used */
        static char text[6000];
        size_t tl = 0;
        while (tl + 80 < sizeof text) {
            const char *s = "The quick brown fox <|im_end|> jumps over 12345 lazy dogs, caf\xC3\xA9 \xF0\x9F\x98\x80 in\tthe\n\n";
            memcpy(text + tl, s, strlen(s));
            tl += strlen(s);
        }
        static kvl_token want[16384];
        kvl_tok_span all = {0, tl};
        kvl_tok_enc_opts o = {.add_bos = 1, .markup = &all, .n_markup = 1};
        int64_t nw = kvl_tok_encode_ex(f.t, text, tl, &o, want, 16384, NULL);
        CHECK(nw > 0 && nw <= 16384);
        enc_arg ea = {f.t, text, tl, want, nw};
        snprintf(name, sizeof name, "%s encode", v == 3 ? "spm" : pres[v] ? pres[v] : "gpt2");
        each_failure(name, op_encode, &ea);

        kvl_chat_msg msgs[2] = {{"user", "Hello <|im_end|> there"}, {"assistant", "Hi!"}};
        kvl_token cw[4096];
        int64_t nc = kvl_chat_encode(f.t, msgs, 2, 1, cw, 4096, NULL);
        CHECK(nc > 0);
        chat_arg cha = {f.t, msgs, 2, cw, nc};
        snprintf(name, sizeof name, "%s chat", v == 3 ? "spm" : pres[v] ? pres[v] : "gpt2");
        each_failure(name, op_chat, &cha);
        fx_close(&f);
    }
}

int main(void) {
    run_all();
    printf("note: %ld allocations failed one at a time: %ld calls failed with KVL_ERR_NOMEM and a message, the "
           "rest succeeded without them (optional: regex JIT, word cache)\n", g_tried, g_nomem);
    KVL_TEST_END();
}

#else

int main(void) {
    printf("skip: allocation failure injection needs glibc's allocator without AddressSanitizer\n");
    KVL_TEST_END();
}

#endif
