/* Retrieval task generators and scorers (see tasks.h). A haystack is a list of
 * "units" (filler sentences and multikey distractor facts), each tokenized once
 * with its leading space so lengths and depths can be computed in tokens; a
 * prompt places the asked fact at the unit boundary nearest to the requested
 * token depth and tokenizes "haystack\n\nquestion" as the user message with
 * kvl_chat_tokenize, so what the model sees is exactly what a chat user would
 * send. Positions reported (needle, haystack start) come from tokenizing
 * prefixes of the rendered text with special tokens parsed, which is only
 * valid because the prompt is checked to contain no control-token text of its
 * own (then both tokenizations agree token for token). */
#include "tasks.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TASK_MAX_KEYS 64

const char *task_kind_name(task_kind k) {
    switch (k) {
    case TASK_NEEDLE: return "needle";
    case TASK_PASSKEY: return "passkey";
    case TASK_MULTIKEY: return "multikey";
    }
    return "?";
}

int task_kind_parse(const char *s, task_kind *k) {
    for (int i = TASK_NEEDLE; i <= TASK_MULTIKEY; i++)
        if (s && !strcmp(s, task_kind_name((task_kind)i))) {
            *k = (task_kind)i;
            return 0;
        }
    return -1;
}

static int fail(char *err, size_t err_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t err_len, const char *fmt, ...) {
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* ---- generator ------------------------------------------------------------------- */

uint64_t task_rng_next(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t task_rng_below(uint64_t *state, uint64_t n) {
    if (n <= 1) return 0;
    uint64_t limit = UINT64_MAX - UINT64_MAX % n; /* values >= limit would bias the modulo */
    for (;;) {
        uint64_t r = task_rng_next(state);
        if (r < limit) return r % n;
    }
}

/* Independent stream for (seed, salt, extra). */
static uint64_t rng_stream(uint64_t seed, uint64_t salt, uint64_t extra) {
    uint64_t s = seed * 0xD1B54A32D192ED03ull ^ salt;
    task_rng_next(&s);
    s ^= extra * 0x8CB92BA72F3D8DD7ull;
    task_rng_next(&s);
    return s;
}

/* ---- small strings ----------------------------------------------------------------- */

typedef struct sbuf {
    char *s;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + n + 1) cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->oom = 1;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}
static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static int is_digit(int c) { return c >= '0' && c <= '9'; }
static int is_upper(int c) { return c >= 'A' && c <= 'Z'; }
static int is_lower(int c) { return c >= 'a' && c <= 'z'; }
/* Letters, digits and any non-ASCII byte (part of a non-ASCII word). */
static int is_wordc(int c) { return is_digit(c) || is_upper(c) || is_lower(c) || (c & 0x80); }
static int to_lower(int c) { return is_upper(c) ? c + 32 : c; }

/* ---- sentence splitting ---------------------------------------------------------------- */

static const char *const ABBREV[] = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "prof", "inc", "ltd",
                                     "co", "e.g", "i.e", "cf", "u.s", "u.k", "approx", "dept", "est"};

/* Length of a closing quote / bracket at p (ASCII or UTF-8 right quotes), 0 if none. */
static size_t closer_len(const char *p, const char *end) {
    const unsigned char *u = (const unsigned char *)p;
    if (p < end && (*p == '"' || *p == '\'' || *p == ')')) return 1;
    if (end - p >= 3 && u[0] == 0xE2 && u[1] == 0x80 && (u[2] == 0x99 || u[2] == 0x9D)) return 3;
    return 0;
}

/* Length of an opening quote at p, 0 if none. */
static size_t opener_len(const char *p, const char *end) {
    const unsigned char *u = (const unsigned char *)p;
    if (p < end && (*p == '"' || *p == '(')) return 1;
    if (end - p >= 3 && u[0] == 0xE2 && u[1] == 0x80 && u[2] == 0x9C) return 3;
    return 0;
}

/* Does the word ending just before the terminator at t (text starts at s) look
 * like an abbreviation or an initial? */
static int ends_with_abbrev(const char *s, const char *t) {
    const char *w = t;
    while (w > s && w[-1] != ' ') w--;
    size_t n = (size_t)(t - w);
    if (n == 1 && is_upper((unsigned char)w[0])) return 1; /* initial: "Paul G. Allen" */
    if (n == 0 || n > 6) return 0;
    char low[8];
    for (size_t i = 0; i < n; i++) low[i] = (char)to_lower((unsigned char)w[i]);
    low[n] = 0;
    for (size_t i = 0; i < sizeof ABBREV / sizeof ABBREV[0]; i++)
        if (!strcmp(low, ABBREV[i])) return 1;
    return 0;
}

