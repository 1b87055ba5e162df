/* Tokenizer built from GGUF tokenizer.* metadata.
 *
 * Two model kinds:
 *  - byte-level BPE (tokenizer.ggml.model == "gpt2"): text is split on special
 *    tokens, then into valid-UTF-8 runs, pre-tokenized with a PCRE2 regex
 *    sequence chosen from tokenizer.ggml.pre, each pre-token mapped to GPT-2
 *    byte-level symbols and merged by lowest merge rank (heap over a linked
 *    list of symbols, merges in a hash map keyed by (left id, right id)).
 *  - SentencePiece-style BPE (tokenizer.ggml.model == "llama"): spaces become
 *    U+2581, an optional space prefix is added, characters are merged by the
 *    highest score of the concatenated piece present in the vocab, characters
 *    not in the vocab become byte-fallback tokens "<0xAB>".
 * Also: token pieces (detokenization). The chat template (chat.c) is created
 * with the tokenizer and owned by it.
 *
 * The tokenizer is immutable after creation; encode/piece only read it and
 * allocate their own scratch, so concurrent calls are safe. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "model/tok.h"

#include <pcre2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/chat.h"
#include "util/hash.h"
#include "util/utf8.h"

enum { TT_UNDEFINED = 0, TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5,
       TT_BYTE = 6 };
enum { KIND_BPE = 1, KIND_SPM = 2 };

#define MAX_RE 3
/* Longest vocabulary entry accepted (real vocabularies stay under 1 KiB); keeps
 * piece lengths and symbol offsets far inside int range. */
#define TOK_MAX_TOKEN_BYTES (1u << 20)

typedef struct tok_entry {
    const char *s; /* into the GGUF map, not NUL-terminated */
    uint32_t len;
    int32_t type;
    float score;
} tok_entry;

typedef struct tok_merge {
    uint64_t key; /* (left id << 32 | right id) + 1; 0 = empty slot */
    int32_t rank, res;
} tok_merge;

struct kvl_tok {
    int kind;
    int n_vocab;
    tok_entry *v;
    int32_t *vh; /* vocab hash: id + 1, 0 = empty */
    uint32_t vh_mask;
    tok_merge *mh; /* merge hash, open addressing */
    uint32_t m_mask;
    int32_t byte_tok[256];   /* BPE: token of the byte's GPT-2 char; SPM: <0xAB> */
    int16_t cp2byte[324];    /* GPT-2 byte-level: code point -> byte, -1 if none */
    uint16_t byte2cp[256];
    int32_t *spec;           /* special-matchable ids, sorted by (first byte, len desc) */
    int n_spec;
    int spec_start[257];     /* spec index range per first byte */
    pcre2_code *re[MAX_RE];
    int n_re;
    bool ignore_merges;      /* emit a whole pre-token if it is in the vocab (llama3) */
    kvl_token bos, eos, eot, unk;
    int add_bos;
    bool add_space_prefix;
    kvl_chat *chat;          /* chat template (chat.c) */
};

/* ---- small helpers ---------------------------------------------------------- */

static uint32_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return (uint32_t)x;
}

static uint32_t pow2_at_least(uint64_t n) {
    uint32_t c = 16;
    while (c < n * 2) c <<= 1;
    return c;
}

/* Id of the token whose text is s[0..n), or -1. */
static int32_t vocab_find(const kvl_tok *t, const char *s, size_t n) {
    uint32_t i = (uint32_t)kvl_hash_fnv1a(s, n) & t->vh_mask;
    for (;;) {
        int32_t e = t->vh[i];
        if (!e) return -1;
        const tok_entry *te = &t->v[e - 1];
        if (te->len == n && memcmp(te->s, s, n) == 0) return e - 1;
        i = (i + 1) & t->vh_mask;
    }
}

/* ---- pre-tokenizer regexes -------------------------------------------------- */

static const char RE_DIGIT[] = "\\p{N}";
static const char RE_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/* Llama-3 / Qwen2: the HF patterns spell the contractions as (?i:'s|...); the
 * explicit ASCII classes avoid Unicode case folding (as llama.cpp does). */
