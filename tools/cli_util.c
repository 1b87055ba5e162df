/* CLI helpers: one-line error exits, strict number/size parsing, UTF-8
 * validation, file reading, timing, model/context setup with clear messages,
 * a minimal JSON writer and a terminal-only progress bar. */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void vmsg(const char *fmt, va_list ap) {
    char buf[1024];
    vsnprintf(buf, sizeof buf, fmt, ap);
    for (char *c = buf; *c; c++)
        if (*c == '\n' || *c == '\r') *c = ' ';
    size_t n = strlen(buf);
    while (n > 0 && buf[n - 1] == ' ') buf[--n] = 0;
    fflush(stdout);
    fprintf(stderr, "kvlite: %s\n", buf);
}

void cli_die(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmsg(fmt, ap);
    va_end(ap);
    exit(code);
}

void cli_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmsg(fmt, ap);
    va_end(ap);
}

/* ---- numbers ------------------------------------------------------------------ */

int cli_parse_int(const char *s, long lo, long hi, int *out) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi || v < INT_MIN || v > INT_MAX) return -1;
    *out = (int)v;
    return 0;
}

int cli_parse_float(const char *s, double lo, double hi, float *out) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || end == s || !isfinite(v) || v < lo || v > hi) return -1;
    *out = (float)v;
    return 0;
}

int cli_parse_u64(const char *s, uint64_t *out) {
    if (!s || !*s || *s == '-' || *s == '+') return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end || end == s) return -1;
    *out = (uint64_t)v;
    return 0;
}

int cli_parse_size(const char *s, size_t *out) {
    if (!s || !*s || *s == '-' || *s == '+') return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v) || v < 0) return -1;
    double mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = 1024.0; end++; break;
    case 'm': case 'M': mul = 1024.0 * 1024; end++; break;
    case 'g': case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
    case 't': case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (mul > 1 && *end == 'i') end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return -1;
    double bytes = v * mul;
    if (bytes >= (double)SIZE_MAX) return -1;
    *out = (size_t)bytes;
    return 0;
}

/* ---- UTF-8 -------------------------------------------------------------------- */

long cli_utf8_invalid_at(const char *buf, size_t len) {
    const char *nul = memchr(buf, 0, len);
    int64_t bad = kvl_utf8_invalid_at(buf, nul ? (size_t)(nul - buf) : len);
    if (bad >= 0) return (long)bad;
    return nul ? (long)(nul - buf) : -1;
}

/* ---- files, time, memory --------------------------------------------------------- */

char *cli_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) cli_die(CLI_EXIT_RUNTIME, "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode))
        cli_die(CLI_EXIT_RUNTIME, "cannot read '%s': is a directory", path);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) cli_die(CLI_EXIT_RUNTIME, "out of memory reading '%s'", path);
    for (;;) {
        if (n + 1 >= cap) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) cli_die(CLI_EXIT_RUNTIME, "out of memory reading '%s'", path);
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) cli_die(CLI_EXIT_RUNTIME, "cannot read '%s': %s", path, strerror(errno));
    fclose(f);
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

size_t cli_peak_rss(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (size_t)ru.ru_maxrss * 1024; /* Linux reports KiB */
}

/* ---- model / context / tokens ---------------------------------------------------- */