static int keep_sentence(const char *s, size_t n) {
    if (n < 20 || n > 320 || !is_upper((unsigned char)s[0])) return 0;
    int term = 0; /* terminal punctuation within the last 4 bytes (closing quotes may follow) */
    for (size_t i = n; i > 0 && i + 4 > n; i--)
        if (s[i - 1] == '.' || s[i - 1] == '!' || s[i - 1] == '?') term = 1;
    if (!term) return 0;
    int run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7F || strchr("[]{}<>|*_#@\\~^`=", c)) return 0;
        run = is_digit(c) ? run + 1 : 0;
        if (run >= 5) return 0;                                    /* could collide with a needle value */
        if (is_digit(c) && i + 1 < n && is_upper((unsigned char)s[i + 1])) return 0; /* "2010What" */
        if (c == ')' && i + 1 < n && is_digit((unsigned char)s[i + 1])) return 0;    /* "room.)1." */
    }
    const char *bad[] = {"http", "www.", ".com", "Thanks to "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t bl = strlen(bad[i]);
        for (size_t j = 0; j + bl <= n; j++)
            if (!memcmp(s + j, bad[i], bl)) return 0;
    }
    return 1;
}

void task_split_sentences(const char *text, size_t len, void (*fn)(const char *s, size_t n, void *user),
                          void *user) {
    /* 1. clean: whitespace runs -> one space, footnote markers "[12]" removed */
    char *c = malloc(len + 1);
    if (!c) return;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = text[i];
        if (ch == '[') {
            size_t j = i + 1;
            while (j < len && is_digit((unsigned char)text[j])) j++;
            if (j > i + 1 && j < len && text[j] == ']') {
                i = j;
                continue;
            }
        }
        if (ch == '\n' || ch == '\r' || ch == '\t' || ch == '\f' || ch == '\v') ch = ' ';
        if (ch == ' ' && (n == 0 || c[n - 1] == ' ')) continue;
        c[n++] = ch;
    }
    c[n] = 0;
    /* 2. split */
    const char *end = c + n, *start = c;
    for (const char *p = c; p < end; p++) {
        if (*p != '.' && *p != '!' && *p != '?') continue;
        const char *q = p + 1;
        while (q < end && (*q == '.' || *q == '!' || *q == '?')) q++; /* "..." "?!" */
        size_t cl;
        while ((cl = closer_len(q, end)) > 0) q += cl;
        int boundary = 0;
        if (q >= end) {
            boundary = 1;
        } else if (*q == ' ') {
            const char *r = q + 1;
            size_t ol = opener_len(r, end);
            if (r < end && (is_upper((unsigned char)r[0]) || (ol && r + ol < end && is_upper((unsigned char)r[ol]))))
                boundary = !(*p == '.' && ends_with_abbrev(start, p));
        } else if (*q == '(' && q + 1 < end && is_upper((unsigned char)q[1])) {
            boundary = 1; /* "already.(How many" */
        } else if (is_upper((unsigned char)*q) && p > start &&
                   (is_lower((unsigned char)p[-1]) || is_digit((unsigned char)p[-1]) || closer_len(p - 1, end))) {
            boundary = 1; /* paragraphs glued without whitespace: "accelerating.We" */
        }
        if (!boundary) continue;
        size_t sl = (size_t)(q - start);
        if (keep_sentence(start, sl)) fn(start, sl, user);
        while (q < end && *q == ' ') q++;
        start = q;
        p = q - 1;
    }
    free(c);
}

/* ---- corpus -------------------------------------------------------------------------- */

typedef struct corpus_acc {
    sbuf buf;
    size_t *offs;
    int n, cap;
    int oom;
} corpus_acc;

static void corpus_add(const char *s, size_t n, void *user) {
    corpus_acc *a = user;
    if (a->oom) return;
    if (a->n == a->cap) {
        int cap = a->cap ? a->cap * 2 : 1024;
        size_t *no = realloc(a->offs, (size_t)cap * sizeof *no);
        if (!no) {
            a->oom = 1;
            return;
        }
        a->offs = no;
        a->cap = cap;
    }
    a->offs[a->n++] = a->buf.n;
    sb_add(&a->buf, s, n);
    sb_add(&a->buf, "", 1); /* keeps the NUL as a separator */
}

