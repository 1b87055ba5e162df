/* Chat templates. The GGUF's tokenizer.chat_template (Jinja) is not run:
 * it is recognized as one of the formats kvlite renders natively and the
 * format is reproduced byte for byte (checked against transformers'
 * apply_chat_template in tests/data/tok_chat.txt):
 *  - ChatML ("<|im_start|>role\ncontent<|im_end|>\n"), the default, with the
 *    default system message some templates (SmolLM2, Qwen2.5) write as a
 *    constant, inserted when the conversation does not start with one;
 *  - Llama-3 (BOS, "<|start_header_id|>role<|end_header_id|>\n\n", content
 *    trimmed as Jinja's |trim does, "<|eot_id|>").
 * Immutable after creation; rendering only reads it. */
#include "model/chat.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "util/utf8.h"

enum { CHAT_CHATML = 0, CHAT_LLAMA3 = 1 };

struct kvl_chat {
    int fmt;
    char *sys; /* ChatML default system message, or NULL */
};

static const char *mem_find(const char *h, size_t hn, const char *needle) {
    size_t nn = strlen(needle);
    if (nn > hn) return NULL;
    for (size_t i = 0; i + nn <= hn; i++)
        if (h[i] == needle[0] && memcmp(h + i, needle, nn) == 0) return h + i;
    return NULL;
}

/* Default ChatML system message written as a constant inside the template,
 * e.g. '<|im_start|>system\nYou are ...<|im_end|>\n' (SmolLM2, Qwen2.5). The
 * text must lie inside one string literal: it may not contain the literal's
 * quote character (which rules out concatenations such as
 * '<|im_start|>system\n' + messages[0]['content'] + ...). Jinja escapes
 * (\n, \t, \', \", \\) are decoded. Returns a malloc'd string or NULL. */
static char *chatml_default_system(const char *tp, size_t tn, bool *oom) {
    static const char tag[] = "<|im_start|>system";
    const char *p = tp, *end = tp + tn;
    while ((p = mem_find(p, (size_t)(end - p), tag)) != NULL) {
        const char *q = p + strlen(tag);
        p = q;
        size_t nl;
        if (q < end && *q == '\n') nl = 1;
        else if (end - q >= 2 && q[0] == '\\' && q[1] == 'n') nl = 2;
        else continue;
        /* the quote that opened this literal: nearest quote before the tag */
        const char *b = p - strlen(tag);
        char quote = 0;
        while (b > tp) {
            b--;
            if (*b == '\'' || *b == '"') { quote = *b; break; }
        }
        if (!quote) continue;
        const char *c = q + nl;
        const char *e = mem_find(c, (size_t)(end - c), "<|im_end|>");
        if (!e || e <= c) continue;
        bool ok = true;
        for (const char *x = c; x < e; x++) {
            if (*x == '\\' && x + 1 < e) { x++; continue; }
            if (*x == quote) { ok = false; break; }
        }
        if (!ok) continue;
        char *r = malloc((size_t)(e - c) + 1);
        if (!r) { *oom = true; return NULL; }
        size_t k = 0;
        for (const char *x = c; x < e; x++) {
            if (*x == '\\' && x + 1 < e) {
                x++;
                r[k++] = *x == 'n' ? '\n' : *x == 't' ? '\t' : *x == 'r' ? '\r' : *x;
            } else {
                r[k++] = *x;
            }
        }
        r[k] = 0;
        return r;
    }
    return NULL;
}

void kvl_chat_free(kvl_chat *c) {
    if (!c) return;
    free(c->sys);
    free(c);
}

