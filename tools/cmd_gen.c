/* Text commands of the CLI: `run` (one prompt, streamed answer), `chat`
 * (multi-turn over stdin, KV cache kept between turns: each turn tokenizes
 * the whole conversation with the chat template and prefills only the tokens
 * beyond the cached prefix) and `tokenize`. Chats are tokenized with
 * kvl_chat_tokenize only, so message text never becomes control tokens. */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- small growable arrays -------------------------------------------------------- */

typedef struct tokvec {
    kvl_token *v;
    int64_t n, cap;
} tokvec;

static void tokvec_push(tokvec *t, const kvl_token *src, int64_t n) {
    if (n <= 0) return; /* memcpy from a NULL source is undefined even for 0 bytes */
    if (t->n + n > t->cap) {
        int64_t cap = t->cap ? t->cap : 256;
        while (cap < t->n + n) cap *= 2;
        kvl_token *nv = realloc(t->v, (size_t)cap * sizeof *nv);
        if (!nv) cli_die(CLI_EXIT_RUNTIME, "out of memory");
        t->v = nv;
        t->cap = cap;
    }
    memcpy(t->v + t->n, src, (size_t)n * sizeof *src);
    t->n += n;
}

typedef struct strbuf {
    char *s;
    size_t n, cap;
} strbuf;

static void strbuf_add(strbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) cli_die(CLI_EXIT_RUNTIME, "out of memory");
        b->s = ns;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

/* ---- shared pieces ------------------------------------------------------------------ */

/* Context length for run/chat: --ctx, else the training context capped at 4096. */
static int gen_n_ctx(const cli_opts *o, const kvl_model_info *info) {
    if (o->n_ctx > 0) return o->n_ctx;
    int n = info->n_ctx_train > 0 ? info->n_ctx_train : 4096;
    return n < 4096 ? n : 4096;
}

static void check_utf8(const char *text, size_t len, const char *what) {
    long bad = cli_utf8_invalid_at(text, len);
    if (bad >= 0) cli_die(CLI_EXIT_RUNTIME, "%s is not valid UTF-8 (byte %ld)", what, bad);
}

/* Messages of a one-shot chat prompt (run --chat, tokenize --chat): the
 * optional --system message and text as the user message. */
static int prompt_msgs(const cli_opts *o, const char *text, kvl_chat_msg msgs[2]) {
    int n = 0;
    if (o->system) msgs[n++] = (kvl_chat_msg){"system", o->system};
    msgs[n++] = (kvl_chat_msg){"user", text};
    return n;
}

typedef struct gen_state {
    const kvl_model *m;
    kvl_ctx *ctx;
    kvl_seq *seq;
    kvl_sampler *smp;
    float *logits; /* [n_vocab] logits of the last processed token */
    int n_ctx;
    char *piece;
    int piece_cap;
    tokvec cached; /* tokens whose K/V are in seq, in order */
    double t_decode;
    int64_t n_decoded;
    int64_t turn_reused, turn_prefilled; /* chat: tokens reused / prefilled by the last turn */
    tokvec emitted; /* run: every token gen_generate emitted (for --ids) */
    int dev_sample; /* --device cuda: tokens drawn on the device (kvl_seq_sampled), no logits downloaded */
} gen_state;

