/* Fuzz: hostile chat roles/contents through kvl_chat_tokenize yield exactly the template's own control tokens. */
/* The input is split into messages; each is rendered with ChatML (with and
 * without a default system message) and Llama-3 templates on in-memory
 * byte-level BPE and SentencePiece vocabularies (tests/tok_fixture.h; no
 * model file) and tokenized with kvl_chat_encode (what kvl_chat_tokenize
 * calls). Checks: the number of control tokens equals that of the same
 * conversation with empty contents and plain roles (the template's own);
 * the ids detokenize to the rendering byte for byte (plus the BOS the model
 * adds); the count/cap contract holds.
 *
 * Input: byte 0 picks the vocabulary and template (bits 0-2) and
 * add_assistant (bit 3); the rest is split at NUL bytes into at most 8
 * messages, whose first byte picks the role: system, user, assistant, or
 * (value 3 mod 4) the message text itself used as the role. Build (not part
 * of `make`):
 *   clang -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -g -O1 \
 *     -fsanitize=fuzzer,address,undefined -Iinclude -Isrc -Itests tests/fuzz_chat.c \
 *     src/model/tok.c src/model/chat.c src/model/gguf.c src/cpu/types.c src/util/err.c \
 *     src/util/utf8.c -o fuzz_chat -lpcre2-8 -lm
 * Seeds: tests/fuzz/corpus/fuzz_chat/. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/chat.h"
#include "tok_fixture.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { N_FX = 6, MAX_MSGS = 8 };

static fx_tok g_fx[N_FX]; /* harness state, built on first use */
static int g_ready;

static void setup(void) {
    static const fx_spec specs[N_FX] = {
        {.pre = "smollm", .tmpl = FX_TMPL_CHATML},
        {.pre = "smollm", .tmpl = FX_TMPL_CHATML_SYS, .add_bos = 1},
        {.pre = "llama-bpe", .tmpl = FX_TMPL_LLAMA3, .add_bos = 1},
        {.pre = "llama-bpe", .tmpl = FX_TMPL_LLAMA3},
        {.pre = "qwen2", .tmpl = FX_TMPL_CHATML_SYS},
        {.spm = 1, .tmpl = FX_TMPL_CHATML, .add_bos = 1, .add_space_prefix = 0},
    };
    for (int i = 0; i < N_FX; i++)
        if (!fx_open(&g_fx[i], &specs[i])) abort();
    g_ready = 1;
}

static int contains(const char *h, size_t n, const char *needle, size_t nn) {
    for (size_t i = 0; i + nn <= n; i++)
        if (!memcmp(h + i, needle, nn)) return 1;
    return 0;
}

static int64_t count_ctl(const kvl_tok *t, const kvl_token *ids, int64_t n) {
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++) c += fx_is_ctl(t, ids[i]);
    return c;
}

/* kvl_chat_encode into a malloc'd array (count in *n); aborts on error. */
static kvl_token *encode(const kvl_tok *t, const kvl_chat_msg *m, int nm, int add, int64_t *n) {
    *n = kvl_chat_encode(t, m, nm, add, NULL, 0, NULL);
    if (*n < 0) abort();
    kvl_token *ids = malloc(((size_t)*n + 1) * sizeof *ids);
    if (!ids) abort();
    if (kvl_chat_encode(t, m, nm, add, ids, *n, NULL) != *n) abort();
    return ids;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_ready) setup();
    if (size < 1) return 0;
    const fx_tok *f = &g_fx[(data[0] & 7) % N_FX];
    const kvl_tok *t = f->t;
    int add = (data[0] >> 3) & 1;

    /* split the rest at NULs: one NUL-terminated copy, messages point into it */
    char *buf = malloc(size);
    if (!buf) return 0;
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = 0;
    static const char *const roles[3] = {"system", "user", "assistant"};
    kvl_chat_msg msgs[MAX_MSGS], plain[MAX_MSGS];
    int nm = 0;
    for (char *p = buf; p < buf + size - 1 && nm < MAX_MSGS; p += strlen(p) + 1) {
        int kind = (uint8_t)p[0] % 4;
        const char *text = p[0] ? p + 1 : p;
        msgs[nm].role = kind < 3 ? roles[kind] : text;
        msgs[nm].content = text;
        /* same structure, nothing hostile: a hostile role "system" stays
         * "system" (the ChatML default system message depends on it) */
        plain[nm].role = kind < 3 ? roles[kind] : strcmp(text, "system") ? "x" : "system";
        plain[nm].content = "";
        nm++;
    }

    int64_t n, np;
    kvl_token *ids = encode(t, msgs, nm, add, &n);
    kvl_token *ref = encode(t, plain, nm, add, &np);
    if (count_ctl(t, ids, n) != count_ctl(t, ref, np)) abort(); /* content became control tokens */

    /* cap contract */
    if (n > 1) {
        int64_t h = n / 2;
        kvl_token *part = malloc((size_t)h * sizeof *part);
        if (part) {
            if (kvl_chat_encode(t, msgs, nm, add, part, h, NULL) != n || memcmp(part, ids, (size_t)h * sizeof *part))
                abort();
            free(part);
        }
    }

    /* the rendering comes back: [BOS text when the model adds one the
     * template does not start with] + rendering */
    int64_t rl = kvl_chat_render(t, msgs, nm, add, NULL, 0);
    if (rl < 0) abort();
    char *r = malloc((size_t)rl + 1);
    char *back = malloc((size_t)rl * 4 + 64);
    if (!r || !back) abort();
    if (kvl_chat_render(t, msgs, nm, add, r, (size_t)rl + 1) != rl) abort();
    size_t bl = 0;
    for (int64_t i = 0; i < n; i++) {
        char piece[64];
        int pl = kvl_tok_piece(t, ids[i], 1, piece, sizeof piece);
        if (pl < 0 || pl > (int)sizeof piece || bl + (size_t)pl > (size_t)rl * 4 + 64) abort();
        memcpy(back + bl, piece, (size_t)pl);
        bl += (size_t)pl;
    }
    const size_t bos_len = strlen(FX_BOS_TEXT);
    int template_bos = (size_t)rl >= bos_len && !memcmp(r, FX_BOS_TEXT, bos_len);
    size_t skip = kvl_tok_add_bos_default(t) && !template_bos ? bos_len : 0;
    if (skip && (n < 1 || ids[0] != kvl_tok_bos(t))) abort();
    int spm_space = f == &g_fx[5] && contains(r, (size_t)rl, "\xE2\x96\x81", 3); /* SPM: U+2581 reads as space */
    if (!spm_space && (bl != skip + (size_t)rl || memcmp(back + skip, r, (size_t)rl))) abort();

    free(r);
    free(back);
    free(ids);
    free(ref);
    free(buf);
    return 0;
}
