/* KV file commands of the CLI and the session helpers chat uses:
 *   kv info FILE                       what a session/KV file holds; every checksum verified, no model
 *   kv export -m MODEL -f TEXT -o FILE prefill a text, write its KV (kvl_seq_save; with --level L
 *                                      the CacheGen format, kvl_seq_save_cachegen)
 *   kv import -m MODEL -i FILE [-p TEXT -n N]  verify and load a KV file (either format), optionally continue
 *   kv eval (tools/cmd_kv_eval.c)      CacheGen levels vs page codecs
 * A bad file is a one-line error and exit 1. The context of export/import
 * follows the file's recorded KV configuration unless --kv* flags are given;
 * a CacheGen file records no page codec: it loads into the --kv codec
 * (default f16). */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------------------- */

static void mkdir_p(char *path) {
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(path, 0700) != 0 && errno != EEXIST) cli_die(CLI_EXIT_RUNTIME, "cannot create directory %s: %s", path, strerror(errno));
        *p = '/';
    }
    if (mkdir(path, 0700) != 0 && errno != EEXIST) cli_die(CLI_EXIT_RUNTIME, "cannot create directory %s: %s", path, strerror(errno));
}

char *cli_session_store(const cli_opts *o) {
    char *dir;
    if (o->store) {
        dir = strdup(o->store);
    } else {
        const char *home = getenv("HOME");
        if (!home || !home[0]) cli_die(CLI_EXIT_USAGE, "HOME is not set: give --store DIR");
        const size_t n = strlen(home) + 32;
        dir = malloc(n);
        if (dir) snprintf(dir, n, "%s/.cache/kvlite/sessions", home);
    }
    if (!dir) cli_die(CLI_EXIT_RUNTIME, "out of memory");
    mkdir_p(dir);
    return dir;
}

void *cli_read_session_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) cli_die(CLI_EXIT_RUNTIME, "%s: not a regular file", path);
    fclose(f);
    return cli_read_file(path, len);
}

void cli_kv_from_session(cli_opts *o, const void *buf, size_t len, const char *what, char **keep, int *max_pos) {
    enum { CAP = 8192 };
    char *s = malloc(3 * CAP);
    if (!s) cli_die(CLI_EXIT_RUNTIME, "out of memory");
    char err[512] = "";
    int page = 0;
    if (kvl_session_kv_params(buf, len, s, s + CAP, s + 2 * CAP, CAP, &page, max_pos, err, sizeof err) != KVL_OK)
        cli_die(CLI_EXIT_RUNTIME, "%s: %s", what, err);
    *keep = s;
    if (o->kv_set || o->kv_k || o->kv_v || o->kv_layers) return; /* the user's configuration: the load checks it */
    o->kv = s;
    o->kv_k = s;
    o->kv_v = s + CAP;
    o->kv_layers = s[2 * CAP] ? s + 2 * CAP : NULL;
    o->page_tokens = page;
}

/* Context length for export/import: --ctx, else at least need, default min(train, 4096). */
static int kv_n_ctx(const cli_opts *o, const kvl_model *m, int need) {
    if (o->n_ctx > 0) return o->n_ctx;
    kvl_model_info info;
    kvl_model_get_info(m, &info);
    int n = info.n_ctx_train > 0 && info.n_ctx_train < 4096 ? info.n_ctx_train : 4096;
    return need > n ? need : n;
}

/* ---- kv info ------------------------------------------------------------------------- */

static int kv_info(const cli_opts *o) {
    size_t len = 0;
    void *buf = cli_read_session_file(o->input, &len);
    if (!buf) cli_die(CLI_EXIT_RUNTIME, "kv info: cannot open '%s': %s", o->input, strerror(errno));
    char *text = NULL, err[512] = "";
    if (kvl_cachegen_is_file(buf, len) ? kvl_cachegen_describe(buf, len, &text, NULL, err, sizeof err) != KVL_OK
                                       : kvl_session_describe(buf, len, &text, err, sizeof err) != KVL_OK)
        cli_die(CLI_EXIT_RUNTIME, "kv info: %s: %s", o->input, err);
    printf("%s: ", o->input);
    fputs(text, stdout);
    free(text);
    free(buf);
    return CLI_EXIT_OK;
}