static int corpus_finish(task_corpus *c, corpus_acc *a, char *err, size_t err_len) {
    if (a->oom || a->buf.oom) {
        free(a->offs);
        free(a->buf.s);
        return fail(err, err_len, "out of memory loading the haystack corpus");
    }
    if (a->n == 0) {
        free(a->offs);
        free(a->buf.s);
        return fail(err, err_len, "no usable sentences in the haystack text");
    }
    c->buf = a->buf.s;
    c->n = a->n;
    c->sent = malloc((size_t)a->n * sizeof *c->sent);
    c->lower = malloc(a->buf.n + 1);
    if (!c->sent || !c->lower) {
        free(a->offs);
        task_corpus_free(c);
        return fail(err, err_len, "out of memory loading the haystack corpus");
    }
    for (int i = 0; i < a->n; i++) c->sent[i] = c->buf + a->offs[i];
    for (size_t i = 0; i < a->buf.n; i++) c->lower[i] = c->buf[i] ? (char)to_lower((unsigned char)c->buf[i]) : ' ';
    c->lower[a->buf.n] = 0;
    free(a->offs);
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int task_corpus_load(task_corpus *c, const char *dir, char *err, size_t err_len) {
    memset(c, 0, sizeof *c);
    DIR *d = opendir(dir);
    if (!d) return fail(err, err_len, "cannot open haystack directory '%s': %s", dir, strerror(errno));
    char **names = NULL;
    int nn = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".txt") || e->d_name[0] == '.') continue;
        if (nn == cap) {
            cap = cap ? cap * 2 : 64;
            char **nm = realloc(names, (size_t)cap * sizeof *nm);
            if (!nm) break;
            names = nm;
        }
        names[nn] = strdup(e->d_name);
        if (names[nn]) nn++;
    }
    closedir(d);
    if (nn == 0) {
        free(names);
        return fail(err, err_len, "no .txt files in haystack directory '%s'", dir);
    }
    qsort(names, (size_t)nn, sizeof *names, cmp_str); /* readdir order is not portable */
    corpus_acc a;
    memset(&a, 0, sizeof a);
    int rc = 0;
    for (int i = 0; i < nn && rc == 0; i++) {
        size_t pl = strlen(dir) + strlen(names[i]) + 2;
        char *path = malloc(pl);
        FILE *f = path ? (snprintf(path, pl, "%s/%s", dir, names[i]), fopen(path, "rb")) : NULL;
        if (!f) {
            rc = fail(err, err_len, "cannot read '%s/%s': %s", dir, names[i], strerror(errno));
            free(path);
            break;
        }
        sbuf t = {0};
        char chunk[65536];
        size_t got;
        while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) sb_add(&t, chunk, got);
        if (ferror(f) || t.oom) rc = fail(err, err_len, "cannot read '%s'", path);
        fclose(f);
        free(path);
        if (rc == 0 && t.n) task_split_sentences(t.s, t.n, corpus_add, &a);
        free(t.s);
    }
    for (int i = 0; i < nn; i++) free(names[i]);
    free(names);
    if (rc) {
        free(a.offs);
        free(a.buf.s);
        return rc;
    }
    return corpus_finish(c, &a, err, err_len);
}

int task_corpus_from_text(task_corpus *c, const char *text, size_t len, char *err, size_t err_len) {
    memset(c, 0, sizeof *c);
    corpus_acc a;
    memset(&a, 0, sizeof a);
    task_split_sentences(text, len, corpus_add, &a);
    return corpus_finish(c, &a, err, err_len);
}

void task_corpus_free(task_corpus *c) {
    if (!c) return;
    free(c->buf);
    free(c->sent);
    free(c->lower);
    memset(c, 0, sizeof *c);
}

/* ---- facts ------------------------------------------------------------------------------ */

typedef struct fact {
    char key[64];       /* entity / key word */
    char value[64];     /* the scored answer */
    char sentence[512]; /* the fact as inserted */
} fact;

/* A filler sentence or a distractor fact, with its token count (leading space included). */
typedef struct unit {
    const char *text;
    int ntok;
    int fact; /* 0: filler sentence; i > 0: distractor fact i */
} unit;

struct task_hay {
    const kvl_model *m;
    task_kind kind;
    int numeric;
    const char *prefix;   /* text before the haystack (passkey instructions) or "" */
    char question[640];
    fact facts[TASK_MAX_KEYS];
    int n_facts;
    unit *u;
    int n, cap;
};

static const char *const PLACE_A[] = {"Quill", "Brack", "Thorn", "Marl", "Fenn", "Dun", "Ash", "Crow",
                                      "Wint", "Hollin", "Stav", "Bram", "Kest", "Lorn", "Pell", "Varr",
                                      "Ossel", "Glim", "Harrow", "Tamb", "Yarl", "Zell", "Norr", "Elm"};
static const char *const PLACE_B[] = {"brook", "ford", "haven", "mere", "wick", "stead", "moor", "vale",
                                      "crest", "field", "holm", "gate", "shire", "hollow", "reach", "bury"};
static const char *const ADJ[] = {"amber", "brave", "calm", "dusty", "eager", "fancy", "gentle", "hollow",
                                  "icy", "jolly", "keen", "lucky", "misty", "noble", "odd", "proud",
                                  "quiet", "rapid", "silent", "tidy", "upper", "vivid", "wary", "young",
                                  "zesty", "bold", "crisp", "dim", "faint", "grand", "humble", "lively"};
static const char *const NOUN[] = {"anchor", "badger", "candle", "dragon", "engine", "falcon", "garden",
                                   "harbor", "island", "jacket", "kettle", "lantern", "meadow", "needle",
                                   "orchard", "pebble", "quarry", "river", "saddle", "tunnel", "violin",
                                   "walrus", "window", "yacht", "beacon", "cactus", "dolphin", "feather",
                                   "glacier", "hammer", "ladder", "mirror"};