static const char RE_LLAMA3[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char RE_QWEN2[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static bool str_is(const char *s, size_t n, const char *lit) {
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

static kvl_status compile_re(kvl_tok *t, const char *pat, kvl_err *err) {
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *c = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec,
                                  &eo, NULL);
    if (!c) {
        if (ec == PCRE2_ERROR_HEAP_FAILED)
            return kvl_err_set(err, KVL_ERR_NOMEM, "tokenizer: out of memory compiling the pre-tokenizer regex");
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return kvl_err_set(err, KVL_ERR_INTERNAL, "tokenizer regex: %s at %zu", (char *)msg, (size_t)eo);
    }
    (void)pcre2_jit_compile(c, PCRE2_JIT_COMPLETE); /* optional: falls back to the interpreter */
    t->re[t->n_re++] = c;
    return KVL_OK;
}

/* Choose the regex sequence from tokenizer.ggml.pre (names as llama.cpp). */
static kvl_status setup_pre(kvl_tok *t, const char *pre, size_t n, kvl_err *err) {
    kvl_status st = KVL_OK;
    if (str_is(pre, n, "smollm") || str_is(pre, n, "starcoder") || str_is(pre, n, "refact")) {
        /* split every \p{N} first (HF: Digits(individual_digits) + ByteLevel) */
        if ((st = compile_re(t, RE_DIGIT, err))) return st;
        return compile_re(t, RE_GPT2, err);
    }
    if (str_is(pre, n, "llama-bpe") || str_is(pre, n, "llama3") || str_is(pre, n, "llama-v3") ||
        str_is(pre, n, "smaug-bpe") || str_is(pre, n, "dbrx")) {
        t->ignore_merges = true;
        return compile_re(t, RE_LLAMA3, err);
    }
    if (str_is(pre, n, "qwen2") || str_is(pre, n, "deepseek-r1-qwen")) return compile_re(t, RE_QWEN2, err);
    /* "gpt2", "default", absent, and any pre-tokenizer we do not know: the
     * GPT-2 pattern (an unknown model may then tokenize differently from its
     * reference implementation; we deliberately do not print anything). */
    return compile_re(t, RE_GPT2, err);
}

/* ---- create / free ---------------------------------------------------------- */

void kvl_tok_free(kvl_tok *t) {
    if (!t) return;
    free(t->v);
    free(t->vh);
    free(t->mh);
    free(t->spec);
    for (int i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
    kvl_chat_free(t->chat);
    free(t);
}

static kvl_token meta_id(const kvl_gguf *g, const kvl_tok *t, const char *key) {
    int64_t v;
    if (!kvl_gguf_get_i64(g, key, &v) || v < 0 || v >= t->n_vocab) return -1;
    return (kvl_token)v;
}

static int cmp_spec(const kvl_tok *t, int32_t a, int32_t b) {
    const tok_entry *x = &t->v[a], *y = &t->v[b];
    uint8_t fx = (uint8_t)x->s[0], fy = (uint8_t)y->s[0];
    if (fx != fy) return fx < fy ? -1 : 1;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return a < b ? -1 : (a > b);
}

/* Merge sort of the special ids by (first byte, length desc, id). */
static void sort_spec(const kvl_tok *t, int32_t *a, int32_t *tmp, int n) {
    if (n < 2) return;
    int h = n / 2;
    sort_spec(t, a, tmp, h);
    sort_spec(t, a + h, tmp, n - h);
    int i = 0, j = h, k = 0;
    while (i < h && j < n) tmp[k++] = cmp_spec(t, a[i], a[j]) <= 0 ? a[i++] : a[j++];
    while (i < h) tmp[k++] = a[i++];
    while (j < n) tmp[k++] = a[j++];
    memcpy(a, tmp, (size_t)n * sizeof *a);
}

kvl_status kvl_tok_create(const kvl_gguf *g, kvl_tok **out, kvl_err *err) {
    if (!out) return kvl_err_set(err, KVL_ERR_ARG, "kvl_tok_create: out is NULL");
    *out = NULL;
    if (!g) return kvl_err_set(err, KVL_ERR_ARG, "kvl_tok_create: gguf is NULL");
    const char *ms;
    size_t mn;
    if (!kvl_gguf_get_str(g, "tokenizer.ggml.model", &ms, &mn))
        return kvl_err_set(err, KVL_ERR_FORMAT, "tokenizer: missing tokenizer.ggml.model");
    int kind = str_is(ms, mn, "gpt2") ? KIND_BPE : str_is(ms, mn, "llama") ? KIND_SPM : 0;
    if (!kind)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "tokenizer: model type '%.*s' not supported",
                           (int)(mn > 64 ? 64 : mn), ms);
    kvl_gguf_vtype et;
    uint64_t nv;
    if (!kvl_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &nv) || et != KVL_GGUF_STRING || nv == 0 ||
        nv > (1u << 30))
        return kvl_err_set(err, KVL_ERR_FORMAT, "tokenizer: missing or bad tokenizer.ggml.tokens");

    kvl_tok *t = calloc(1, sizeof *t);
    if (!t) return kvl_err_set(err, KVL_ERR_NOMEM, "tokenizer: out of memory");
    kvl_status st = KVL_OK;
    t->kind = kind;
    t->n_vocab = (int)nv;
    uint32_t cap = pow2_at_least(nv);
    t->v = calloc(nv, sizeof *t->v);
    t->vh = calloc(cap, sizeof *t->vh);
    if (!t->v || !t->vh) { st = kvl_err_set(err, KVL_ERR_NOMEM, "tokenizer: out of memory"); goto fail; }
    t->vh_mask = cap - 1;

    uint64_t ntt = 0, nsc = 0;
    bool has_tt = kvl_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &ntt) != 0;
    if (has_tt && ntt != nv) {
        st = kvl_err_set(err, KVL_ERR_FORMAT, "tokenizer: token_type has %llu entries, tokens %llu",
                         (unsigned long long)ntt, (unsigned long long)nv);
        goto fail;
    }
    bool has_sc = kvl_gguf_get_arr(g, "tokenizer.ggml.scores", &et, &nsc) != 0 && nsc == nv;
    for (uint64_t i = 0; i < nv; i++) {
        tok_entry *e = &t->v[i];
        size_t l;
        if (!kvl_gguf_arr_str(g, "tokenizer.ggml.tokens", i, &e->s, &l)) {
            st = kvl_err_set(err, KVL_ERR_FORMAT, "tokenizer: bad token %llu", (unsigned long long)i);
            goto fail;
        }
        if (l > TOK_MAX_TOKEN_BYTES) {
            st = kvl_err_set(err, KVL_ERR_FORMAT, "tokenizer: token %llu is %zu bytes long (limit %u)",
                             (unsigned long long)i, l, TOK_MAX_TOKEN_BYTES);
            goto fail;
        }
        e->len = (uint32_t)l;
        int64_t ty = TT_NORMAL;
        if (has_tt && !kvl_gguf_arr_i64(g, "tokenizer.ggml.token_type", i, &ty)) {
            st = kvl_err_set(err, KVL_ERR_FORMAT, "tokenizer: bad token_type array");
            goto fail;
        }
        e->type = (ty >= 0 && ty <= 6) ? (int32_t)ty : TT_NORMAL;
        double sc = 0;
        if (has_sc) kvl_gguf_arr_f64(g, "tokenizer.ggml.scores", i, &sc);
        e->score = (float)sc;
        /* first occurrence wins for duplicate strings */
        if (vocab_find(t, e->s, l) < 0) {
            uint32_t h = (uint32_t)kvl_hash_fnv1a(e->s, l) & t->vh_mask;
            while (t->vh[h]) h = (h + 1) & t->vh_mask;
            t->vh[h] = (int32_t)i + 1;
        }
    }

    t->bos = meta_id(g, t, "tokenizer.ggml.bos_token_id");
    t->eos = meta_id(g, t, "tokenizer.ggml.eos_token_id");
    t->unk = meta_id(g, t, "tokenizer.ggml.unknown_token_id");
    t->eot = meta_id(g, t, "tokenizer.ggml.eot_token_id");
    if (t->eot < 0) {
        static const char *const names[] = {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>"};
        for (size_t i = 0; i < sizeof names / sizeof names[0] && t->eot < 0; i++)
            t->eot = vocab_find(t, names[i], strlen(names[i]));
    }
    int b;
    t->add_bos = kind == KIND_SPM;
    if (kvl_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b)) t->add_bos = b != 0;
    t->add_space_prefix = kind == KIND_SPM;
    if (kvl_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &b)) t->add_space_prefix = b != 0;

    for (int i = 0; i < 256; i++) t->byte_tok[i] = -1;
    if (kind == KIND_BPE) {
        /* GPT-2 bytes_to_unicode: printable bytes map to themselves, the rest
         * to 256, 257, ... in byte order. */
        for (int i = 0; i < 324; i++) t->cp2byte[i] = -1;
        int extra = 0;
        for (int c = 0; c < 256; c++) {
            bool keep = (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255);
            uint16_t cp = keep ? (uint16_t)c : (uint16_t)(256 + extra++);
            t->byte2cp[c] = cp;
            t->cp2byte[cp] = (int16_t)c;
            char u[4];
            t->byte_tok[c] = vocab_find(t, u, kvl_utf8_encode(cp, u));
        }
        const char *pre = "";
        size_t pn = 0;
        kvl_gguf_get_str(g, "tokenizer.ggml.pre", &pre, &pn);
        if ((st = setup_pre(t, pre, pn, err))) goto fail;

        uint64_t nm = 0;
        if (kvl_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &nm) && et == KVL_GGUF_STRING && nm > 0) {
            if (nm > (1u << 30)) { st = kvl_err_set(err, KVL_ERR_FORMAT, "tokenizer: too many merges"); goto fail; }
            uint32_t mc = pow2_at_least(nm);
            t->mh = calloc(mc, sizeof *t->mh);
            if (!t->mh) { st = kvl_err_set(err, KVL_ERR_NOMEM, "tokenizer: out of memory"); goto fail; }
            t->m_mask = mc - 1;
            char *cat = NULL;
            size_t catcap = 0;
            for (uint64_t r = 0; r < nm; r++) {
                const char *s;
                size_t l;
                if (!kvl_gguf_arr_str(g, "tokenizer.ggml.merges", r, &s, &l)) continue;
                const char *sp = l > 1 ? memchr(s + 1, ' ', l - 1) : NULL;
                if (!sp) continue;
                size_t la = (size_t)(sp - s), lb = l - la - 1;
                int32_t a = vocab_find(t, s, la), bb = vocab_find(t, sp + 1, lb);
                if (a < 0 || bb < 0) continue;
                if (la + lb > catcap) {
                    catcap = (la + lb) * 2 + 64;
                    char *nc = realloc(cat, catcap);
                    if (!nc) { free(cat); st = kvl_err_set(err, KVL_ERR_NOMEM, "tokenizer: out of memory"); goto fail; }
                    cat = nc;
                }
                memcpy(cat, s, la);
                memcpy(cat + la, sp + 1, lb);
                int32_t res = vocab_find(t, cat, la + lb);
                if (res < 0) continue;
                uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)bb) + 1;
                uint32_t h = hash_u64(key) & t->m_mask;
                while (t->mh[h].key && t->mh[h].key != key) h = (h + 1) & t->m_mask;
                if (t->mh[h].key) continue; /* lower rank already there */
                t->mh[h] = (tok_merge){key, (int32_t)r, res};
            }
            free(cat);
        }
    } else {
        for (int i = 0; i < t->n_vocab; i++) {
            const tok_entry *e = &t->v[i];
            unsigned v;
            char tail;
            if (e->len == 6 && memcmp(e->s, "<0x", 3) == 0 && e->s[5] == '>') {
                char hex[3] = {e->s[3], e->s[4], 0};
                if (sscanf(hex, "%2x%c", &v, &tail) == 1 && v < 256 && t->byte_tok[v] < 0)
                    t->byte_tok[v] = i;
            }
        }
    }

    /* special-matchable tokens: control and user-defined with non-empty text */
    int ns = 0;
    for (int i = 0; i < t->n_vocab; i++)
        if ((t->v[i].type == TT_CONTROL || t->v[i].type == TT_USER) && t->v[i].len > 0) ns++;
    if (ns) {
        t->spec = malloc((size_t)ns * 2 * sizeof *t->spec);
        if (!t->spec) { st = kvl_err_set(err, KVL_ERR_NOMEM, "tokenizer: out of memory"); goto fail; }
        int k = 0;
        for (int i = 0; i < t->n_vocab; i++)
            if ((t->v[i].type == TT_CONTROL || t->v[i].type == TT_USER) && t->v[i].len > 0) t->spec[k++] = i;
        sort_spec(t, t->spec, t->spec + ns, ns);
        t->n_spec = ns;
    }
    for (int c = 0, k = 0; c <= 256; c++) {
        while (k < ns && (uint8_t)t->v[t->spec[k]].s[0] < c) k++;
        t->spec_start[c] = k;
    }
    if ((st = kvl_chat_create(g, &t->chat, err))) goto fail;
    *out = t;
    return KVL_OK;