kvl_status kvl_chat_create(const kvl_gguf *g, kvl_chat **out, kvl_err *err) {
    if (!out) return kvl_err_set(err, KVL_ERR_ARG, "kvl_chat_create: out is NULL");
    *out = NULL;
    kvl_chat *c = calloc(1, sizeof *c);
    if (!c) return kvl_err_set(err, KVL_ERR_NOMEM, "chat template: out of memory");
    c->fmt = CHAT_CHATML;
    const char *tp = NULL;
    size_t tn = 0;
    if (g && kvl_gguf_get_str(g, "tokenizer.chat_template", &tp, &tn)) {
        if (mem_find(tp, tn, "<|im_start|>")) {
            bool oom = false;
            c->sys = chatml_default_system(tp, tn, &oom);
            if (oom) {
                kvl_chat_free(c);
                return kvl_err_set(err, KVL_ERR_NOMEM,
                                   "chat template: out of memory copying the default system message");
            }
        } else if (mem_find(tp, tn, "<|start_header_id|>")) {
            c->fmt = CHAT_LLAMA3;
        }
    }
    *out = c;
    return KVL_OK;
}

typedef struct out_buf {
    char *p;
    size_t cap, n;
} out_buf;

static void ob_put(out_buf *o, const char *s, size_t l) {
    for (size_t i = 0; i < l; i++)
        if (o->n + i < o->cap) o->p[o->n + i] = s[i];
    o->n += l;
}
static void ob_str(out_buf *o, const char *s) { ob_put(o, s, strlen(s)); }

/* Python str.isspace() for a code point (what Jinja's |trim strips). */
static bool py_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* Jinja |trim: strip leading/trailing whitespace (on valid UTF-8 characters). */
static void trim(const char **s, size_t *n) {
    const uint8_t *p = (const uint8_t *)*s;
    size_t a = 0, b = *n;
    while (a < b) {
        size_t l = kvl_utf8_len(p + a, b - a);
        if (!l || !py_space(kvl_utf8_decode(p + a, l))) break;
        a += l;
    }
    while (b > a) {
        size_t st = b - 1;
        while (st > a && (p[st] & 0xC0) == 0x80 && b - st < 4) st--;
        size_t l = kvl_utf8_len(p + st, b - st);
        if (l != b - st || !py_space(kvl_utf8_decode(p + st, l))) break;
        b = st;
    }
    *s += a;
    *n = b - a;
}

int64_t kvl_chat_render(const kvl_tok *t, const kvl_chat_msg *msgs, int n_msgs, int add_assistant, char *out,
                        size_t cap) {
    const kvl_chat *c = kvl_tok_chat(t);
    if (!c || n_msgs < 0 || (n_msgs > 0 && !msgs) || (!out && cap > 0)) return -(int64_t)KVL_ERR_ARG;
    for (int i = 0; i < n_msgs; i++)
        if (!msgs[i].role) return -(int64_t)KVL_ERR_ARG;
    out_buf o = {out, cap, 0};
    if (c->fmt == CHAT_LLAMA3) {
        for (int i = 0; i < n_msgs; i++) {
            if (i == 0) {
                size_t bl = 0;
                const char *bos = kvl_tok_text(t, kvl_tok_bos(t), &bl);
                if (bos) ob_put(&o, bos, bl);
                else ob_str(&o, "<|begin_of_text|>");
            }
            const char *c = msgs[i].content ? msgs[i].content : "";
            size_t cl = strlen(c);
            trim(&c, &cl);
            ob_str(&o, "<|start_header_id|>");
            ob_str(&o, msgs[i].role);
            ob_str(&o, "<|end_header_id|>\n\n");
            ob_put(&o, c, cl);
            ob_str(&o, "<|eot_id|>");
        }
        if (add_assistant) ob_str(&o, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    } else {
        for (int i = 0; i < n_msgs; i++) {
            if (i == 0 && c->sys && strcmp(msgs[0].role, "system") != 0) {
                ob_str(&o, "<|im_start|>system\n");
                ob_str(&o, c->sys);
                ob_str(&o, "<|im_end|>\n");
            }
            ob_str(&o, "<|im_start|>");
            ob_str(&o, msgs[i].role);
            ob_str(&o, "\n");
            ob_str(&o, msgs[i].content ? msgs[i].content : "");
            ob_str(&o, "<|im_end|>\n");
        }
        if (add_assistant) ob_str(&o, "<|im_start|>assistant\n");
    }
    if (o.n < cap) out[o.n] = 0;
    return (int64_t)o.n;
}