static void gen_init(gen_state *g, const kvl_model *m, kvl_ctx *ctx, const cli_opts *o, int n_ctx) {
    memset(g, 0, sizeof *g);
    kvl_model_info info;
    kvl_model_get_info(m, &info);
    g->m = m;
    g->ctx = ctx;
    g->n_ctx = n_ctx;
    g->logits = malloc((size_t)info.n_vocab * sizeof *g->logits);
    g->piece_cap = 256;
    g->piece = malloc((size_t)g->piece_cap);
    if (!g->logits || !g->piece) cli_die(CLI_EXIT_RUNTIME, "out of memory");
    kvl_status s = kvl_sampler_create(&o->sp, info.n_vocab, &g->smp);
    if (s != KVL_OK) cli_die(CLI_EXIT_USAGE, "invalid sampling parameters: %s", kvl_status_str(s));
    s = kvl_seq_create(ctx, &g->seq);
    if (s != KVL_OK) cli_die(CLI_EXIT_RUNTIME, "cannot create sequence: %s", cli_ctx_msg(ctx, s));
    if (o->device && !strcmp(o->device, "cuda")) { /* sample on the device: only the token id comes back */
        s = kvl_ctx_set_device_sampling(ctx, &o->sp);
        if (s == KVL_ERR_ARG) cli_die(CLI_EXIT_USAGE, "invalid sampling parameters: %s", cli_ctx_msg(ctx, s));
        if (s != KVL_OK) cli_die(CLI_EXIT_RUNTIME, "device sampling: %s", cli_ctx_msg(ctx, s));
        g->dev_sample = 1;
        if (o->sp.temperature > 0 && (o->sp.top_k == 0 || o->sp.top_k > 1024))
            fprintf(stderr, "note: --top-k %d: the device samples from the 1024 most likely tokens at most\n",
                    o->sp.top_k);
    }
}

static void gen_free(gen_state *g) {
    kvl_seq_free(g->seq);
    kvl_sampler_free(g->smp);
    free(g->logits);
    free(g->piece);
    free(g->cached.v);
    free(g->emitted.v);
}

/* Start over with an empty sequence. */
static void gen_reset_seq(gen_state *g) {
    kvl_seq_free(g->seq);
    g->seq = NULL;
    kvl_status s = kvl_seq_create(g->ctx, &g->seq);
    if (s != KVL_OK) cli_die(CLI_EXIT_RUNTIME, "cannot create sequence: %s", cli_ctx_msg(g->ctx, s));
    g->cached.n = 0;
}

/* Prefill tokens after the cached ones; leaves the last logits in g->logits. */
static kvl_status gen_prefill(gen_state *g, const kvl_token *t, int64_t n) {
    kvl_status s = kvl_prefill(g->seq, t, (int)n, g->dev_sample ? NULL : g->logits, NULL);
    if (s == KVL_OK) tokvec_push(&g->cached, t, n);
    return s;
}

/* Write the bytes of token t to stdout (and to text if given). */
static void gen_emit(gen_state *g, kvl_token t, strbuf *text) {
    int n = kvl_token_to_piece(g->m, t, 0, g->piece, g->piece_cap);
    if (n > g->piece_cap) {
        char *np = realloc(g->piece, (size_t)n);
        if (!np) cli_die(CLI_EXIT_RUNTIME, "out of memory");
        g->piece = np;
        g->piece_cap = n;
        n = kvl_token_to_piece(g->m, t, 0, g->piece, g->piece_cap);
    }
    if (n <= 0) return;
    fwrite(g->piece, 1, (size_t)n, stdout);
    fflush(stdout);
    if (text) strbuf_add(text, g->piece, (size_t)n);
}

typedef enum { GEN_LIMIT, GEN_EOG, GEN_CTX_FULL, GEN_ERROR } gen_end;

/* Sample up to max_new tokens (-1 = unbounded) from g->logits, streaming them.
 * Every emitted token but the last is decoded into the cache; an end-of-
 * generation token ends the loop without being emitted or decoded. */