kvl_model *cli_load_model(const char *path) {
    if (!path) cli_die(CLI_EXIT_USAGE, "missing -m MODEL");
    struct stat st;
    if (stat(path, &st) != 0) cli_die(CLI_EXIT_RUNTIME, "cannot open model '%s': %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) cli_die(CLI_EXIT_RUNTIME, "cannot open model '%s': is a directory", path);
    int tty = isatty(2);
    if (tty) fprintf(stderr, "loading %s ...", path);
    char err[512] = "";
    kvl_model *m = NULL;
    kvl_status s = kvl_model_load(path, &m, err, sizeof err);
    if (tty) fprintf(stderr, "\r\033[K");
    if (s != KVL_OK || !m) {
        if (err[0]) cli_die(CLI_EXIT_RUNTIME, "cannot load model '%s': %s", path, err);
        cli_die(CLI_EXIT_RUNTIME, "cannot load model '%s': %s", path, kvl_status_str(s));
    }
    return m;
}

void cli_parse_keep(const char *s, int *keep, float *frac) {
    size_t n = strlen(s);
    *keep = 0;
    *frac = 0;
    if (n > 1 && s[n - 1] == '%') {
        char tmp[32];
        float pct;
        if (n - 1 >= sizeof tmp) cli_die(CLI_EXIT_USAGE, "--kv-keep: malformed '%s'", s);
        memcpy(tmp, s, n - 1);
        tmp[n - 1] = 0;
        if (cli_parse_float(tmp, 1e-6, 100, &pct))
            cli_die(CLI_EXIT_USAGE, "--kv-keep: expected a percentage in (0, 100], got '%s'", s);
        *frac = pct / 100.0f;
    } else if (cli_parse_int(s, 1, 1 << 24, keep))
        cli_die(CLI_EXIT_USAGE, "--kv-keep: expected a token count >= 1 or a percentage like 10%%, got '%s'", s);
}

kvl_ctx *cli_create_ctx(const kvl_model *m, const cli_opts *o, const char *codec, int n_ctx) {
    kvl_ctx_params p;
    kvl_ctx_params_default(&p);
    p.n_ctx = n_ctx;
    p.n_threads = o->n_threads;
    const char *codec_given = codec; /* a reference configuration: full cache, no policy */
    if (codec) p.kv_codec = codec; /* exactly this codec (e.g. the f32 reference of eval kld) */
    else {                         /* the user's KV configuration */
        p.kv_codec = o->kv_k ? o->kv_k : o->kv;
        p.kv_codec_v = o->kv_v ? o->kv_v : o->kv_k ? o->kv : NULL;
        p.kv_layers = o->kv_layers;
        codec = o->kv;
    }
    p.kv_budget_bytes = codec_given ? 0 : o->kv_budget;
    if (codec_given == NULL) { /* the user's KV configuration: the eviction policy too */
        p.kv_policy = o->kv_policy;
        if (o->kv_keep) cli_parse_keep(o->kv_keep, &p.kv_keep, &p.kv_keep_frac);
    }
    if (o->n_batch > 0) p.n_batch = o->n_batch;
    if (o->page_tokens > 0) p.page_tokens = o->page_tokens;
    p.no_simd = getenv("KVL_NO_SIMD") != NULL; /* testing switch: scalar reference kernels */
    p.exact_matmul = o->exact;
    /* --device cpu|cuda (the reference configurations of eval kld / kv-error stay on the CPU) */
    if (o->device && strcmp(o->device, "cpu")) {
        if (strcmp(o->device, "cuda")) cli_die(CLI_EXIT_USAGE, "unknown --device '%s' (have: cpu, cuda)", o->device);
        if (!codec_given) p.device = KVL_DEVICE_CUDA;
    }
    char err[512] = "";
    kvl_ctx *c = NULL;
    kvl_status s = kvl_ctx_create(m, &p, &c, err, sizeof err);
    if (s != KVL_OK || !c) {
        int code = s == KVL_ERR_ARG || s == KVL_ERR_UNSUPPORTED ? CLI_EXIT_USAGE : CLI_EXIT_RUNTIME;
        if (err[0]) cli_die(code, "%s", err);
        cli_die(code, "cannot create context (kv %s): %s", codec ? codec : "default", kvl_status_str(s));
    }
    return c;
}

const char *cli_ctx_msg(const kvl_ctx *c, kvl_status s) {
    const char *e = c ? kvl_ctx_error(c) : NULL;
    return e && e[0] ? e : kvl_status_str(s);
}

kvl_token *cli_tokenize(const kvl_model *m, const char *text, size_t len, int add_bos,
                        int parse_special, int64_t *n_out) {
    if (len > KVL_TOKENIZE_MAX_BYTES)
        cli_die(CLI_EXIT_RUNTIME, "text is %zu bytes; the tokenizer takes at most %zu bytes (256 MiB)", len,
                (size_t)KVL_TOKENIZE_MAX_BYTES);
    int64_t cap = (int64_t)len + 16;
    kvl_token *t = malloc((size_t)cap * sizeof *t);
    if (!t) cli_die(CLI_EXIT_RUNTIME, "out of memory tokenizing %zu bytes", len);
    int64_t n = kvl_tokenize(m, text, len, add_bos, parse_special, t, cap);
    if (n > cap) {
        cap = n;
        kvl_token *nt = realloc(t, (size_t)cap * sizeof *t);
        if (!nt) cli_die(CLI_EXIT_RUNTIME, "out of memory tokenizing %zu bytes", len);
        t = nt;
        n = kvl_tokenize(m, text, len, add_bos, parse_special, t, cap);
    }
    if (n < 0) cli_die(CLI_EXIT_RUNTIME, "tokenization failed: %s", kvl_status_str((kvl_status)-n));
    *n_out = n;
    return t;
}

kvl_token *cli_chat_tokenize(const kvl_model *m, const kvl_chat_msg *msgs, int n_msgs, int add_assistant,
                             int64_t *n_out) {
    /* tokens <= rendered bytes + BOS, so one call with that room suffices */
    int64_t len = kvl_chat_apply(m, msgs, n_msgs, add_assistant, NULL, 0);
    if (len < 0) cli_die(CLI_EXIT_RUNTIME, "chat template failed: %s", kvl_status_str((kvl_status)-len));
    if ((uint64_t)len > KVL_TOKENIZE_MAX_BYTES)
        cli_die(CLI_EXIT_RUNTIME, "conversation is %lld bytes; the tokenizer takes at most %zu bytes (256 MiB)",
                (long long)len, (size_t)KVL_TOKENIZE_MAX_BYTES);
    int64_t cap = len + 1;
    kvl_token *t = malloc((size_t)cap * sizeof *t);
    if (!t) cli_die(CLI_EXIT_RUNTIME, "out of memory tokenizing a %lld-byte conversation", (long long)len);
    int64_t n = kvl_chat_tokenize(m, msgs, n_msgs, add_assistant, t, cap);
    if (n < 0) cli_die(CLI_EXIT_RUNTIME, "chat tokenization failed: %s", kvl_status_str((kvl_status)-n));
    if (n > cap) /* cannot happen: each token covers at least one byte */
        cli_die(CLI_EXIT_RUNTIME, "chat tokenization returned %lld tokens for %lld bytes", (long long)n, (long long)len);
    *n_out = n;
    return t;
}

/* ---- JSON ------------------------------------------------------------------------ */

void cli_json_escape(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        case '\b': fputs("\\b", f); break;
        case '\f': fputs("\\f", f); break;
        default:
            if (*p < 0x20) fprintf(f, "\\u%04x", *p);
            else fputc(*p, f);
        }
    }
    fputc('"', f);
}