fail:
    kvl_tok_free(t);
    return st;
}

int kvl_tok_n_vocab(const kvl_tok *t) { return t ? t->n_vocab : 0; }
kvl_token kvl_tok_bos(const kvl_tok *t) { return t ? t->bos : -1; }
kvl_token kvl_tok_eos(const kvl_tok *t) { return t ? t->eos : -1; }
kvl_token kvl_tok_eot(const kvl_tok *t) { return t ? t->eot : -1; }
int kvl_tok_add_bos_default(const kvl_tok *t) { return t ? t->add_bos : 0; }
const kvl_chat *kvl_tok_chat(const kvl_tok *t) { return t ? t->chat : NULL; }
const char *kvl_tok_text(const kvl_tok *t, kvl_token id, size_t *len) {
    if (!t || id < 0 || id >= t->n_vocab) return NULL;
    *len = t->v[id].len;
    return t->v[id].s;
}
int kvl_tok_is_eog(const kvl_tok *t, kvl_token id) {
    return t && id >= 0 && (id == t->eos || id == t->eot);
}

/* ---- encode: shared state --------------------------------------------------- */

typedef struct heap_ent {
    double pri; /* lower pops first */
    int32_t l, r;
    int32_t a, b; /* validity check values (ids for BPE, lengths for SPM) */
    int32_t res;  /* BPE: merged id */
} heap_ent;