typedef struct needle_tpl {
    const char *fact, *question; /* %s: place, then value (fact) / place (question) */
} needle_tpl;

/* Default needles; the seed picks one, an invented place and a 5-7 digit value.
 * Invented-word values ("The password ... is dufetit.") were tried and left
 * out of the defaults: SmolLM2-135M copies them unreliably even in 512-token
 * prompts with the full cache (5/12 right, numbers 12/12), which would hide
 * the losses the harness is meant to show. Word answers remain available
 * through a custom needle (--needle/--question/--answer). */
static const needle_tpl NEEDLES[] = {
    {"The secret number of the city of %s is %s.",
     "What is the secret number of the city of %s? Answer with the number only."},
    {"The access code for the observatory in %s is %s.",
     "What is the access code for the observatory in %s? Answer with the number only."},
    {"The lucky number of the lighthouse keeper of %s is %s.",
     "What is the lucky number of the lighthouse keeper of %s? Answer with the number only."},
    {"The combination of the old bank vault in %s is %s.",
     "What is the combination of the old bank vault in %s? Answer with the number only."},
};

static const char PASSKEY_PREFIX[] =
    "There is an important piece of information hidden inside a lot of irrelevant text. "
    "Find it and memorize it. I will quiz you about the important information there.";
static const char *const PASSKEY_FILLER[] = {"The grass is green.", "The sky is blue.", "The sun is yellow.",
                                             "Here we go.", "There and back again."};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Is s (lower-case) a substring of the corpus? */
static int in_corpus(const task_corpus *c, const char *s) {
    if (!c || !c->lower) return 0;
    char low[128];
    size_t n = strlen(s);
    if (n >= sizeof low) n = sizeof low - 1;
    for (size_t i = 0; i < n; i++) low[i] = (char)to_lower((unsigned char)s[i]);
    low[n] = 0;
    return strstr(c->lower, low) != NULL;
}

static void gen_number(uint64_t *r, int digits, char *out) {
    out[0] = (char)('1' + task_rng_below(r, 9));
    for (int i = 1; i < digits; i++) out[i] = (char)('0' + task_rng_below(r, 10));
    out[digits] = 0;
}

/* ---- tokenization helpers ------------------------------------------------------------------- */

/* Tokens of rendered[0..n) with special tokens parsed, no BOS (prefix
 * counts inside a rendered prompt, see task_hay_prompt), or -1. */
static int count_rendered(const kvl_model *m, const char *s, size_t n) {
    int64_t c = kvl_tokenize(m, s, n, 0, 1, NULL, 0);
    return c < 0 || c > INT_MAX ? -1 : (int)c;
}

/* Tokens of message text (text, as kvl_chat_tokenize treats it), or -1. */
static int count_plain(const kvl_model *m, const char *s) {
    int64_t c = kvl_tokenize(m, s, strlen(s), 0, 0, NULL, 0);
    return c < 0 || c > INT_MAX ? -1 : (int)c;
}

/* Tokens of " " + s (units are joined with one space). */
static int unit_tokens(const kvl_model *m, const char *s) {
    char stack[512];
    size_t n = strlen(s);
    char *b = n + 2 <= sizeof stack ? stack : malloc(n + 2);
    if (!b) return -1;
    b[0] = ' ';
    memcpy(b + 1, s, n + 1);
    int c = count_plain(m, b);
    if (b != stack) free(b);
    return c;
}

static int hay_push(task_hay *h, int at, const char *text, int ntok, int fact) {
    if (h->n == h->cap) {
        int cap = h->cap ? h->cap * 2 : 256;
        unit *nu = realloc(h->u, (size_t)cap * sizeof *nu);
        if (!nu) return -1;
        h->u = nu;
        h->cap = cap;
    }
    if (at < 0 || at > h->n) at = h->n;
    memmove(h->u + at + 1, h->u + at, (size_t)(h->n - at) * sizeof *h->u);
    h->u[at] = (unit){text, ntok, fact};
    h->n++;
    return 0;
}

/* ---- accessors -------------------------------------------------------------------------------- */

const char *task_hay_expected(const task_hay *h) { return h->facts[0].value; }
int task_hay_numeric(const task_hay *h) { return h->numeric; }
int task_hay_n_facts(const task_hay *h) { return h->n_facts; }
const char *task_hay_question(const task_hay *h) { return h->question; }
void task_hay_fact(const task_hay *h, int i, const char **key, const char **value, const char **sentence) {
    const fact *f = &h->facts[i < 0 || i >= h->n_facts ? 0 : i];
    if (key) *key = f->key;
    if (value) *value = f->value;
    if (sentence) *sentence = f->sentence;
}

void task_hay_free(task_hay *h) {
    if (!h) return;
    free(h->u);
    free(h);
}

void task_prompt_free(task_prompt *p) {
    if (!p) return;
    free(p->text);
    free(p->tokens);
    memset(p, 0, sizeof *p);
}

/* ---- prompt rendering -------------------------------------------------------------------------- */

