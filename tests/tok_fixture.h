/* In-memory tokenizer vocabularies for tests and fuzz targets that must not
 * depend on a model file: a byte-level BPE vocabulary (all 256 byte tokens,
 * about 50 merges, the ChatML and Llama-3 control tokens, a prefix of one of
 * them, one user-defined token) and a SentencePiece one (byte fallback, a few
 * scored pieces, the same special tokens). fx_open builds the GGUF bytes and
 * the tokenizer; fx_close frees both. */
#ifndef KVL_TESTS_TOK_FIXTURE_H
#define KVL_TESTS_TOK_FIXTURE_H

#include <stdio.h>

#include "gguf_writer.h"
#include "model/gguf.h"
#include "model/tok.h"

typedef struct fx_tok {
    uint8_t *buf; /* the GGUF bytes */
    size_t size;
    kvl_gguf *g;
    kvl_tok *t;
} fx_tok;

typedef struct fx_spec {
    int spm;              /* 0 = byte-level BPE, 1 = SentencePiece */
    const char *pre;      /* BPE: tokenizer.ggml.pre, or NULL */
    const char *tmpl;     /* tokenizer.chat_template, or NULL */
    int add_bos;          /* tokenizer.ggml.add_bos_token */
    int add_space_prefix; /* SPM: tokenizer.ggml.add_space_prefix */
} fx_spec;

/* Control tokens of both fixtures (ids follow the vocabulary's normal part);
 * FX_BOS_TEXT is the BOS token, the last entry a user-defined token. */
#define FX_BOS_TEXT "<|begin_of_text|>"
static const char *const FX_SPECIALS[] = {FX_BOS_TEXT, "<|end_of_text|>", "<|im_start|>", "<|im_end|>",
                                          "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
                                          "<|endoftext|>", "<|eot", "<s>", "</s>", "<tool>"};
#define FX_N_SPECIALS (sizeof FX_SPECIALS / sizeof FX_SPECIALS[0])

/* GPT-2 bytes_to_unicode of byte b as UTF-8 into u (3 bytes of room). */
static inline const char *fx_gpt2_char(int b, char *u) {
    int cp = b;
    if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
        int extra = 0;
        for (int c = 0; c < b; c++)
            if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255))) extra++;
        cp = 256 + extra;
    }
    if (cp < 0x80) { u[0] = (char)cp; u[1] = 0; }
    else { u[0] = (char)(0xC0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3F)); u[2] = 0; }
    return u;
}