typedef struct enc_state {
    const kvl_tok *t;
    kvl_token *out;
    int64_t cap, n;
    kvl_status st; /* first failure (message in err) */
    kvl_err *err;
    /* scratch, grown on demand; symbol indices and byte offsets are int32:
     * a pre-token has at most len symbols, an SPM fragment 3 * len + 3 bytes */
    int32_t *id, *prev, *next, *off, *len;
    size_t sym_cap;
    heap_ent *heap;
    size_t heap_n, heap_cap;
    char *buf;
    size_t buf_cap;
    pcre2_match_data *md;
    /* per-call cache of pre-token -> ids (BPE): words repeat a lot in long
     * texts; keys point into the caller's text, which outlives the call */
    struct wc_slot { const uint8_t *p; uint32_t len, off, n; } *wc;
    uint32_t wc_mask, wc_used;
    int32_t *wc_ids;
    size_t wc_ids_n, wc_ids_cap;
} enc_state;

#define WC_MAX_WORD 64

_Static_assert(3 * (uint64_t)KVL_TOKENIZE_MAX_BYTES + 3 <= INT32_MAX, "symbol offsets must fit int32");

/* Record the first failure of this call (later ones are consequences). */
static void enc_nomem(enc_state *s, const char *what, size_t bytes) {
    if (s->st) return;
    s->st = kvl_err_set(s->err, KVL_ERR_NOMEM, "tokenizer: out of memory allocating %s (%zu bytes)", what, bytes);
}

static inline void emit(enc_state *s, kvl_token tk) {
    if (s->n < s->cap) s->out[s->n] = tk;
    s->n++;
}