static gen_end gen_generate(gen_state *g, int max_new, strbuf *text, int64_t *n_gen, kvl_status *err) {
    *n_gen = 0;
    for (;;) {
        if (max_new >= 0 && *n_gen >= max_new) return GEN_LIMIT;
        kvl_token t = g->dev_sample ? kvl_seq_sampled(g->seq) : kvl_sampler_sample(g->smp, g->logits);
        if (t < 0) { /* device sampling: no call made a draw yet */
            *err = KVL_ERR_ARG;
            return GEN_ERROR;
        }
        kvl_sampler_accept(g->smp, t);
        if (kvl_model_is_eog(g->m, t)) return GEN_EOG;
        gen_emit(g, t, text);
        tokvec_push(&g->emitted, &t, 1);
        (*n_gen)++;
        if (max_new >= 0 && *n_gen >= max_new) return GEN_LIMIT;
        if (kvl_seq_pos(g->seq) >= g->n_ctx) return GEN_CTX_FULL;
        double t0 = cli_now();
        kvl_status s = kvl_decode(g->seq, t, g->dev_sample ? NULL : g->logits);
        g->t_decode += cli_now() - t0;
        if (s == KVL_ERR_CTX_FULL) return GEN_CTX_FULL;
        if (s != KVL_OK) {
            *err = s;
            return GEN_ERROR;
        }
        g->n_decoded++;
        tokvec_push(&g->cached, &t, 1);
    }
}

static void print_kv_stats(const kvl_seq *seq) {
    kvl_kv_stats st;
    memset(&st, 0, sizeof st);
    kvl_seq_kv_stats(seq, &st);
    fprintf(stderr, "KV cache:         %zu bytes used, %zu peak, codec %s\n", st.bytes_used, st.bytes_peak,
            st.codec ? st.codec : "?");
    fprintf(stderr, "KV per token:     %.1f bytes stored now (%.2f bits/value, open residual pages included), "
                    "%.1f bytes in full pages\n",
            st.tokens_cached > 0 ? (double)st.codec_bytes / (double)st.tokens_cached : 0.0, st.bits_per_value,
            st.bytes_per_token);
    fprintf(stderr, "KV tokens/pages:  %lld tokens cached, %d pages, pool %zu / %zu bytes\n",
            (long long)st.tokens_cached, st.n_pages, st.pool_used, st.pool_budget);
}

static double rate(double n, double secs) { return secs > 0 ? n / secs : 0.0; }

static void print_matmul(const cli_opts *o) {
    fprintf(stderr, "matmul:           %s\n",
            o->exact ? "exact (--exact: f32 activations, weights dequantized on the fly)"
                     : "default (8-bit activation blocks, as llama.cpp)");
}

/* --ids: "LABEL: id id ..." on one stderr line. */
static void print_ids(const char *label, const kvl_token *t, int64_t n) {
    fprintf(stderr, "%s:", label);
    for (int64_t i = 0; i < n; i++) fprintf(stderr, " %d", (int)t[i]);
    fputc('\n', stderr);
}

/* ---- run ------------------------------------------------------------------------------ */

