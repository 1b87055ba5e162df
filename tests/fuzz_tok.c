/* Fuzz: tokenize any bytes: no crash, count/cap contract, exact round trip, control tokens only from markup. */
/* Arbitrary bytes are tokenized with special-token parsing off, on and
 * limited to markup spans, on in-memory byte-level BPE (four pre-tokenizers)
 * and SentencePiece vocabularies (tests/tok_fixture.h; no model file).
 *
 * Input: byte 0 picks the vocabulary (bits 0-2) and the special mode
 * (bits 3-4: off, on, spans); with spans, bytes 1-4 place up to two markup
 * spans; the rest is the text. Every vocabulary has all 256 byte tokens (BPE)
 * or byte fallback (SPM), so every input must round-trip exactly, invalid
 * UTF-8 and special-token text included (render_special = parse mode; SPM
 * without the space prefix). Needs no model file. Build (not part of `make`):
 *   clang -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -g -O1 \
 *     -fsanitize=fuzzer,address,undefined -Iinclude -Isrc -Itests tests/fuzz_tok.c \
 *     src/model/tok.c src/model/chat.c src/model/gguf.c src/cpu/types.c src/util/err.c \
 *     src/util/utf8.c -o fuzz_tok -lpcre2-8 -lm
 * Seeds: tests/fuzz/corpus/fuzz_tok/. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tok_fixture.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int contains(const char *h, size_t n, const char *needle, size_t nn) {
    for (size_t i = 0; i + nn <= n; i++)
        if (!memcmp(h + i, needle, nn)) return 1;
    return 0;
}

enum { N_VOCAB = 6 };

/* Built on first use and kept for the process (harness state). */
static fx_tok g_fx[N_VOCAB];
static int g_ready;

static void setup(void) {
    static const fx_spec specs[N_VOCAB] = {
        {.pre = "smollm"}, {.pre = "llama-bpe"}, {.pre = "qwen2"}, {.pre = "gpt2"},
        {.spm = 1, .add_space_prefix = 0}, {.spm = 1, .add_space_prefix = 1},
    };
    for (int i = 0; i < N_VOCAB; i++)
        if (!fx_open(&g_fx[i], &specs[i])) abort();
    g_ready = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_ready) setup();
    if (size < 1) return 0;
    const fx_tok *f = &g_fx[(data[0] & 7) % N_VOCAB];
    const kvl_tok *t = f->t;
    int mode = (data[0] >> 3) & 3; /* 0 off, 1 on, 2-3 spans */
    size_t hdr = mode >= 2 ? 5 : 1;
    if (size < hdr) return 0;
    const char *text = (const char *)data + hdr;
    size_t len = size - hdr;

    kvl_tok_span sp[2];
    kvl_tok_enc_opts o = {.add_bos = 0, .markup = sp};
    if (mode == 0) {
        o.n_markup = 0;
    } else if (mode == 1) {
        sp[0] = (kvl_tok_span){0, len};
        o.n_markup = 1;
    } else {
        size_t at = 0;
        for (int k = 0; k < 2; k++) {
            size_t off = at + data[1 + 2 * k] % 32, l = data[2 + 2 * k] % 48;
            if (off > len) break;
            if (l > len - off) l = len - off;
            sp[o.n_markup++] = (kvl_tok_span){off, l};
            at = off + l;
        }
    }

    int64_t n = kvl_tok_encode_ex(t, text, len, &o, NULL, 0, NULL);
    if (n < 0) abort(); /* small inputs: no failure is legitimate */
    kvl_token *ids = malloc(((size_t)n + 1) * sizeof *ids);
    if (!ids) return 0;
    if (kvl_tok_encode_ex(t, text, len, &o, ids, n, NULL) != n) abort();
    int nv = kvl_tok_n_vocab(t);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= nv) abort();
    /* a short buffer: same count, same prefix */
    if (n > 1) {
        int64_t h = n / 2;
        kvl_token *part = malloc((size_t)h * sizeof *part);
        if (part) {
            if (kvl_tok_encode_ex(t, text, len, &o, part, h, NULL) != n || memcmp(part, ids, (size_t)h * sizeof *part))
                abort();
            free(part);
        }
    }
    /* the plain API agrees with the equivalent spans */
    if (mode < 2 && kvl_tok_encode(t, text, len, 0, mode, NULL, 0) != n) abort();

    /* detokenize, tracking each token's byte range: control tokens only inside
     * one markup span; the bytes come back (not for SPM's space prefix) */
    int render_special = mode != 0;
    int exact = f != &g_fx[5] && !(f == &g_fx[4] && contains(text, len, "\xE2\x96\x81", 3)); /* SPM: U+2581 reads as space */
    char *back = malloc(len * 4 + 64);
    if (!back) { free(ids); return 0; }
    size_t bl = 0;
    for (int64_t i = 0; i < n; i++) {
        char piece[64];
        int pl = kvl_tok_piece(t, ids[i], render_special, piece, sizeof piece);
        if (pl < 0 || pl > (int)sizeof piece) abort();
        if (fx_is_ctl(t, ids[i])) {
            if (!render_special) abort(); /* no control token without parsing */
            if (exact) {
                int inside = 0;
                for (int k = 0; k < o.n_markup; k++)
                    inside |= bl >= sp[k].off && bl + (size_t)pl <= sp[k].off + sp[k].len;
                if (!inside) abort();
            }
        }
        if (bl + (size_t)pl > len * 4 + 64) abort();
        memcpy(back + bl, piece, (size_t)pl);
        bl += (size_t)pl;
    }
    if (exact && (bl != len || memcmp(back, text, len))) abort();
    free(back);
    free(ids);
    return 0;
}