static bool grow_syms(enc_state *s, size_t n) {
    if (n <= s->sym_cap) return true;
    size_t c = n < 64 ? 64 : n * 2;
    int32_t **arrs[5] = {&s->id, &s->prev, &s->next, &s->off, &s->len};
    for (int i = 0; i < 5; i++) {
        int32_t *p = realloc(*arrs[i], c * sizeof(int32_t));
        if (!p) { enc_nomem(s, "symbol arrays", c * sizeof(int32_t)); return false; }
        *arrs[i] = p;
    }
    s->sym_cap = c;
    return true;
}

static bool grow_buf(enc_state *s, size_t n) {
    if (n <= s->buf_cap) return true;
    size_t c = n < 256 ? 256 : n * 2;
    char *p = realloc(s->buf, c);
    if (!p) { enc_nomem(s, "a scratch buffer", c); return false; }
    s->buf = p;
    s->buf_cap = c;
    return true;
}

static inline bool heap_less(const heap_ent *x, const heap_ent *y) {
    return x->pri < y->pri || (x->pri == y->pri && x->l < y->l);
}

static void heap_push(enc_state *s, heap_ent e) {
    if (s->heap_n == s->heap_cap) {
        size_t c = s->heap_cap ? s->heap_cap * 2 : 64;
        heap_ent *p = realloc(s->heap, c * sizeof *p);
        if (!p) { enc_nomem(s, "the merge queue", c * sizeof *p); return; }
        s->heap = p;
        s->heap_cap = c;
    }
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&e, &s->heap[p])) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = e;
}

static heap_ent heap_pop(enc_state *s) {
    heap_ent top = s->heap[0], last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_less(&s->heap[c + 1], &s->heap[c])) c++;
        if (!heap_less(&s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n) s->heap[i] = last;
    return top;
}

/* ---- byte-level BPE ----------------------------------------------------------- */

/* Merge of (a, b) or NULL. */
static inline const tok_merge *merge_find(const kvl_tok *t, int32_t a, int32_t b) {
    if (!t->mh) return NULL;
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    uint32_t h = hash_u64(key) & t->m_mask;
    for (;;) {
        const tok_merge *m = &t->mh[h];
        if (m->key == key) return m;
        if (!m->key) return NULL;
        h = (h + 1) & t->m_mask;
    }
}

static void bpe_try_pair(enc_state *s, int32_t l, int32_t r) {
    const tok_merge *m = merge_find(s->t, s->id[l], s->id[r]);
    if (m) heap_push(s, (heap_ent){.pri = m->rank, .l = l, .r = r, .a = s->id[l], .b = s->id[r], .res = m->res});
}

/* One pre-token (raw bytes): byte-level symbols merged by lowest rank. */
static void bpe_word_uncached(enc_state *s, const uint8_t *w, size_t n);

/* One pre-token, through the per-call cache when it is short. */
static void bpe_word(enc_state *s, const uint8_t *w, size_t n) {
    if (n == 0) return;
    if (!s->wc || n > WC_MAX_WORD) { bpe_word_uncached(s, w, n); return; }
    uint32_t h = (uint32_t)kvl_hash_fnv1a(w, n) & s->wc_mask;
    for (;;) {
        struct wc_slot *e = &s->wc[h];
        if (!e->p) break;
        if (e->len == n && memcmp(e->p, w, n) == 0) {
            for (uint32_t i = 0; i < e->n; i++) emit(s, s->wc_ids[e->off + i]);
            return;
        }
        h = (h + 1) & s->wc_mask;
    }
    int64_t before = s->n;
    bpe_word_uncached(s, w, n);
    int64_t cnt = s->n - before;
    /* insert only while the table is at most half full and ids are known
     * (ids past the output capacity are not stored anywhere) */
    if (s->wc_used * 2 >= s->wc_mask || s->n > s->cap || s->st) return;
    if (s->wc_ids_n + (size_t)cnt > s->wc_ids_cap) {
        size_t c = (s->wc_ids_n + (size_t)cnt) * 2 + 1024;
        int32_t *p = realloc(s->wc_ids, c * sizeof *p);
        if (!p) return; /* cache is optional */
        s->wc_ids = p;
        s->wc_ids_cap = c;
    }
    memcpy(s->wc_ids + s->wc_ids_n, s->out + before, (size_t)cnt * sizeof(int32_t));
    s->wc[h] = (struct wc_slot){w, (uint32_t)n, (uint32_t)s->wc_ids_n, (uint32_t)cnt};
    s->wc_ids_n += (size_t)cnt;
    s->wc_used++;
}