/* Unit boundary (0..n) whose token offset is nearest to depth_pct of the total. */
static int boundary_for_depth(const task_hay *h, int depth_pct) {
    int64_t total = 0;
    for (int i = 0; i < h->n; i++) total += h->u[i].ntok;
    int64_t target = (total * depth_pct + 50) / 100, cum = 0, best_d = INT64_MAX;
    int best = 0;
    for (int k = 0; k <= h->n; k++) {
        int64_t d = cum > target ? cum - target : target - cum;
        if (d < best_d) best_d = d, best = k;
        if (k < h->n) cum += h->u[k].ntok;
    }
    return best;
}

int task_hay_prompt(const task_hay *h, int depth_pct, task_prompt *out, char *err, size_t err_len) {
    memset(out, 0, sizeof *out);
    if (depth_pct < 0 || depth_pct > 100) return fail(err, err_len, "depth %d outside 0..100", depth_pct);
    int k = boundary_for_depth(h, depth_pct);
    /* content = prefix + units[0..k) + needle + units[k..n) + "\n\n" + question */
    sbuf c = {0};
    size_t hay_off = 0, needle_off = 0, needle_end = 0, hay_end = 0;
    int first = 1;
    if (h->prefix[0]) {
        sb_str(&c, h->prefix);
        first = 0;
    }
    hay_off = c.n;
    for (int i = 0; i <= h->n; i++) {
        if (i == k) {
            needle_off = c.n;
            if (!first) sb_add(&c, " ", 1);
            sb_str(&c, h->facts[0].sentence);
            needle_end = c.n;
            first = 0;
        }
        if (i == h->n) break;
        if (!first) sb_add(&c, " ", 1);
        sb_str(&c, h->u[i].text);
        first = 0;
    }
    hay_end = c.n;
    sb_str(&c, "\n\n");
    sb_str(&c, h->question);
    if (c.oom) {
        free(c.s);
        return fail(err, err_len, "out of memory building a prompt");
    }
    kvl_chat_msg msg = {"user", c.s};
    size_t cap = c.n + 4096;
    char *r = NULL;
    int64_t rl = -1;
    for (int attempt = 0; attempt < 2; attempt++) {
        r = malloc(cap);
        if (!r) break;
        rl = kvl_chat_apply(h->m, &msg, 1, 1, r, cap);
        if (rl >= 0 && (size_t)rl < cap) break;
        free(r);
        r = NULL;
        if (rl < 0) break;
        cap = (size_t)rl + 1;
    }
    if (!r) {
        free(c.s);
        return fail(err, err_len, "chat template failed (%s)", rl < 0 ? kvl_status_str((kvl_status)-rl) : "oom");
    }
    r[rl] = 0;
    const char *at = NULL;
    for (size_t i = 0; i + c.n <= (size_t)rl && !at; i++)
        if (!memcmp(r + i, c.s, c.n)) at = r + i;
    if (!at) {
        free(c.s);
        free(r);
        return fail(err, err_len, "chat template altered the user message (cannot locate the haystack)");
    }
    size_t base = (size_t)(at - r);
    out->text = r;
    out->text_len = (size_t)rl;
    /* what the model gets; tokens <= rendered bytes + BOS */
    out->tokens = malloc(((size_t)rl + 1) * sizeof *out->tokens);
    kvl_token *plain = malloc(((size_t)rl + 1) * sizeof *plain);
    int64_t nt = out->tokens ? kvl_chat_tokenize(h->m, &msg, 1, 1, out->tokens, rl + 1) : -1;
    free(c.s);
    int64_t npl = plain ? kvl_tokenize(h->m, r, (size_t)rl, 0, 1, plain, rl + 1) : -1;
    if (nt < 0 || nt > rl + 1 || nt > INT_MAX || npl < 0) {
        free(plain);
        task_prompt_free(out);
        return fail(err, err_len, "tokenization failed");
    }
    /* prefix counts of the rendered text index into the chat tokens (shifted
     * by the BOS the model adds) only if the two tokenizations agree, i.e.
     * the prompt has no control-token text of its own */
    int64_t bos = nt - npl;
    int same = bos >= 0 && bos <= 1 && !memcmp(out->tokens + bos, plain, (size_t)npl * sizeof *plain);
    free(plain);
    if (!same) {
        task_prompt_free(out);
        return fail(err, err_len, "the prompt contains special-token text (such as <|im_end|>); it is tokenized as "
                                  "text, so token positions cannot be located");
    }
    out->n_tokens = (int)nt;
    int hs = count_rendered(h->m, r, base + hay_off) + (int)bos;
    int np = count_rendered(h->m, r, base + needle_off) + (int)bos;
    int ne = count_rendered(h->m, r, base + needle_end) + (int)bos;
    int he = count_rendered(h->m, r, base + hay_end) + (int)bos;
    if (hs < (int)bos || np < (int)bos || ne < (int)bos || he < (int)bos) {
        task_prompt_free(out);
        return fail(err, err_len, "tokenization failed");
    }
    /* the passkey prefix is followed by a space that belongs to the first unit */
    out->hay_start = hs;
    out->needle_pos = np;
    out->hay_tokens = (he - hs) - (ne - np);
    out->hay_end = he;
    out->depth = out->hay_tokens > 0 ? 100.0 * (double)(np - hs) / (double)out->hay_tokens : 0.0;
    return 0;
}