static void json_key(cli_json *j, const char *key) {
    fputs(j->n++ ? ", " : "", j->f);
    cli_json_escape(j->f, key);
    fputs(": ", j->f);
}

void cli_json_begin(cli_json *j, FILE *f) {
    j->f = f;
    j->n = 0;
    fputc('{', f);
}

void cli_json_str(cli_json *j, const char *key, const char *val) {
    json_key(j, key);
    cli_json_escape(j->f, val);
}

void cli_json_int(cli_json *j, const char *key, long long val) {
    json_key(j, key);
    fprintf(j->f, "%lld", val);
}

static void json_double(FILE *f, double v) {
    if (isfinite(v)) fprintf(f, "%.17g", v);
    else fputs("null", f); /* JSON has no inf/nan */
}

void cli_json_num(cli_json *j, const char *key, double val) {
    json_key(j, key);
    json_double(j->f, val);
}

void cli_json_bool(cli_json *j, const char *key, int val) {
    json_key(j, key);
    fputs(val ? "true" : "false", j->f);
}

void cli_json_num_array(cli_json *j, const char *key, const double *v, int n) {
    json_key(j, key);
    fputc('[', j->f);
    for (int i = 0; i < n; i++) {
        if (i) fputs(", ", j->f);
        json_double(j->f, v[i]);
    }
    fputc(']', j->f);
}

void cli_json_end(cli_json *j) {
    fputs("}\n", j->f);
    fflush(j->f);
}

/* ---- progress bar ------------------------------------------------------------------ */

void cli_progress_begin(cli_progress *p, const char *label, long total) {
    p->enabled = isatty(2) && total > 0;
    p->total = total;
    p->label = label;
    p->t0 = cli_now();
    cli_progress_update(p, 0);
}

void cli_progress_update(cli_progress *p, long done) {
    if (!p->enabled) return;
    enum { W = 30 };
    long fill = p->total ? done * W / p->total : W;
    char bar[W + 1];
    for (int i = 0; i < W; i++) bar[i] = i < fill ? '#' : '.';
    bar[W] = 0;
    double el = cli_now() - p->t0;
    fprintf(stderr, "\r%s [%s] %ld/%ld", p->label, bar, done, p->total);
    if (done > 0 && done < p->total) fprintf(stderr, "  eta %.0fs", el / (double)done * (double)(p->total - done));
    fprintf(stderr, "\033[K");
    fflush(stderr);
}

void cli_progress_end(cli_progress *p) {
    if (!p->enabled) return;
    fprintf(stderr, "\r\033[K");
    fflush(stderr);
}

double cli_logsumexp(const float *l, int n, int *amax) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[best]) best = i;
    const double mx = l[best];
    double s = 0;
    for (int i = 0; i < n; i++) s += exp((double)l[i] - mx);
    if (amax) *amax = best;
    return mx + log(s);
}

double cli_kl_div(const float *a, double lse_a, const float *b, double lse_b, int n) {
    double kl = 0;
    for (int i = 0; i < n; i++) {
        const double la = (double)a[i] - lse_a, p = exp(la);
        if (p > 0) kl += p * (la - ((double)b[i] - lse_b));
    }
    return kl > 0 ? kl : 0; /* rounding can give tiny negatives */
}