int cmd_run(const cli_opts *o) {
    size_t len = 0;
    char *owned = NULL;
    const char *text = o->prompt;
    if (o->file) text = owned = cli_read_file(o->file, &len);
    else len = strlen(text);
    check_utf8(text, len, "prompt");

    kvl_model *m = cli_load_model(o->model);
    kvl_model_info info;
    kvl_model_get_info(m, &info);
    int n_ctx = gen_n_ctx(o, &info);

    int64_t n_prompt = 0;
    kvl_token *toks;
    if (o->chat) {
        kvl_chat_msg msgs[2];
        toks = cli_chat_tokenize(m, msgs, prompt_msgs(o, text, msgs), 1, &n_prompt);
    } else {
        toks = cli_tokenize(m, text, len, -1, !o->no_special, &n_prompt);
    }
    if (n_prompt == 0) cli_die(CLI_EXIT_RUNTIME, "prompt is empty");
    if (n_prompt > n_ctx)
        cli_die(CLI_EXIT_RUNTIME, "prompt is %lld tokens, longer than the context of %d tokens (raise --ctx)",
                (long long)n_prompt, n_ctx);

    kvl_ctx *ctx = cli_create_ctx(m, o, NULL, n_ctx);
    gen_state g;
    gen_init(&g, m, ctx, o, n_ctx);
    int64_t h0 = n_prompt > o->sp.repeat_last_n ? n_prompt - o->sp.repeat_last_n : 0;
    for (int64_t i = h0; i < n_prompt; i++) kvl_sampler_accept(g.smp, toks[i]);

    kvl_prefix *pf = NULL;
    int reused = 0, stored = 0;
    if (o->prefix_cache || o->redis) {
        char perr[512] = "";
        kvl_prefix_params pp;
        kvl_prefix_params_default(&pp);
        pp.dir = o->prefix_cache;
        pp.redis_url = o->redis;
        pp.remote_level = o->prefix_level;
        if (kvl_prefix_create_ex(&pp, &pf, perr, sizeof perr) != KVL_OK)
            cli_die(CLI_EXIT_RUNTIME, "%s: %s", strstr(perr, "redis") ? "--redis" : "--prefix-cache", perr);
        if (kvl_prefix_get(pf, g.seq, toks, (int)n_prompt, &reused) != KVL_OK)
            cli_die(CLI_EXIT_RUNTIME, "--prefix-cache: %s", cli_ctx_msg(ctx, KVL_ERR_ARG));
        tokvec_push(&g.cached, toks, reused);
    }
    double t0 = cli_now();
    kvl_status s = gen_prefill(&g, toks + reused, n_prompt - reused);
    double t_prefill = cli_now() - t0;
    if (s != KVL_OK) cli_die(CLI_EXIT_RUNTIME, "prefill failed: %s", cli_ctx_msg(ctx, s));
    if (pf && kvl_prefix_put(pf, g.seq, &stored) != KVL_OK) cli_warn("--prefix-cache: %s", kvl_prefix_error(pf));

    int64_t n_gen = 0;
    kvl_status gerr = KVL_OK;
    gen_end end = gen_generate(&g, o->n_predict, NULL, &n_gen, &gerr);
    if (isatty(1)) fputc('\n', stdout);
    fflush(stdout);
    int rc = CLI_EXIT_OK;
    if (end == GEN_ERROR) {
        cli_warn("decode failed: %s", cli_ctx_msg(ctx, gerr));
        rc = CLI_EXIT_RUNTIME;
    } else if (end == GEN_CTX_FULL && o->stats) {
        fprintf(stderr, "(stopped: context of %d tokens is full)\n", n_ctx);
    }

    if (o->stats) {
        if (!isatty(1)) fputc('\n', stderr); /* the answer on stdout ends without a newline */
        fprintf(stderr, "prompt tokens:    %lld\n", (long long)n_prompt);
        fprintf(stderr, "generated tokens: %lld\n", (long long)n_gen);
        fprintf(stderr, "prefill:          %.2f tok/s (%lld tokens in %.1f ms)\n",
                rate((double)(n_prompt - reused), t_prefill), (long long)(n_prompt - reused), t_prefill * 1e3);
        if (pf) {
            kvl_prefix_stats ps;
            kvl_prefix_get_stats(pf, &ps);
            fprintf(stderr, "prefix cache:     reused %d of %lld prompt tokens (%lld chunks from RAM, %lld from disk, %lld rejected), stored %d chunks\n",
                    reused, (long long)n_prompt, (long long)ps.ram_hits, (long long)ps.disk_hits, (long long)ps.bad, stored);
            if (o->redis)
                fprintf(stderr, "redis tier:       %lld hits, %lld misses, %lld errors, %lld chunks written\n",
                        (long long)ps.redis_hits, (long long)ps.redis_misses, (long long)ps.redis_errors,
                        (long long)ps.redis_stored);
        }
        fprintf(stderr, "decode:           %.2f tok/s (%lld tokens in %.1f ms)\n",
                rate((double)g.n_decoded, g.t_decode), (long long)g.n_decoded, g.t_decode * 1e3);
        print_kv_stats(g.seq);
        print_matmul(o);
    }
    if (o->ids) {
        if (!o->stats && !isatty(1)) fputc('\n', stderr);
        print_ids("prompt ids", toks, n_prompt);
        print_ids("generated ids", g.emitted.v, g.emitted.n);
    }

    gen_free(&g);
    kvl_prefix_free(pf);
    kvl_ctx_free(ctx);
    kvl_model_free(m);
    free(toks);
    free(owned);
    return rc;
}