/* ---- building ------------------------------------------------------------------------------------- */

static int make_facts(task_hay *h, const task_config *cfg, uint64_t seed, char *err, size_t err_len) {
    uint64_t r = rng_stream(seed, 0x6E6565646C65ull /* "needle" */, (uint64_t)cfg->kind);
    const task_corpus *cp = cfg->kind == TASK_PASSKEY ? NULL : cfg->corpus;
    fact *f = &h->facts[0];
    if (cfg->kind == TASK_NEEDLE && cfg->needle) {
        snprintf(f->key, sizeof f->key, "%s", "");
        if (strlen(cfg->answer) >= sizeof f->value || strlen(cfg->needle) >= sizeof f->sentence ||
            strlen(cfg->question) >= sizeof h->question)
            return fail(err, err_len, "custom needle, question or answer too long");
        snprintf(f->value, sizeof f->value, "%s", cfg->answer);
        snprintf(f->sentence, sizeof f->sentence, "%s", cfg->needle);
        snprintf(h->question, sizeof h->question, "%s", cfg->question);
        h->numeric = task_is_number(f->value);
        h->n_facts = 1;
        return 0;
    }
    if (cfg->kind == TASK_NEEDLE) {
        const needle_tpl *t = &NEEDLES[task_rng_below(&r, COUNT(NEEDLES))];
        for (int tries = 0;; tries++) {
            snprintf(f->key, sizeof f->key, "%s%s", PLACE_A[task_rng_below(&r, COUNT(PLACE_A))],
                     PLACE_B[task_rng_below(&r, COUNT(PLACE_B))]);
            gen_number(&r, 5 + (int)task_rng_below(&r, 3), f->value);
            if ((!in_corpus(cp, f->key) && !in_corpus(cp, f->value)) || tries > 100) break;
        }
        char key[sizeof f->key], val[sizeof f->value];
        memcpy(key, f->key, sizeof key);
        memcpy(val, f->value, sizeof val);
        snprintf(f->sentence, sizeof f->sentence, t->fact, key, val);
        snprintf(h->question, sizeof h->question, t->question, f->key);
        h->numeric = 1;
        h->n_facts = 1;
        return 0;
    }
    if (cfg->kind == TASK_PASSKEY) {
        gen_number(&r, 5, f->value);
        snprintf(f->sentence, sizeof f->sentence, "The pass key is %s. Remember it. %s is the pass key.", f->value,
                 f->value);
        snprintf(h->question, sizeof h->question, "What is the pass key? Answer with the number only.");
        h->numeric = 1;
        h->n_facts = 1;
        return 0;
    }
    /* multikey: distinct adjective-noun keys and distinct 7-digit values */
    int nk = cfg->n_keys > 0 ? cfg->n_keys : 4;
    if (nk > TASK_MAX_KEYS) return fail(err, err_len, "at most %d keys", TASK_MAX_KEYS);
    for (int i = 0; i < nk; i++) {
        fact *x = &h->facts[i];
        for (int tries = 0;; tries++) {
            snprintf(x->key, sizeof x->key, "%s-%s", ADJ[task_rng_below(&r, COUNT(ADJ))],
                     NOUN[task_rng_below(&r, COUNT(NOUN))]);
            gen_number(&r, 7, x->value);
            int dup = 0;
            for (int j = 0; j < i; j++)
                if (!strcmp(h->facts[j].key, x->key) || !strcmp(h->facts[j].value, x->value)) dup = 1;
            if (!dup && ((!in_corpus(cp, x->key) && !in_corpus(cp, x->value)) || tries > 100)) break;
            if (tries > 1000) return fail(err, err_len, "cannot draw %d distinct keys", nk);
        }
        char key[sizeof x->key], val[sizeof x->value]; /* copies: the format must not read the destination struct */
        memcpy(key, x->key, sizeof key);
        memcpy(val, x->value, sizeof val);
        snprintf(x->sentence, sizeof x->sentence, "The special magic number for %s is %s.", key, val);
    }
    snprintf(h->question, sizeof h->question,
             "What is the special magic number for %s mentioned in the text? Answer with the number only.",
             h->facts[0].key);
    h->numeric = 1;
    h->n_facts = nk;
    return 0;
}

/* Filler source: corpus sentences from a seeded start (wrapping), or the
 * passkey filler cycle. */
typedef struct filler {
    const task_hay *h;
    const task_corpus *c;
    int64_t next;
    int *cache; /* token counts by sentence index, -2 = unknown */
    int cache_n;
} filler;