static void bpe_word_uncached(enc_state *s, const uint8_t *w, size_t n) {
    const kvl_tok *t = s->t;
    if (t->ignore_merges) {
        if (!grow_buf(s, n * 2)) return;
        size_t bl = 0;
        for (size_t i = 0; i < n; i++) bl += kvl_utf8_encode(t->byte2cp[w[i]], s->buf + bl);
        int32_t id = vocab_find(t, s->buf, bl);
        if (id >= 0) { emit(s, id); return; }
    }
    /* Bytes whose byte-level character is not in the vocab (SmolLM2 lacks 21
     * of the 256, e.g. 0xC0, 0xC1, 0xF5..0xFF and a few C0 controls) are
     * dropped before merging, as HF tokenizers does (BPE without unk token);
     * such bytes cannot round-trip. */
    if (!grow_syms(s, n)) return;
    size_t ns = 0;
    for (size_t i = 0; i < n; i++) {
        if (t->byte_tok[w[i]] < 0) continue;
        s->id[ns] = t->byte_tok[w[i]];
        s->prev[ns] = (int32_t)ns - 1;
        s->next[ns] = (int32_t)ns + 1;
        ns++;
    }
    if (ns == 0) return;
    s->next[ns - 1] = -1;
    if (ns == 1) { emit(s, s->id[0]); return; }
    s->heap_n = 0;
    for (size_t i = 0; i + 1 < ns; i++) bpe_try_pair(s, (int32_t)i, (int32_t)i + 1);
    while (s->heap_n) {
        heap_ent e = heap_pop(s);
        int32_t l = e.l, r = e.r;
        /* stale if either side changed since the pair was queued */
        if (s->next[l] != r || s->id[l] != e.a || s->id[r] != e.b) continue;
        s->id[l] = e.res;
        s->id[r] = -2; /* dead */
        s->next[l] = s->next[r];
        if (s->next[r] >= 0) s->prev[s->next[r]] = l;
        if (s->prev[l] >= 0) bpe_try_pair(s, s->prev[l], l);
        if (s->next[l] >= 0) bpe_try_pair(s, l, s->next[l]);
    }
    for (int32_t i = 0; i >= 0; i = s->next[i]) emit(s, s->id[i]);
}

/* Split [p, p+n) (valid UTF-8) with regex level lv; matches and the gaps
 * between them are both pieces (HF Split "isolated"); the last level feeds
 * bpe_word. */
static void bpe_split(enc_state *s, int lv, const uint8_t *p, size_t n) {
    const kvl_tok *t = s->t;
    if (n == 0) return;
    if (lv == t->n_re) { bpe_word(s, p, n); return; }
    size_t pos = 0;
    while (pos < n && !s->st) {
        int rc = pcre2_match(t->re[lv], (PCRE2_SPTR)p, n, pos, PCRE2_NO_UTF_CHECK, s->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            /* JIT resource errors: retry with the interpreter */
            rc = pcre2_match(t->re[lv], (PCRE2_SPTR)p, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, s->md,
                             NULL);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) {
                PCRE2_UCHAR msg[160];
                pcre2_get_error_message(rc, msg, sizeof msg);
                kvl_status st = rc == PCRE2_ERROR_NOMEMORY || rc == PCRE2_ERROR_HEAPLIMIT ? KVL_ERR_NOMEM
                                                                                            : KVL_ERR_INTERNAL;
                if (!s->st) s->st = kvl_err_set(s->err, st, "tokenizer: pre-tokenizer regex failed: %s", (char *)msg);
                return;
            }
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) { /* empty match (not produced by our patterns): step one char */
            me = ms + 1;
            while (me < n && (p[me] & 0xC0) == 0x80) me++;
            if (ms > pos) bpe_split(s, lv + 1, p + pos, ms - pos);
            bpe_split(s, lv + 1, p + ms, me - ms);
            pos = me;
            continue;
        }
        if (ms > pos) bpe_split(s, lv + 1, p + pos, ms - pos);
        bpe_split(s, lv + 1, p + ms, me - ms);
        pos = me;
    }
    if (pos < n) bpe_split(s, lv + 1, p + pos, n - pos);
}

/* Raw (non-special) text for byte-level BPE. PCRE2 in UTF mode needs valid
 * UTF-8, so the text is cut into maximal valid runs, each pre-tokenized on its
 * own, and every byte that is not part of a valid sequence becomes its own
 * pre-token, i.e. its single byte-level token. This never fails, is
 * deterministic, and detokenizes back to the original bytes whenever the
 * vocab has the byte's token (bytes without one are dropped, see bpe_word).
 * (HF cannot take invalid UTF-8 at all, so there is no reference to agree
 * with.) */
static void bpe_raw(enc_state *s, const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n && !s->st) {
        size_t st = i;
        size_t l;
        while (i < n && (l = kvl_utf8_len(p + i, n - i)) > 0) i += l;
        if (i > st) bpe_split(s, 0, p + st, i - st);
        if (i < n) { /* invalid byte (dropped if it has no byte-level token, see bpe_word) */
            if (s->t->byte_tok[p[i]] >= 0) emit(s, s->t->byte_tok[p[i]]);
            i++;
        }
    }
}

/* ---- SentencePiece-style BPE ---------------------------------------------- */

static bool spm_piece_ok(const kvl_tok *t, int32_t id) {
    int ty = t->v[id].type;
    return ty == TT_NORMAL || ty == TT_USER || ty == TT_UNDEFINED;
}

static void spm_try_pair(enc_state *s, int32_t l, int32_t r) {
    const kvl_tok *t = s->t;
    int32_t id = vocab_find(t, s->buf + s->off[l], (size_t)(s->len[l] + s->len[r]));
    if (id < 0 || !spm_piece_ok(t, id)) return;
    heap_push(s, (heap_ent){.pri = -(double)t->v[id].score, .l = l, .r = r, .a = s->len[l], .b = s->len[r]});
}