/* ---- kv export ----------------------------------------------------------------------- */

static int kv_export(const cli_opts *o) {
    size_t len = 0;
    char *text = cli_read_file(o->file, &len);
    if (cli_utf8_invalid_at(text, len) >= 0) cli_die(CLI_EXIT_RUNTIME, "kv export: %s is not valid UTF-8", o->file);
    kvl_model *m = cli_load_model(o->model);
    int64_t n = 0;
    kvl_token *toks = cli_tokenize(m, text, len, -1, !o->no_special, &n);
    if (n == 0) cli_die(CLI_EXIT_RUNTIME, "kv export: %s has no tokens", o->file);
    const int n_ctx = kv_n_ctx(o, m, n > (1 << 24) ? (1 << 24) : (int)n);
    if (n > n_ctx) cli_die(CLI_EXIT_RUNTIME, "kv export: %lld tokens exceed the context of %d (raise --ctx)", (long long)n, n_ctx);
    kvl_ctx *ctx = cli_create_ctx(m, o, NULL, n_ctx);
    kvl_seq *s = NULL;
    kvl_status st = kvl_seq_create(ctx, &s);
    if (st == KVL_OK) st = kvl_prefill(s, toks, (int)n, NULL, NULL);
    if (st != KVL_OK) cli_die(CLI_EXIT_RUNTIME, "kv export: prefill failed: %s", cli_ctx_msg(ctx, st));
    void *buf = NULL;
    size_t blen = 0;
    if (o->cg_level >= 0) {
        const kvl_cachegen_opts cg = {o->cg_level, o->cg_scale, o->cg_group, o->cg_chan};
        if ((st = kvl_seq_save_cachegen(s, &cg, &buf, &blen)) != KVL_OK)
            cli_die(CLI_EXIT_RUNTIME, "kv export: %s", cli_ctx_msg(ctx, st));
    } else if ((st = kvl_seq_save(s, &buf, &blen)) != KVL_OK) {
        cli_die(CLI_EXIT_RUNTIME, "kv export: %s", cli_ctx_msg(ctx, st));
    }
    FILE *f = fopen(o->output, "wb");
    if (!f || fwrite(buf, 1, blen, f) != blen || fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0)
        cli_die(CLI_EXIT_RUNTIME, "kv export: cannot write '%s': %s", o->output, strerror(errno));
    kvl_kv_stats ks;
    kvl_seq_kv_stats(s, &ks);
    if (o->cg_level >= 0) {
        kvl_model_info mi;
        kvl_model_get_info(m, &mi);
        const double values = (double)n * mi.n_layer * mi.n_head_kv * mi.head_dim * 2;
        fprintf(stderr, "kv export: %lld tokens from codec %s, CacheGen level %d, %zu bytes (%.3f bits/value) -> %s\n",
                (long long)n, ks.codec ? ks.codec : "?", o->cg_level, blen, 8.0 * (double)blen / values, o->output);
    } else {
        fprintf(stderr, "kv export: %lld tokens, codec %s, %zu bytes -> %s\n", (long long)n, ks.codec ? ks.codec : "?", blen,
                o->output);
    }
    free(buf);
    kvl_seq_free(s);
    kvl_ctx_free(ctx);
    kvl_model_free(m);
    free(toks);
    free(text);
    return CLI_EXIT_OK;
}

/* ---- kv import ----------------------------------------------------------------------- */

