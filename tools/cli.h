/* Shared pieces of the kvlite CLI: parsed options, error exits, small helpers
 * (numbers, UTF-8 checks, file reading, timing, JSON output, progress bar) and
 * the command entry points. Tools see the engine only through kvlite.h. */
#ifndef KVL_TOOLS_CLI_H
#define KVL_TOOLS_CLI_H

#include "kvlite.h"

#include <stdio.h>

/* Exit codes. */
enum { CLI_EXIT_OK = 0, CLI_EXIT_RUNTIME = 1, CLI_EXIT_USAGE = 2 };

/* Every flag of every command lands here; each command reads what it needs. */
typedef struct cli_opts {
    const char *cmd;       /* "run", "chat", "tokenize", "bench", "eval" */
    const char *subcmd;    /* eval: "ppl" or "kld" */
    const char *model;
    const char *prompt;    /* -p */
    const char *file;      /* -f */
    const char *system;    /* --system (chat templates) */
    int n_predict;         /* -n; -1 = until end-of-generation or context full */
    int n_ctx;             /* --ctx; 0 = command default */
    int n_threads;         /* 0 = all cores */
    const char *kv;        /* --kv codec name */
    int kv_set;            /* --kv given explicitly */
    const char *kv_k, *kv_v; /* --kv-k / --kv-v: one side's codec spec (NULL = --kv) */
    const char *kv_layers; /* --kv-layers: per-layer codec overrides */
    int eval_chunk;        /* eval --chunk: tokens per prefill call (0 = default) */
    int head_dim, page_tokens; /* codecs --head-dim / --page */
    size_t kv_budget;      /* --kv-budget; 0 = engine default */
    const char *kv_policy; /* --kv-policy SPEC (NULL = full) */
    const char *kv_keep;   /* --kv-keep N or P% (NULL = none) */
    int n_batch;           /* --batch: tokens per forward call (0 = default) */
    int exact;             /* --exact: kvl_ctx_params.exact_matmul (f32 activations) */
    const char *device;    /* --device cpu|cuda: kvl_ctx_params.device (NULL = cpu) */
    int ids;               /* run --ids: prompt and generated token ids on stderr */
    kvl_sampler_params sp;
    int chat, stats, json, no_special;
    int bench_prompt, bench_gen, reps;
    int max_windows;       /* 0 = all */
    /* eval needle|passkey|multikey (cmd_retrieval.c); 0 / NULL = task default */
    const char *ret_lengths, *ret_depths; /* comma-separated lists */
    int ret_seeds, ret_keys, ret_no_share;
    int ret_seed_base;     /* --seed-base: first prompt seed (tune on a disjoint range, report on 0..) */
    int ret_query_agnostic; /* --query-agnostic: compress the haystack before the question arrives */
    const char *ret_haystack, *ret_needle, *ret_question, *ret_answer, *ret_plot;
    /* sessions (chat --session, kv export/import/info; cmd_kv.c) */
    const char *session, *store; /* --session NAME, --store DIR (default ~/.cache/kvlite/sessions) */
    const char *output, *input;  /* kv export -o FILE, kv import -i FILE / kv info FILE */
    const char *prefix_cache;    /* run --prefix-cache DIR: reuse / store 256-token prompt chunks (kvl_prefix_*) */
    int prefix_level;            /* run --prefix-level L: CacheGen level of the disk / Redis tiers (-1: pages) */
    const char *redis;           /* --redis URL: run: the prefix store's Redis tier; chat: the session store */
    /* CacheGen format (kv export --level, kv eval; cmd_kv.c) */
    int cg_level;                /* --level L (-1: the exact session format) */
    float cg_scale;              /* --cg-scale S: step multiplier (0 = 1) */
    int cg_group, cg_chan;       /* --cg-group G, --cg-chan N (0 = defaults) */
    int kv_prefix, kv_cont;      /* kv eval --prefix N --cont M */
    const char *cg_levels, *kv_baselines; /* kv eval --levels 0,1,2,3 --baselines int8,int4,kivi2 */
    /* eval stream (cmd_stream.c) */
    const char *bandwidth;       /* --bandwidth TRACE[,TRACE...]: Mbit/s per --trace-step-ms */
    const char *slo_ms;          /* --slo-ms N[,N...]: time-to-first-token targets (the replay runs each) */
    int stream_requests;         /* --requests N (replay default 100, real default 20) */
    int trace_step_ms;           /* --trace-step-ms (default 100) */
    float rtt_ms;                /* --rtt-ms: per-chunk request latency in the replay (default 1) */
    int real_spacing_ms;         /* --spacing-ms: real requests start every N ms (0: back to back) */

    /* eval rag (cmd_rag.c); 0 / NULL = default */
    int rag_chunks, rag_chunk_tokens, rag_questions;
    const char *blend_ratio;     /* --blend-ratio r[,r...] */
    int blend_layers;            /* --blend-layers L (-1 = default 1) */
    const char *blend_select;    /* --blend-select v|k|qv|qk|q */
    int rag_floor;               /* --floor: eval rag adds the full prefill on the other activation path */
    const char *blend_store;     /* --blend-store DIR: disk tier of the chunk store */
    size_t blend_ram;            /* --blend-ram BYTES: RAM tier budget (0 with --blend-store: disk only; SIZE_MAX: not given) */
    const char *blend_pipeline;  /* --blend-pipeline 0|1|0,1: disk-tier layers streamed during the pass (default 1) */
    int blend_cold;              /* --blend-cold: chunk files dropped from the page cache before each prompt */
    float blend_read_mbps;       /* --blend-read-mbps R: cap the disk-tier reads (emulated slower tier; 0: none) */
} cli_opts;