static inline int fx_open(fx_tok *f, const fx_spec *sp) {
    enum { MAXT = 400 };
    static const char *const merges_bpe[][2] = {
        {"\xC4\xA0", "t"}, {"h", "e"}, {"\xC4\xA0t", "he"}, {"i", "n"}, {"e", "r"}, {"a", "n"}, {"o", "n"},
        {"r", "e"}, {"\xC4\xA0", "a"}, {"\xC4\xA0", "s"}, {"e", "n"}, {"a", "t"}, {"o", "r"}, {"\xC4\xA0", "w"},
        {"e", "s"}, {"\xC4\xA0", "o"}, {"i", "s"}, {"\xC4\xA0", "c"}, {"i", "t"}, {"a", "l"}, {"a", "r"},
        {"\xC4\xA0", "f"}, {"o", "u"}, {"e", "d"}, {"l", "e"}, {"\xC4\xA0", "in"}, {"n", "d"}, {"in", "g"},
        {"\xC4\xA0", "h"}, {"\xC4\xA0o", "f"}, {"l", "l"}, {"\xC4\xA0" "a", "n"}, {"\xC4\xA0" "an", "d"}, {"o", "m"},
        {"\xC4\x8A", "\xC4\x8A"}, {"\xC4\xA0", "\xC4\xA0"}, {"1", "2"}, {"12", "3"}, {"'", "s"}, {"<", "|"},
        {"|", ">"}, {"s", "y"}, {"sy", "s"}, {"u", "s"}, {"us", "er"}, {"\xC3\x83", "\xC2\xA9"}};
    static const struct { const char *s; float score; } pieces_spm[] = {
        {"\xE2\x96\x81", -10}, {"\xE2\x96\x81t", -3}, {"he", -4}, {"\xE2\x96\x81the", -1}, {"in", -5},
        {"er", -5}, {"an", -5}, {"on", -6}, {"\xE2\x96\x81" "a", -4}, {"ll", -6}, {"ing", -2},
        {"\xE2\x96\x81\xE2\x96\x81", -7}, {"us", -6}, {"user", -2}, {"<|", -3}, {"|>", -3}};
    char *tok[MAXT];
    float sc[MAXT];
    int32_t ty[MAXT];
    int n = 0;
    char *mg[64];
    int nm = 0;
    memset(f, 0, sizeof *f);
    if (!sp->spm) {
        for (int b = 0; b < 256; b++) {
            char u[4];
            tok[n] = strdup(fx_gpt2_char(b, u)), sc[n] = 0, ty[n++] = 1;
        }
        for (size_t i = 0; i < sizeof merges_bpe / sizeof merges_bpe[0]; i++) {
            size_t la = strlen(merges_bpe[i][0]), lb = strlen(merges_bpe[i][1]);
            char *cat = malloc(la + lb + 1), *m = malloc(la + lb + 2);
            if (!cat || !m) abort();
            memcpy(cat, merges_bpe[i][0], la);
            memcpy(cat + la, merges_bpe[i][1], lb + 1);
            snprintf(m, la + lb + 2, "%s %s", merges_bpe[i][0], merges_bpe[i][1]);
            tok[n] = cat, sc[n] = 0, ty[n++] = 1;
            mg[nm++] = m;
        }
    } else {
        tok[n] = strdup("<unk>"), sc[n] = 0, ty[n++] = 2;
        for (int b = 0; b < 256; b++) {
            char s[8];
            snprintf(s, sizeof s, "<0x%02X>", b);
            tok[n] = strdup(s), sc[n] = 0, ty[n++] = 6;
        }
        for (int c = 'a'; c <= 'z'; c++) {
            char s[2] = {(char)c, 0};
            tok[n] = strdup(s), sc[n] = -20, ty[n++] = 1;
        }
        for (size_t i = 0; i < sizeof pieces_spm / sizeof pieces_spm[0]; i++)
            tok[n] = strdup(pieces_spm[i].s), sc[n] = pieces_spm[i].score, ty[n++] = 1;
    }
    int bos = n;
    for (size_t i = 0; i < FX_N_SPECIALS; i++)
        tok[n] = strdup(FX_SPECIALS[i]), sc[n] = 0, ty[n++] = i + 1 < FX_N_SPECIALS ? 3 : 4;
    gw w = {0};
    kv_str(&w, "tokenizer.ggml.model", sp->spm ? "llama" : "gpt2");
    if (!sp->spm && sp->pre) kv_str(&w, "tokenizer.ggml.pre", sp->pre);
    kv_arr_str(&w, "tokenizer.ggml.tokens", tok, (size_t)n);
    kv_arr_i32(&w, "tokenizer.ggml.token_type", ty, (size_t)n);
    if (sp->spm) kv_arr_f32(&w, "tokenizer.ggml.scores", sc, (size_t)n);
    else kv_arr_str(&w, "tokenizer.ggml.merges", mg, (size_t)nm);
    kv_u32(&w, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    kv_u32(&w, "tokenizer.ggml.eos_token_id", (uint32_t)bos + 1);
    kv_bool(&w, "tokenizer.ggml.add_bos_token", sp->add_bos);
    if (sp->spm) kv_bool(&w, "tokenizer.ggml.add_space_prefix", sp->add_space_prefix);
    if (sp->tmpl) kv_str(&w, "tokenizer.chat_template", sp->tmpl);
    for (int i = 0; i < n; i++) free(tok[i]);
    for (int i = 0; i < nm; i++) free(mg[i]);
    f->buf = gw_finish(&w, &f->size);
    kvl_err err = {0};
    if (kvl_gguf_open_mem(f->buf, f->size, &f->g, &err) != KVL_OK || kvl_tok_create(f->g, &f->t, &err) != KVL_OK) {
        fprintf(stderr, "fx_open: %s\n", err.msg);
        return 0;
    }
    return 1;
}

static inline void fx_close(fx_tok *f) {
    kvl_tok_free(f->t);
    kvl_gguf_free(f->g);
    free(f->buf);
    memset(f, 0, sizeof *f);
}

/* Control (or unknown/unused) token: renders only with render_special. */
static inline int fx_is_ctl(const kvl_tok *t, kvl_token id) {
    char b[64];
    return kvl_tok_piece(t, id, 0, b, sizeof b) == 0 && kvl_tok_piece(t, id, 1, b, sizeof b) > 0;
}

/* Chat templates recognized by chat.c: ChatML without and with a default
 * system message, Llama-3. */
#define FX_TMPL_CHATML "{% for m in messages %}<|im_start|>{{m.role}}\n{{m.content}}<|im_end|>\n{% endfor %}"
#define FX_TMPL_CHATML_SYS                                                                                   \
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a <|im_start|> test.<|im_end|>\\n' " \
    "}}{% endif %}" FX_TMPL_CHATML
#define FX_TMPL_LLAMA3 "{{ bos_token }}<|start_header_id|>{{ message['role'] }}<|end_header_id|>"

#endif