static const char *filler_text(const filler *f, int64_t i) {
    if (f->c) return f->c->sent[i % f->c->n];
    return PASSKEY_FILLER[i % COUNT(PASSKEY_FILLER)];
}

static int filler_ntok(filler *f, int64_t i) {
    int idx = (int)(i % f->cache_n);
    if (f->cache[idx] == -2) f->cache[idx] = unit_tokens(f->h->m, filler_text(f, i));
    return f->cache[idx];
}

/* Actual token count of the prompt with the needle at 50%. */
static int prompt_len(const task_hay *h, char *err, size_t err_len) {
    task_prompt p;
    if (task_hay_prompt(h, 50, &p, err, err_len)) return -1;
    int n = p.n_tokens;
    task_prompt_free(&p);
    return n;
}

/* Append the lookahead filler unit (within the next window) whose size best
 * fills gap tokens; returns its size, 0 if none improves, -1 on error. */
static int fill_gap(task_hay *h, filler *f, int gap) {
    const int window = f->c ? 256 : COUNT(PASSKEY_FILLER);
    int64_t best = -1;
    int best_d = gap, best_n = 0;
    for (int64_t j = f->next; j < f->next + window; j++) {
        int nt = filler_ntok(f, j);
        if (nt < 0) return -1;
        int d = nt > gap ? nt - gap : gap - nt;
        if (d < best_d) best_d = d, best = j, best_n = nt;
    }
    if (best < 0) return 0;
    if (hay_push(h, -1, filler_text(f, best), best_n, 0)) return -1;
    if (f->c) f->next = best + 1; /* never repeat a sentence (passkey filler repeats by design) */
    return best_n;
}

int task_hay_build(const kvl_model *m, const task_config *cfg, uint64_t seed, int target, task_hay **out,
                   char *err, size_t err_len) {
    *out = NULL;
    if (cfg->kind != TASK_PASSKEY && (!cfg->corpus || cfg->corpus->n == 0))
        return fail(err, err_len, "%s needs a haystack corpus", task_kind_name(cfg->kind));
    if (cfg->kind == TASK_NEEDLE && (cfg->needle || cfg->question || cfg->answer) &&
        !(cfg->needle && cfg->question && cfg->answer && cfg->needle[0] && cfg->question[0] && cfg->answer[0]))
        return fail(err, err_len, "a custom needle needs all of --needle, --question and --answer");
    task_hay *h = calloc(1, sizeof *h);
    if (!h) return fail(err, err_len, "out of memory");
    h->m = m;
    h->kind = cfg->kind;
    h->prefix = cfg->kind == TASK_PASSKEY ? PASSKEY_PREFIX : "";
    filler f = {.h = h, .c = cfg->kind == TASK_PASSKEY ? NULL : cfg->corpus};
    int rc = make_facts(h, cfg, seed, err, err_len);
    if (rc) goto out;
    /* distractor facts are units like the filler */
    int n_dis = h->n_facts - 1;
    for (int i = 1; i < h->n_facts; i++)
        if (hay_push(h, -1, h->facts[i].sentence, unit_tokens(m, h->facts[i].sentence), i)) goto oom;
    int overhead = prompt_len(h, err, err_len);
    if (overhead < 0) {
        rc = -1;
        goto out;
    }
    int budget = target - overhead;
    if (budget < 8) {
        rc = fail(err, err_len, "target length %d is too short for %s: the prompt without filler is already %d tokens",
                  target, task_kind_name(cfg->kind), overhead);
        goto out;
    }
    /* remove distractors for now; they are scattered after the filler is chosen */
    h->n = 0;
    f.cache_n = f.c ? f.c->n : COUNT(PASSKEY_FILLER);
    f.cache = malloc((size_t)f.cache_n * sizeof *f.cache);
    if (!f.cache) goto oom;
    for (int i = 0; i < f.cache_n; i++) f.cache[i] = -2;
    uint64_t r = rng_stream(seed, 0x686179ull /* "hay" */, 0);
    f.next = f.c ? (int64_t)task_rng_below(&r, (uint64_t)f.c->n) : 0;
    int used = 0;
    for (;;) {
        int nt = filler_ntok(&f, f.next);
        if (nt < 0) goto tokfail;
        if (used + nt > budget) break;
        if (hay_push(h, -1, filler_text(&f, f.next), nt, 0)) goto oom;
        used += nt;
        f.next++;
    }
    if (budget - used > 0) {
        int got = fill_gap(h, &f, budget - used);
        if (got < 0) goto tokfail;
        used += got;
    }
    /* scatter the distractors at random token positions (fixed per seed and length) */
    if (n_dis > 0) {
        uint64_t rp = rng_stream(seed, 0x706F73ull /* "pos" */, (uint64_t)target);
        for (int i = 1; i < h->n_facts; i++) {
            int64_t total = 0;
            for (int j = 0; j < h->n; j++) total += h->u[j].ntok;
            int64_t want = (int64_t)task_rng_below(&rp, (uint64_t)total + 1), cum = 0;
            int at = 0;
            while (at < h->n && cum + h->u[at].ntok / 2 < want) cum += h->u[at++].ntok;
            /* never adjacent to another distractor */
            for (int tries = 0; tries < h->n; tries++) {
                int clash = 0;
                for (int j = at - 1; j <= at; j++)
                    if (j >= 0 && j < h->n && h->u[j].fact) clash = 1;
                if (!clash) break;
                at = (at + 1) % (h->n + 1);
            }
            if (hay_push(h, at, h->facts[i].sentence, unit_tokens(m, h->facts[i].sentence), i)) goto oom;
        }
    }
    /* correct against the real tokenization: drop or add whole sentences */
    int tol = target / 200; /* aim within 0.5%; every depth must stay within 2% */
    for (int iter = 0; iter < 16; iter++) {
        int n = prompt_len(h, err, err_len);
        if (n < 0) {
            rc = -1;
            goto out;
        }
        int diff = n - target;
        if (diff <= tol && -diff <= tol) break;
        if (diff > 0) {
            /* drop the last filler unit (never a distractor) */
            int j = h->n - 1;
            while (j >= 0 && h->u[j].fact) j--;
            if (j < 0) break;
            memmove(h->u + j, h->u + j + 1, (size_t)(h->n - j - 1) * sizeof *h->u);
            h->n--;
        } else {
            int got = fill_gap(h, &f, -diff);
            if (got < 0) goto tokfail;
            if (got == 0) break;
        }
    }
    {
        int n = prompt_len(h, err, err_len);
        if (n < 0) {
            rc = -1;
            goto out;
        }
        if ((n > target ? n - target : target - n) * 50 > target) {
            rc = fail(err, err_len, "cannot fit %s to %d tokens (got %d)", task_kind_name(cfg->kind), target, n);
            goto out;
        }
    }
    goto out;
oom:
    rc = fail(err, err_len, "out of memory building a haystack");
    goto out;
tokfail:
    rc = fail(err, err_len, "tokenization failed building a haystack");
out:
    free(f.cache);
    if (rc) task_hay_free(h);
    else *out = h;
    return rc;
}