/* Raw text fragment for SPM: optional space prefix, ' ' -> U+2581, symbols =
 * UTF-8 characters (each invalid byte is its own symbol), merged by highest
 * piece score (ties: leftmost), unknown symbols -> byte-fallback tokens. */
static void spm_raw(enc_state *s, const uint8_t *p, size_t n, bool prefix) {
    const kvl_tok *t = s->t;
    if (!grow_buf(s, (n + 1) * 3)) return;
    size_t bl = 0;
    if (prefix) { memcpy(s->buf, "\xE2\x96\x81", 3); bl = 3; }
    for (size_t i = 0; i < n; i++) {
        if (p[i] == ' ') { memcpy(s->buf + bl, "\xE2\x96\x81", 3); bl += 3; }
        else s->buf[bl++] = (char)p[i];
    }
    if (bl == 0) return;
    if (!grow_syms(s, bl)) return;
    size_t ns = 0;
    for (size_t i = 0; i < bl;) {
        size_t l = kvl_utf8_len((const uint8_t *)s->buf + i, bl - i);
        if (!l) l = 1;
        s->off[ns] = (int32_t)i;
        s->len[ns] = (int32_t)l;
        s->prev[ns] = (int32_t)ns - 1;
        s->next[ns] = (int32_t)ns + 1;
        ns++;
        i += l;
    }
    s->next[ns - 1] = -1;
    s->heap_n = 0;
    for (size_t i = 0; i + 1 < ns; i++) spm_try_pair(s, (int32_t)i, (int32_t)i + 1);
    while (s->heap_n && !s->st) {
        heap_ent e = heap_pop(s);
        int32_t l = e.l, r = e.r;
        if (s->len[l] != e.a || s->len[r] != e.b || s->next[l] != r) continue;
        s->len[l] += s->len[r];
        s->len[r] = 0;
        s->next[l] = s->next[r];
        if (s->next[r] >= 0) s->prev[s->next[r]] = l;
        if (s->prev[l] >= 0) spm_try_pair(s, s->prev[l], l);
        if (s->next[l] >= 0) spm_try_pair(s, l, s->next[l]);
    }
    for (int32_t i = 0; i >= 0; i = s->next[i]) {
        int32_t id = vocab_find(t, s->buf + s->off[i], (size_t)s->len[i]);
        if (id >= 0 && spm_piece_ok(t, id)) { emit(s, id); continue; }
        for (int32_t k = 0; k < s->len[i]; k++) {
            uint8_t c = (uint8_t)s->buf[s->off[i] + k];
            if (t->byte_tok[c] >= 0) emit(s, t->byte_tok[c]);
            else if (t->unk >= 0) emit(s, t->unk);
        }
    }
}

/* ---- encode ---------------------------------------------------------------- */

/* Leftmost-longest special token at p[i] that ends by p[n] (or -1); control
 * tokens only if parse_special. */
static int32_t spec_at(const kvl_tok *t, const uint8_t *p, size_t n, size_t i, bool parse_special) {
    uint8_t c = p[i];
    for (int k = t->spec_start[c]; k < t->spec_start[c + 1]; k++) {
        int32_t id = t->spec[k];
        const tok_entry *e = &t->v[id];
        if (e->type == TT_CONTROL && !parse_special) continue;
        if (e->len <= n - i && memcmp(e->s, p + i, e->len) == 0) return id;
    }
    return -1;
}

/* Where the scan position i stands: the end of its region (a markup span, or
 * the text between spans) and whether control tokens may match there. *k is
 * the first span not wholly before i (i only grows, so it only advances). */
static size_t region_at(const kvl_tok_enc_opts *o, size_t len, size_t i, int *k, bool *markup) {
    while (*k < o->n_markup && o->markup[*k].off + o->markup[*k].len <= i) (*k)++;
    if (*k < o->n_markup && o->markup[*k].off <= i) {
        *markup = true;
        return o->markup[*k].off + o->markup[*k].len;
    }
    *markup = false;
    return *k < o->n_markup ? o->markup[*k].off : len;
}