static int kv_import(const cli_opts *oin) {
    cli_opts o = *oin;
    size_t len = 0;
    void *buf = cli_read_session_file(o.input, &len);
    if (!buf) cli_die(CLI_EXIT_RUNTIME, "kv import: cannot open '%s': %s", o.input, strerror(errno));
    char *keep = NULL;
    int max_pos = 0;
    const int cg = kvl_cachegen_is_file(buf, len);
    if (cg) { /* verified in full before the model loads */
        char *text = NULL, err[512] = "";
        if (kvl_cachegen_describe(buf, len, &text, &max_pos, err, sizeof err) != KVL_OK) {
            free(buf);
            cli_die(CLI_EXIT_RUNTIME, "kv import: %s: %s", o.input, err);
        }
        free(text);
    } else {
        cli_kv_from_session(&o, buf, len, "kv import", &keep, &max_pos);
    }
    kvl_model *m = cli_load_model(o.model);
    const int n_ctx = kv_n_ctx(&o, m, max_pos + 1);
    kvl_ctx *ctx = cli_create_ctx(m, &o, NULL, n_ctx);
    kvl_seq *s = NULL;
    kvl_status st = cg ? kvl_seq_load_cachegen(ctx, buf, len, &s) : kvl_seq_load(ctx, buf, len, &s);
    free(buf); /* before any exit: the leak checker counts a lost buffer */
    if (st != KVL_OK) cli_die(CLI_EXIT_RUNTIME, "kv import: %s: %s", o.input, cli_ctx_msg(ctx, st));
    kvl_kv_stats ks;
    kvl_seq_kv_stats(s, &ks);
    fprintf(stderr, "kv import: %s: loaded %d tokens (%scodec %s, %d pages), computed 0\n", o.input, kvl_seq_pos(s),
            cg ? "CacheGen file decoded into " : "", ks.codec ? ks.codec : "?", ks.n_pages);
    int rc = CLI_EXIT_OK;
    if (o.prompt) {
        kvl_model_info info;
        kvl_model_get_info(m, &info);
        int64_t n = 0;
        kvl_token *t = cli_tokenize(m, o.prompt, strlen(o.prompt), 0, !o.no_special, &n);
        float *logits = malloc(sizeof(float) * (size_t)info.n_vocab);
        kvl_sampler *smp = NULL;
        char piece[256];
        if (!logits || kvl_sampler_create(&o.sp, info.n_vocab, &smp) != KVL_OK) cli_die(CLI_EXIT_RUNTIME, "out of memory");
        if (n > 0 && (st = kvl_prefill(s, t, (int)n, logits, NULL)) != KVL_OK)
            cli_die(CLI_EXIT_RUNTIME, "kv import: prefill failed: %s", cli_ctx_msg(ctx, st));
        for (int i = 0; n > 0 && (o.n_predict < 0 || i < o.n_predict); i++) {
            const kvl_token nt = kvl_sampler_sample(smp, logits);
            kvl_sampler_accept(smp, nt);
            if (kvl_model_is_eog(m, nt)) break;
            const int pl = kvl_token_to_piece(m, nt, 0, piece, sizeof piece);
            if (pl > 0 && pl <= (int)sizeof piece) fwrite(piece, 1, (size_t)pl, stdout);
            fflush(stdout);
            if (kvl_seq_pos(s) >= n_ctx) break;
            if ((st = kvl_decode(s, nt, logits)) != KVL_OK) {
                cli_warn("kv import: decode failed: %s", cli_ctx_msg(ctx, st));
                rc = CLI_EXIT_RUNTIME;
                break;
            }
        }
        if (n > 0) fputc('\n', stdout);
        kvl_sampler_free(smp);
        free(logits);
        free(t);
    }
    kvl_seq_free(s);
    kvl_ctx_free(ctx);
    kvl_model_free(m);
    free(keep);
    return rc;
}

int cmd_kv(const cli_opts *o) {
    if (!strcmp(o->subcmd, "info")) return kv_info(o);
    if (!strcmp(o->subcmd, "export")) return kv_export(o);
    if (!strcmp(o->subcmd, "eval")) return cmd_kv_eval(o);
    return kv_import(o);
}
