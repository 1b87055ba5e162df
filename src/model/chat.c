/* Chat templates. The GGUF's tokenizer.chat_template (Jinja) is not run:
 * it is recognized as one of the formats kvlite renders natively and the
 * format is reproduced byte for byte (checked against transformers'
 * apply_chat_template in tests/data/tok_chat.txt):
 *  - ChatML ("<|im_start|>role\ncontent<|im_end|>\n"), the default, with the
 *    default system message some templates (SmolLM2, Qwen2.5) write as a
 *    constant, inserted when the conversation does not start with one;
 *  - Llama-3 (BOS, "<|start_header_id|>role<|end_header_id|>\n\n", content
 *    trimmed as Jinja's |trim does, "<|eot_id|>").
 * The renderer tells template markup from caller text (roles, contents);
 * kvl_chat_encode tokenizes the rendering with control tokens matched only
 * in the markup, so caller text can never open or close a turn.
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

/* Output of a rendering: bytes (written while they fit in cap, counted
 * always) and, when sp is set, the spans of template markup, i.e. everything
 * but message roles and contents (adjacent markup pieces share one span). */
typedef struct out_buf {
    char *p;
    size_t cap, n;
    kvl_tok_span *sp; /* room for 2 * n_msgs + 4 spans, or NULL */
    int n_sp;
} out_buf;

static void ob_put(out_buf *o, const char *s, size_t l) {
    if (o->n < o->cap) memcpy(o->p + o->n, s, o->cap - o->n < l ? o->cap - o->n : l);
    o->n += l;
}

/* Template text: may produce control tokens. */
static void ob_markup(out_buf *o, const char *s, size_t l) {
    if (o->sp && l) {
        if (o->n_sp && o->sp[o->n_sp - 1].off + o->sp[o->n_sp - 1].len == o->n) o->sp[o->n_sp - 1].len += l;
        else o->sp[o->n_sp++] = (kvl_tok_span){o->n, l};
    }
    ob_put(o, s, l);
}
static void ob_mstr(out_buf *o, const char *s) { ob_markup(o, s, strlen(s)); }

/* Caller text (roles, contents): never control tokens. */
static void ob_text(out_buf *o, const char *s, size_t l) { ob_put(o, s, l); }

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

static kvl_status check_msgs(const kvl_chat *c, const kvl_chat_msg *msgs, int n_msgs) {
    if (!c || n_msgs < 0 || (n_msgs > 0 && !msgs)) return KVL_ERR_ARG;
    for (int i = 0; i < n_msgs; i++)
        if (!msgs[i].role) return KVL_ERR_ARG;
    return KVL_OK;
}

static void render(const kvl_chat *c, const kvl_tok *t, const kvl_chat_msg *msgs, int n_msgs, int add_assistant,
                   out_buf *o) {
    if (c->fmt == CHAT_LLAMA3) {
        for (int i = 0; i < n_msgs; i++) {
            if (i == 0) {
                size_t bl = 0;
                const char *bos = kvl_tok_text(t, kvl_tok_bos(t), &bl);
                if (bos) ob_markup(o, bos, bl);
                else ob_mstr(o, "<|begin_of_text|>");
            }
            const char *txt = msgs[i].content ? msgs[i].content : "";
            size_t tl = strlen(txt);
            trim(&txt, &tl);
            ob_mstr(o, "<|start_header_id|>");
            ob_text(o, msgs[i].role, strlen(msgs[i].role));
            ob_mstr(o, "<|end_header_id|>\n\n");
            ob_text(o, txt, tl);
            ob_mstr(o, "<|eot_id|>");
        }
        if (add_assistant) ob_mstr(o, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    } else {
        for (int i = 0; i < n_msgs; i++) {
            if (i == 0 && c->sys && strcmp(msgs[0].role, "system") != 0) {
                ob_mstr(o, "<|im_start|>system\n");
                ob_mstr(o, c->sys);
                ob_mstr(o, "<|im_end|>\n");
            }
            const char *txt = msgs[i].content ? msgs[i].content : "";
            ob_mstr(o, "<|im_start|>");
            ob_text(o, msgs[i].role, strlen(msgs[i].role));
            ob_mstr(o, "\n");
            ob_text(o, txt, strlen(txt));
            ob_mstr(o, "<|im_end|>\n");
        }
        if (add_assistant) ob_mstr(o, "<|im_start|>assistant\n");
    }
}

int64_t kvl_chat_render(const kvl_tok *t, const kvl_chat_msg *msgs, int n_msgs, int add_assistant, char *out,
                        size_t cap) {
    const kvl_chat *c = kvl_tok_chat(t);
    if (check_msgs(c, msgs, n_msgs) || (!out && cap > 0)) return -(int64_t)KVL_ERR_ARG;
    out_buf o = {.p = out, .cap = cap};
    render(c, t, msgs, n_msgs, add_assistant, &o);
    if (o.n < cap) out[o.n] = 0;
    return (int64_t)o.n;
}

int64_t kvl_chat_encode(const kvl_tok *t, const kvl_chat_msg *msgs, int n_msgs, int add_assistant, kvl_token *out,
                        int64_t cap, kvl_err *err) {
    const kvl_chat *c = kvl_tok_chat(t);
    if (check_msgs(c, msgs, n_msgs) || cap < 0 || (!out && cap > 0))
        return -(int64_t)kvl_err_set(err, KVL_ERR_ARG, "chat: invalid arguments (a message without role?)");
    out_buf o = {0};
    render(c, t, msgs, n_msgs, add_assistant, &o); /* length only */
    size_t len = o.n;
    if (len > KVL_TOKENIZE_MAX_BYTES)
        return -(int64_t)kvl_err_set(err, KVL_ERR_ARG,
                                     "chat: rendered conversation of %zu bytes exceeds the limit of %zu bytes", len,
                                     (size_t)KVL_TOKENIZE_MAX_BYTES);
    size_t n_sp = 2 * (size_t)n_msgs + 4;
    o = (out_buf){.p = malloc(len + 1), .cap = len + 1, .sp = malloc(n_sp * sizeof *o.sp)};
    if (!o.p || !o.sp) {
        free(o.p);
        free(o.sp);
        return -(int64_t)kvl_err_set(err, KVL_ERR_NOMEM, "chat: out of memory rendering %zu bytes", len);
    }
    render(c, t, msgs, n_msgs, add_assistant, &o);
    kvl_tok_enc_opts eo = {.add_bos = -1, .bos_once = 1, .markup = o.sp, .n_markup = o.n_sp};
    int64_t r = kvl_tok_encode_ex(t, o.p, o.n, &eo, out, cap, err);
    free(o.p);
    free(o.sp);
    return r;
}