/* ---- chat ---------------------------------------------------------------------------- */

typedef struct conv {
    kvl_chat_msg *msgs; /* contents are malloc'd */
    int n, cap, n_keep; /* n_keep: leading messages kept by /reset (system) */
} conv;

static void conv_push(conv *c, const char *role, const char *content, size_t len) {
    if (c->n == c->cap) {
        int cap = c->cap ? c->cap * 2 : 16;
        kvl_chat_msg *nm = realloc(c->msgs, (size_t)cap * sizeof *nm);
        if (!nm) cli_die(CLI_EXIT_RUNTIME, "out of memory");
        c->msgs = nm;
        c->cap = cap;
    }
    char *s = malloc(len + 1);
    if (!s) cli_die(CLI_EXIT_RUNTIME, "out of memory");
    memcpy(s, content, len);
    s[len] = 0;
    c->msgs[c->n].role = role;
    c->msgs[c->n].content = s;
    c->n++;
}

static void conv_truncate(conv *c, int n) {
    while (c->n > n) free((char *)c->msgs[--c->n].content);
}

/* chat --session: the stored conversation (messages and KV) replaces the
 * empty sequence; returns the tokens restored. */
static int64_t chat_restore(gen_state *g, conv *cv, const char *name, const void *buf, size_t len) {
    kvl_seq *loaded[1] = {NULL};
    kvl_chat_msg *msgs = NULL;
    int n = 0, nm = 0;
    kvl_status s = kvl_seqs_load(g->ctx, buf, len, loaded, 1, &n, &msgs, &nm);
    if (s != KVL_OK) cli_die(CLI_EXIT_RUNTIME, "session %s: %s", name, cli_ctx_msg(g->ctx, s));
    kvl_seq_free(g->seq);
    g->seq = loaded[0];
    const int np = kvl_seq_pos(g->seq);
    g->cached.n = 0;
    if (np > 0) {
        kvl_token *t = malloc(sizeof *t * (size_t)np);
        if (!t) cli_die(CLI_EXIT_RUNTIME, "out of memory");
        kvl_seq_tokens(g->seq, t, np);
        tokvec_push(&g->cached, t, np);
        free(t);
    }
    for (int i = 0; i < nm; i++) {
        const char *role = !strcmp(msgs[i].role, "system") ? "system" : !strcmp(msgs[i].role, "user") ? "user" : "assistant";
        conv_push(cv, role, msgs[i].content, strlen(msgs[i].content));
    }
    cv->n_keep = nm > 0 && !strcmp(cv->msgs[0].role, "system");
    free(msgs);
    return np;
}

/* chat --session: save after a turn. A directory store's failure fails
 * the command (exit 1); a Redis store's is warned about once per outage
 * and the chat goes on (the last committed turn stays in Redis). */
static void session_save(gen_state *g, const conv *cv, const char *store, const cli_opts *o, int *failed, int *rc) {
    if (kvl_session_save(g->ctx, g->seq, store, o->session, cv->msgs, cv->n) == KVL_OK) {
        if (*failed && o->redis) fprintf(stderr, "session %s: saved again\n", o->session);
        *failed = 0;
        return;
    }
    if (!o->redis) {
        cli_warn("session %s: save failed: %s", o->session, kvl_ctx_error(g->ctx));
        *rc = CLI_EXIT_RUNTIME;
    } else if (!*failed) {
        cli_warn("session %s: save failed: %s (not reported again until a save succeeds)", o->session,
                 kvl_ctx_error(g->ctx));
    }
    *failed = 1;
}