/* Print "kvlite: MSG" (newlines folded into spaces) on stderr and exit(code). */
void cli_die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
/* Print "kvlite: MSG" on stderr without exiting. */
void cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Parse helpers: return 0 on success, -1 on malformed / out-of-range input. */
int cli_parse_int(const char *s, long lo, long hi, int *out);
int cli_parse_float(const char *s, double lo, double hi, float *out);
int cli_parse_u64(const char *s, uint64_t *out);
/* Byte sizes with optional K/M/G/T suffix (powers of 1024), optional "B"/"iB". */
int cli_parse_size(const char *s, size_t *out);

/* Offset of the first byte that breaks strict UTF-8 (kvl_utf8_invalid_at) or
 * is NUL (C strings cannot carry it), or -1 if buf is valid. */
long cli_utf8_invalid_at(const char *buf, size_t len);

/* Read a whole file into a NUL-terminated malloc'd buffer; dies on error. */
char *cli_read_file(const char *path, size_t *len);

/* log(sum(exp(l [n]))) in double; *amax (may be NULL) receives the argmax
 * (lowest index on ties). */
double cli_logsumexp(const float *l, int n, int *amax);
/* KL(P || Q) with P = softmax(a), Q = softmax(b) [n], given their
 * log-normalisers (cli_logsumexp); never negative. */
double cli_kl_div(const float *a, double lse_a, const float *b, double lse_b, int n);

/* Monotonic clock in seconds. */
double cli_now(void);
/* Peak resident set size in bytes (getrusage). */
size_t cli_peak_rss(void);

/* Load the model (dies with a one-line message on failure). */
kvl_model *cli_load_model(const char *path);
/* Create a context for m from the options and n_ctx: codec NULL takes the
 * user's KV configuration (--kv, --kv-k, --kv-v, --kv-layers), a codec name
 * exactly that codec for K and V (the f32 reference of eval kld). */
kvl_ctx *cli_create_ctx(const kvl_model *m, const cli_opts *o, const char *codec, int n_ctx);
/* --kv-keep: "N" tokens -> *keep, "P%" -> *frac = P/100 (dies on bad input). */
void cli_parse_keep(const char *s, int *keep, float *frac);
/* Message for a failed call on context c: its error text, or the status name
 * when the context recorded none (c may be NULL). */