int64_t kvl_tok_encode_ex(const kvl_tok *t, const char *text, size_t len, const kvl_tok_enc_opts *o,
                          kvl_token *out, int64_t cap, kvl_err *err) {
    if (!t || !o || (!text && len) || cap < 0 || (!out && cap > 0) || o->n_markup < 0 ||
        (o->n_markup > 0 && !o->markup))
        return -(int64_t)kvl_err_set(err, KVL_ERR_ARG, "tokenizer: invalid arguments");
    if (len > KVL_TOKENIZE_MAX_BYTES)
        return -(int64_t)kvl_err_set(err, KVL_ERR_ARG, "tokenizer: input of %zu bytes exceeds the limit of %zu bytes",
                                     len, (size_t)KVL_TOKENIZE_MAX_BYTES);
    size_t end = 0;
    for (int k = 0; k < o->n_markup; k++) {
        const kvl_tok_span *sp = &o->markup[k];
        if (sp->off < end || sp->off > len || sp->len > len - sp->off)
            return -(int64_t)kvl_err_set(err, KVL_ERR_ARG,
                                         "tokenizer: markup span %d is out of order or outside the text", k);
        end = sp->off + sp->len;
    }
    enc_state s = {.t = t, .out = out, .cap = cap, .err = err};
    if (t->kind == KIND_BPE) {
        s.md = pcre2_match_data_create(4, NULL);
        if (!s.md) return -(int64_t)kvl_err_set(err, KVL_ERR_NOMEM, "tokenizer: out of memory allocating regex match data");
        if (len >= 1024 && cap >= 64) {
            uint32_t wc = 256;
            while (wc < len / 4 && wc < (1u << 17)) wc <<= 1;
            s.wc = calloc(wc, sizeof *s.wc); /* optional: no cache if this fails */
            s.wc_mask = wc - 1;
        }
    }
    int add_bos = o->add_bos < 0 ? t->add_bos : o->add_bos;
    bool added_bos = add_bos && t->bos >= 0;
    if (added_bos) emit(&s, t->bos);
    const uint8_t *p = (const uint8_t *)text;
    bool prev_special = true; /* SPM: space prefix at the start and after specials */
    size_t start = 0;
    int k = 0;
    for (size_t i = 0; i <= len && !s.st;) {
        int32_t sp = -1;
        if (i < len && t->n_spec) {
            bool markup;
            size_t end = region_at(o, len, i, &k, &markup);
            sp = spec_at(t, p, end, i, markup);
        }
        if (sp < 0 && i < len) { i++; continue; }
        if (i > start) {
            if (t->kind == KIND_BPE) bpe_raw(&s, p + start, i - start);
            else spm_raw(&s, p + start, i - start, t->add_space_prefix && prev_special);
            prev_special = false;
        }
        if (sp < 0) break; /* i == len */
        if (!(o->bos_once && added_bos && i == 0 && sp == t->bos)) emit(&s, sp);
        prev_special = true;
        i += t->v[sp].len;
        start = i;
    }
    free(s.id); free(s.prev); free(s.next); free(s.off); free(s.len);
    free(s.heap);
    free(s.buf);
    if (s.md) pcre2_match_data_free(s.md);
    free(s.wc);
    free(s.wc_ids);
    if (s.st) return -(int64_t)s.st;
    return s.n;
}

int64_t kvl_tok_encode(const kvl_tok *t, const char *text, size_t len, int add_bos, int parse_special,
                       kvl_token *out, int64_t cap) {
    kvl_tok_span all = {0, len};
    kvl_tok_enc_opts o = {.add_bos = add_bos, .markup = &all, .n_markup = parse_special != 0};
    return kvl_tok_encode_ex(t, text, len, &o, out, cap, NULL);
}

/* ---- pieces ------------------------------------------------------------------ */

static int put_bytes(char *buf, int cap, int n, const char *src, int l) {
    for (int i = 0; i < l; i++)
        if (n + i < cap) buf[n + i] = src[i];
    return n + l;
}

int kvl_tok_piece(const kvl_tok *t, kvl_token id, int render_special, char *buf, int cap) {
    if (!t || id < 0 || id >= t->n_vocab || cap < 0 || (!buf && cap > 0)) return -(int)KVL_ERR_ARG;
    const tok_entry *e = &t->v[id];
    int n = 0;
    switch (e->type) {
    case TT_CONTROL:
    case TT_UNKNOWN:
    case TT_UNUSED:
        return render_special ? put_bytes(buf, cap, 0, e->s, (int)e->len) : 0;
    case TT_USER:
        return put_bytes(buf, cap, 0, e->s, (int)e->len);
    case TT_BYTE: {
        unsigned v = 0;
        char hex[3] = {0, 0, 0}, ch;
        if (e->len == 6 && memcmp(e->s, "<0x", 3) == 0 && e->s[5] == '>') {
            hex[0] = e->s[3];
            hex[1] = e->s[4];
            if (sscanf(hex, "%2x", &v) == 1 && v < 256) {
                ch = (char)v;
                return put_bytes(buf, cap, 0, &ch, 1);
            }
        }
        break; /* not in <0xAB> form: render its text like a normal token */
    }
    default:
        break;
    }
    const uint8_t *s = (const uint8_t *)e->s;
    size_t L = e->len;
    if (t->kind == KIND_SPM) {
        for (size_t i = 0; i < L;) {
            if (L - i >= 3 && s[i] == 0xE2 && s[i + 1] == 0x96 && s[i + 2] == 0x81) {
                n = put_bytes(buf, cap, n, " ", 1);
                i += 3;
            } else {
                n = put_bytes(buf, cap, n, (const char *)s + i, 1);
                i++;
            }
        }
        return n;
    }
    for (size_t i = 0; i < L;) {
        size_t l = kvl_utf8_len(s + i, L - i);
        if (!l) { n = put_bytes(buf, cap, n, (const char *)s + i, 1); i++; continue; }
        uint32_t cp = kvl_utf8_decode(s + i, l);
        if (cp < 324 && t->cp2byte[cp] >= 0) {
            char ch = (char)t->cp2byte[cp];
            n = put_bytes(buf, cap, n, &ch, 1);
        } else {
            n = put_bytes(buf, cap, n, (const char *)s + i, (int)l);
        }
        i += l;
    }
    return n;
}