int cmd_chat(const cli_opts *oin) {
    cli_opts oc = *oin;
    const cli_opts *o = &oc;
    char *store = NULL, *keep = NULL;
    void *sbuf = NULL;
    size_t slen = 0;
    int max_pos = 0, persist = o->session != NULL;
    if (o->session && o->redis) {
        /* session in Redis: unreachable -> warn once and chat without saving
         * (the stored conversation is left as it is) */
        store = strdup(o->redis);
        if (!store) cli_die(CLI_EXIT_RUNTIME, "out of memory");
        char rerr[600] = "";
        if (kvl_session_read(store, o->session, &sbuf, &slen, rerr, sizeof rerr) != KVL_OK) {
            cli_warn("%s; continuing without the session (nothing will be saved)", rerr);
            persist = 0;
        }
        char what[96];
        snprintf(what, sizeof what, "session %s", o->session);
        if (sbuf) cli_kv_from_session(&oc, sbuf, slen, what, &keep, &max_pos);
    } else if (o->session) {
        store = cli_session_store(o);
        const size_t pl = strlen(store) + strlen(o->session) + 16;
        char *path = malloc(pl);
        if (!path) cli_die(CLI_EXIT_RUNTIME, "out of memory");
        snprintf(path, pl, "%s/%s.kvls", store, o->session);
        sbuf = cli_read_session_file(path, &slen);
        if (!sbuf && errno != ENOENT) cli_die(CLI_EXIT_RUNTIME, "session %s: cannot open %s: %s", o->session, path, strerror(errno));
        free(path);
        char what[96];
        snprintf(what, sizeof what, "session %s", o->session);
        if (sbuf) cli_kv_from_session(&oc, sbuf, slen, what, &keep, &max_pos);
    }
    kvl_model *m = cli_load_model(o->model);
    kvl_model_info info;
    kvl_model_get_info(m, &info);
    int n_ctx = gen_n_ctx(o, &info);
    if (!o->n_ctx && max_pos >= n_ctx) n_ctx = max_pos + 1; /* room for the restored conversation */
    kvl_ctx *ctx = cli_create_ctx(m, o, NULL, n_ctx);
    gen_state g;
    gen_init(&g, m, ctx, o, n_ctx);

    conv cv = {0};
    int64_t restored = 0, computed = 0;
    if (sbuf) {
        restored = chat_restore(&g, &cv, o->session, sbuf, slen);
        free(sbuf);
        fprintf(stderr, "session %s: restored %lld tokens, %d messages\n", o->session, (long long)restored, cv.n);
        if (o->system && cv.n_keep && strcmp(cv.msgs[0].content, o->system))
            cli_warn("session %s: --system ignored, the restored conversation has its own", o->session);
    } else if (o->system) {
        check_utf8(o->system, strlen(o->system), "system message");
        conv_push(&cv, "system", o->system, strlen(o->system));
        cv.n_keep = 1;
    }
    int tty_in = isatty(0), rc = CLI_EXIT_OK, save_failed = 0;
    char *line = NULL;
    size_t line_cap = 0;
    strbuf answer = {0};

    for (;;) {
        if (tty_in) {
            fputs("> ", stderr);
            fflush(stderr);
        }
        ssize_t got = getline(&line, &line_cap, stdin);
        if (got < 0) break;
        size_t len = (size_t)got;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (len == 0) continue;
        if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) break;
        if (!strcmp(line, "/reset")) {
            conv_truncate(&cv, cv.n_keep);
            gen_reset_seq(&g);
            g.turn_reused = g.turn_prefilled = 0;
            fputs("(conversation cleared)\n", stderr);
            if (persist) session_save(&g, &cv, store, o, &save_failed, &rc);
            continue;
        }
        if (!strcmp(line, "/stats")) {
            fprintf(stderr, "conversation:     %d messages, %lld tokens cached\n", cv.n, (long long)g.cached.n);
            fprintf(stderr, "last turn:        %lld tokens reused from the cache, %lld prefilled\n",
                    (long long)g.turn_reused, (long long)g.turn_prefilled);
            print_kv_stats(g.seq);
            print_matmul(o);
            continue;
        }
        long bad = cli_utf8_invalid_at(line, len);
        if (bad >= 0) {
            cli_warn("input is not valid UTF-8 (byte %ld); message ignored", bad);
            continue;
        }

        conv_push(&cv, "user", line, len);
        int64_t n_tok = 0;
        kvl_token *toks = cli_chat_tokenize(m, cv.msgs, cv.n, 1, &n_tok);
        if (n_tok >= n_ctx) {
            cli_warn("conversation is %lld tokens, longer than the context of %d tokens; message dropped (try /reset or raise --ctx)",
                     (long long)n_tok, n_ctx);
            conv_truncate(&cv, cv.n - 1);
            free(toks);
            continue;
        }
        /* Reuse the cached prefix; re-prefill from scratch if the cache is not a
         * prefix of the new rendering (or nothing new would be processed). */
        int64_t k = 0;
        while (k < g.cached.n && k < n_tok && g.cached.v[k] == toks[k]) k++;
        if (k < g.cached.n || k == n_tok) {
            gen_reset_seq(&g);
            k = 0;
        }
        g.turn_reused = k;
        g.turn_prefilled = n_tok - k;
        kvl_status s = gen_prefill(&g, toks + k, n_tok - k);
        free(toks);
        if (s != KVL_OK) {
            cli_warn("prefill failed: %s", cli_ctx_msg(ctx, s));
            rc = CLI_EXIT_RUNTIME;
            break;
        }
        computed += g.turn_prefilled;

        answer.n = 0;
        strbuf_add(&answer, "", 0);
        int64_t n_gen = 0;
        kvl_status gerr = KVL_OK;
        gen_end end = gen_generate(&g, o->n_predict, &answer, &n_gen, &gerr);
        fputc('\n', stdout);
        fflush(stdout);
        if (end == GEN_ERROR) {
            cli_warn("decode failed: %s", cli_ctx_msg(ctx, gerr));
            rc = CLI_EXIT_RUNTIME;
            break;
        }
        if (end == GEN_CTX_FULL) cli_warn("context of %d tokens is full; use /reset", n_ctx);
        conv_push(&cv, "assistant", answer.s, answer.n);
        if (persist) session_save(&g, &cv, store, o, &save_failed, &rc);
    }
    if (o->session)
        fprintf(stderr, "session %s: restored %lld tokens, computed %lld\n", o->session, (long long)restored,
                (long long)(computed + g.n_decoded));
    free(store);
    free(keep);

    free(line);
    free(answer.s);
    conv_truncate(&cv, 0);
    free(cv.msgs);
    gen_free(&g);
    kvl_ctx_free(ctx);
    kvl_model_free(m);
    return rc;
}

/* ---- tokenize ------------------------------------------------------------------------ */

int cmd_tokenize(const cli_opts *o) {
    size_t len = 0;
    char *owned = NULL;
    const char *text = o->prompt;
    if (o->file) text = owned = cli_read_file(o->file, &len);
    else len = strlen(text);
    kvl_model *m = cli_load_model(o->model);
    int64_t n = 0;
    kvl_token *t;
    if (o->chat) {
        if (memchr(text, 0, len)) cli_die(CLI_EXIT_RUNTIME, "text contains a NUL byte, which a chat message cannot carry");
        kvl_chat_msg msgs[2];
        t = cli_chat_tokenize(m, msgs, prompt_msgs(o, text, msgs), 1, &n);
    } else {
        t = cli_tokenize(m, text, len, -1, !o->no_special, &n);
    }
    for (int64_t i = 0; i < n; i++) printf(i ? " %d" : "%d", (int)t[i]);
    putchar('\n');
    fflush(stdout);
    free(t);
    free(owned);
    kvl_model_free(m);
    return CLI_EXIT_OK;
}