const char *cli_ctx_msg(const kvl_ctx *c, kvl_status s);
/* Tokenize into a malloc'd array; dies on error. */
kvl_token *cli_tokenize(const kvl_model *m, const char *text, size_t len, int add_bos,
                        int parse_special, int64_t *n_out);
/* Tokens of the conversation in the model's chat template (kvl_chat_tokenize:
 * message text never becomes control tokens) into a malloc'd array; dies on
 * error. */
kvl_token *cli_chat_tokenize(const kvl_model *m, const kvl_chat_msg *msgs, int n_msgs, int add_assistant,
                             int64_t *n_out);

/* ---- JSON writer (one object on stdout) ---------------------------------------- */
typedef struct cli_json {
    FILE *f;
    int n;       /* members written in the current object */
} cli_json;
void cli_json_begin(cli_json *j, FILE *f);
void cli_json_str(cli_json *j, const char *key, const char *val);
void cli_json_int(cli_json *j, const char *key, long long val);
void cli_json_num(cli_json *j, const char *key, double val);
void cli_json_num_array(cli_json *j, const char *key, const double *v, int n);
void cli_json_bool(cli_json *j, const char *key, int val);
void cli_json_end(cli_json *j);
/* Write s as a JSON string literal (quotes included). */
void cli_json_escape(FILE *f, const char *s);

/* ---- progress bar (stderr, only when stderr is a terminal) --------------------- */
typedef struct cli_progress {
    int enabled;
    long total;
    const char *label;
    double t0;
} cli_progress;
void cli_progress_begin(cli_progress *p, const char *label, long total);
void cli_progress_update(cli_progress *p, long done);
void cli_progress_end(cli_progress *p);

/* ---- commands ------------------------------------------------------------------ */
int cmd_run(const cli_opts *o);
/* kv eval: CacheGen levels vs page codecs (tools/cmd_kv_eval.c). */
int cmd_kv_eval(const cli_opts *o);
int cmd_chat(const cli_opts *o);
int cmd_tokenize(const cli_opts *o);
int cmd_bench(const cli_opts *o);
int cmd_eval(const cli_opts *o);
int cmd_codecs(const cli_opts *o);
int cmd_policies(const cli_opts *o);
int cmd_kverr(const cli_opts *o);
/* eval needle | passkey | multikey (o->subcmd). */
int cmd_retrieval(const cli_opts *o);
/* eval rag: CacheBlend chunk reuse vs full prefill / prefix caching (cmd_rag.c). */
int cmd_rag(const cli_opts *o);
int cmd_calibrate(int argc, char **argv); /* kvlite calibrate (parses its own flags) */
int cmd_gguf_random(int argc, char **argv); /* kvlite gguf-random (parses its own flags; tools/cmd_gguf_random.c) */
/* kv info | export | import (o->subcmd; cmd_kv.c). */
int cmd_kv(const cli_opts *o);
/* eval stream: adaptive KV streaming over bandwidth traces (cmd_stream.c). */
int cmd_stream(const cli_opts *o);

/* ---- sessions (cmd_kv.c) ---------------------------------------------------------- */
/* The session store directory: --store, else ~/.cache/kvlite/sessions
 * (created with its parents). Returns a malloc'd path; dies on error. */
char *cli_session_store(const cli_opts *o);
/* Read a whole session/KV file (malloc'd); NULL with errno set when it
 * cannot be opened (ENOENT: missing), dies on other read errors. */
void *cli_read_session_file(const char *path, size_t *len);
/* Use the KV configuration recorded in a session buffer for the context,
 * unless the user gave --kv/--kv-k/--kv-v/--kv-layers (a mismatch is then
 * reported by the load). The strings live in *keep (freed by the caller).
 * *max_pos: the largest sequence position in the file. Dies on a bad file
 * with "WHAT: MESSAGE". */
void cli_kv_from_session(cli_opts *o, const void *buf, size_t len, const char *what, char **keep, int *max_pos);

#endif