/* ---- scoring --------------------------------------------------------------------------------------- */

int task_is_number(const char *v) {
    if (!v || !*v) return 0;
    for (; *v; v++)
        if (!is_digit((unsigned char)*v)) return 0;
    return 1;
}

/* Trim non-alphanumerics (ASCII) from both ends of s[0..n). */
static void trim_punct(const char **s, size_t *n) {
    while (*n && !is_wordc((unsigned char)(*s)[0])) (*s)++, (*n)--;
    while (*n && !is_wordc((unsigned char)(*s)[*n - 1])) (*n)--;
}

int task_score(const char *answer, const char *expected) {
    if (!answer || !expected) return 0;
    const char *e = expected;
    size_t en = strlen(e);
    trim_punct(&e, &en);
    if (en == 0) return 0;
    int numeric = 1;
    for (size_t i = 0; i < en; i++)
        if (!is_digit((unsigned char)e[i])) numeric = 0;
    const char *a = answer;
    size_t an = strlen(a);
    if (numeric) {
        char num[128];
        for (size_t i = 0; i < an;) {
            if (!is_digit((unsigned char)a[i]) || (i > 0 && is_digit((unsigned char)a[i - 1]))) {
                i++;
                continue;
            }
            /* a maximal number starting at i */
            size_t j = i, nd = 0;
            int ok = 1;
            while (j < an && is_digit((unsigned char)a[j])) {
                if (nd + 1 < sizeof num) num[nd++] = a[j];
                j++;
            }
            size_t first_group = j - i;
            /* canonical thousands groups: 1-3 leading digits, then ",ddd" groups */
            while (first_group <= 3 && j + 3 < an && a[j] == ',' && is_digit((unsigned char)a[j + 1]) &&
                   is_digit((unsigned char)a[j + 2]) && is_digit((unsigned char)a[j + 3]) &&
                   (j + 4 >= an || !is_digit((unsigned char)a[j + 4]))) {
                for (int k = 1; k <= 3; k++)
                    if (nd + 1 < sizeof num) num[nd++] = a[j + (size_t)k];
                j += 4;
            }
            if (j + 1 < an && a[j] == '.' && is_digit((unsigned char)a[j + 1])) { /* decimal: not an integer */
                ok = 0;
                for (j++; j < an && is_digit((unsigned char)a[j]);) j++;
            }
            num[nd] = 0;
            if (ok && nd == en && !memcmp(num, e, en)) return 1;
            i = j;
        }
        return 0;
    }
    for (size_t i = 0; i + en <= an; i++) {
        if (i > 0 && is_wordc((unsigned char)a[i - 1])) continue;
        size_t k = 0;
        while (k < en && to_lower((unsigned char)a[i + k]) == to_lower((unsigned char)e[k])) k++;
        if (k < en) continue;
        if (i + en < an && is_wordc((unsigned char)a[i + en])) continue;
        return 1;
    }
    return 0;
}
