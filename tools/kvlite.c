/* kvlite CLI entry point: parses "kvlite CMD [flags]" from one flag table
 * (each flag says which commands accept it), validates numbers strictly and
 * dispatches to run / chat / tokenize / bench / eval (ppl, kld, and the
 * retrieval tasks needle, passkey, multikey). Usage errors are one line
 * on stderr and exit 2; runtime errors exit 1. */
#include "cli.h"

#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

enum {
    C_RUN = 1 << 0,
    C_CHAT = 1 << 1,
    C_TOK = 1 << 2,
    C_BENCH = 1 << 3,
    C_PPL = 1 << 4,
    C_KLD = 1 << 5,
    C_NEEDLE = 1 << 6,
    C_PASSKEY = 1 << 7,
    C_MULTIKEY = 1 << 8,
    C_CODECS = 1 << 9,
    C_KVERR = 1 << 10,
    C_KVINFO = 1 << 11,  /* kv info FILE */
    C_KVEXP = 1 << 12,   /* kv export */
    C_KVIMP = 1 << 13,   /* kv import */
    C_KVEVAL = 1 << 14,  /* kv eval (CacheGen levels vs page codecs) */
    C_STREAM = 1 << 15,  /* eval stream (adaptive KV streaming, cmd_stream.c) */
    C_RAG = 1 << 16,     /* eval rag (cmd_rag.c) */
    C_KV = C_KVINFO | C_KVEXP | C_KVIMP | C_KVEVAL,
    C_GEN = C_RUN | C_CHAT,
    C_EVAL = C_PPL | C_KLD | C_KVERR,
    C_RET = C_NEEDLE | C_PASSKEY | C_MULTIKEY, /* eval needle|passkey|multikey (cmd_retrieval.c) */
    C_ENGINE = C_RUN | C_CHAT | C_BENCH | C_EVAL | C_RET | C_RAG | C_KVEXP | C_KVIMP | C_KVEVAL | C_STREAM, /* commands that create a context */
};

typedef enum { F_STR, F_INT, F_FLOAT, F_U64, F_SIZE, F_BOOL } flag_kind;

typedef struct flag_spec {
    const char *name;  /* "--temp" */
    const char *alias; /* "-t" or NULL */
    flag_kind kind;
    size_t off;        /* offset in cli_opts */
    unsigned cmds;
    double lo, hi;     /* numeric range */
} flag_spec;

#define OFF(m) offsetof(cli_opts, m)

static const flag_spec FLAGS[] = {
    {"--model", "-m", F_STR, OFF(model), C_GEN | C_TOK | C_BENCH | C_EVAL | C_RET | C_RAG | C_KVEXP | C_KVIMP | C_KVEVAL | C_STREAM, 0, 0},
    {"--prompt", "-p", F_STR, OFF(prompt), C_RUN | C_TOK | C_KVIMP, 0, 0},
    {"--file", "-f", F_STR, OFF(file), C_RUN | C_TOK | C_EVAL | C_KVEXP | C_KVEVAL | C_STREAM, 0, 0},
    {"--system", NULL, F_STR, OFF(system), C_GEN | C_TOK, 0, 0},
    {"--n-predict", "-n", F_INT, OFF(n_predict), C_GEN | C_KVIMP, -1, INT_MAX},
    {"--session", NULL, F_STR, OFF(session), C_CHAT, 0, 0},
    {"--prefix-cache", NULL, F_STR, OFF(prefix_cache), C_RUN, 0, 0},
    {"--prefix-level", NULL, F_INT, OFF(prefix_level), C_RUN, 0, 3},
    {"--store", NULL, F_STR, OFF(store), C_CHAT, 0, 0},
    {"--redis", NULL, F_STR, OFF(redis), C_RUN | C_CHAT | C_STREAM, 0, 0},
    {"--bandwidth", NULL, F_STR, OFF(bandwidth), C_STREAM, 0, 0},
    {"--slo-ms", NULL, F_STR, OFF(slo_ms), C_STREAM, 0, 0},
    {"--requests", NULL, F_INT, OFF(stream_requests), C_STREAM, 1, 1 << 20},
    {"--trace-step-ms", NULL, F_INT, OFF(trace_step_ms), C_STREAM, 1, 1 << 20},
    {"--rtt-ms", NULL, F_FLOAT, OFF(rtt_ms), C_STREAM, 0, 1e6},
    {"--spacing-ms", NULL, F_INT, OFF(real_spacing_ms), C_STREAM, 0, 1 << 30},
    {"--output", "-o", F_STR, OFF(output), C_KVEXP, 0, 0},
    {"--input", "-i", F_STR, OFF(input), C_KVIMP | C_KVINFO, 0, 0},
    {"--ctx", "-c", F_INT, OFF(n_ctx), C_ENGINE, 0, 1 << 24},
    {"--threads", "-t", F_INT, OFF(n_threads), C_ENGINE, 0, 4096},
    {"--kv", NULL, F_STR, OFF(kv), C_ENGINE, 0, 0},
    {"--kv-k", NULL, F_STR, OFF(kv_k), C_ENGINE, 0, 0},
    {"--kv-v", NULL, F_STR, OFF(kv_v), C_ENGINE, 0, 0},
    {"--kv-layers", NULL, F_STR, OFF(kv_layers), C_ENGINE, 0, 0},
    {"--kv-budget", NULL, F_SIZE, OFF(kv_budget), C_ENGINE, 0, 0},
    {"--kv-policy", NULL, F_STR, OFF(kv_policy), C_ENGINE, 0, 0},
    {"--kv-keep", NULL, F_STR, OFF(kv_keep), C_ENGINE, 0, 0},
    {"--batch", NULL, F_INT, OFF(n_batch), C_ENGINE, 1, 65536},
    {"--chunk", NULL, F_INT, OFF(eval_chunk), C_EVAL, 1, 1 << 16},
    {"--head-dim", NULL, F_INT, OFF(head_dim), C_CODECS, 1, 4096},
    {"--page", NULL, F_INT, OFF(page_tokens), C_CODECS, 1, 4096},
    {"--exact", NULL, F_BOOL, OFF(exact), C_ENGINE, 0, 0},
    {"--device", NULL, F_STR, OFF(device), C_ENGINE, 0, 0},
    {"--temp", NULL, F_FLOAT, OFF(sp.temperature), C_GEN | C_KVIMP, 0, 1000},
    {"--seed", "-s", F_U64, OFF(sp.seed), C_GEN | C_KVIMP, 0, 0},
    {"--top-k", NULL, F_INT, OFF(sp.top_k), C_GEN | C_KVIMP, 0, INT_MAX},
    {"--top-p", NULL, F_FLOAT, OFF(sp.top_p), C_GEN | C_KVIMP, 0, 1},
    {"--min-p", NULL, F_FLOAT, OFF(sp.min_p), C_GEN | C_KVIMP, 0, 1},
    {"--repeat-penalty", NULL, F_FLOAT, OFF(sp.repeat_penalty), C_GEN | C_KVIMP, 1e-3, 1000},
    {"--repeat-last-n", NULL, F_INT, OFF(sp.repeat_last_n), C_GEN | C_KVIMP, 0, 1 << 20},
    {"--chat", NULL, F_BOOL, OFF(chat), C_RUN | C_TOK, 0, 0},
    {"--stats", NULL, F_BOOL, OFF(stats), C_RUN, 0, 0},
    {"--ids", NULL, F_BOOL, OFF(ids), C_RUN, 0, 0},
    {"--no-special", NULL, F_BOOL, OFF(no_special), C_RUN | C_TOK | C_KVEXP | C_KVIMP, 0, 0},
    {"--json", NULL, F_BOOL, OFF(json), C_BENCH | C_EVAL | C_RET | C_CODECS | C_KVEVAL | C_STREAM | C_RAG, 0, 0},
    {"--level", NULL, F_INT, OFF(cg_level), C_KVEXP, 0, 3},
    {"--cg-scale", NULL, F_FLOAT, OFF(cg_scale), C_KVEXP | C_KVEVAL, 1e-3, 1000},
    {"--cg-group", NULL, F_INT, OFF(cg_group), C_KVEXP | C_KVEVAL, 1, 1 << 20},
    {"--cg-chan", NULL, F_INT, OFF(cg_chan), C_KVEXP | C_KVEVAL, 1, 16384},
    {"--prefix", NULL, F_INT, OFF(kv_prefix), C_KVEVAL | C_STREAM, 1, 1 << 24},
    {"--cont", NULL, F_INT, OFF(kv_cont), C_KVEVAL | C_STREAM, 2, 1 << 20},
    {"--levels", NULL, F_STR, OFF(cg_levels), C_KVEVAL | C_STREAM, 0, 0},
    {"--baselines", NULL, F_STR, OFF(kv_baselines), C_KVEVAL, 0, 0},
    {"--prompt-tokens", NULL, F_INT, OFF(bench_prompt), C_BENCH, 1, 1 << 24},
    {"--gen", NULL, F_INT, OFF(bench_gen), C_BENCH, 0, 1 << 24},
    {"--reps", NULL, F_INT, OFF(reps), C_BENCH, 1, 10000},
    {"--max-windows", NULL, F_INT, OFF(max_windows), C_EVAL, 0, INT_MAX},
    {"--lengths", NULL, F_STR, OFF(ret_lengths), C_RET, 0, 0},
    {"--depths", NULL, F_STR, OFF(ret_depths), C_RET, 0, 0},
    {"--seeds", NULL, F_INT, OFF(ret_seeds), C_RET | C_RAG, 1, 100000},
    {"--seed-base", NULL, F_INT, OFF(ret_seed_base), C_RET | C_RAG, 0, 1 << 30},
    {"--haystack", NULL, F_STR, OFF(ret_haystack), C_NEEDLE | C_MULTIKEY | C_RAG, 0, 0},
    {"--chunks", NULL, F_INT, OFF(rag_chunks), C_RAG, 1, 64},
    {"--chunk-tokens", NULL, F_INT, OFF(rag_chunk_tokens), C_RAG, 32, 1 << 16},
    {"--questions", NULL, F_INT, OFF(rag_questions), C_RAG, 1, 100000},
    {"--blend-ratio", NULL, F_STR, OFF(blend_ratio), C_RAG, 0, 0},
    {"--blend-layers", NULL, F_INT, OFF(blend_layers), C_RAG, 0, 4096},
    {"--blend-select", NULL, F_STR, OFF(blend_select), C_RAG, 0, 0},
    {"--floor", NULL, F_BOOL, OFF(rag_floor), C_RAG, 0, 0},
    {"--blend-store", NULL, F_STR, OFF(blend_store), C_RAG, 0, 0},
    {"--blend-ram", NULL, F_SIZE, OFF(blend_ram), C_RAG, 0, 0},
    {"--blend-pipeline", NULL, F_STR, OFF(blend_pipeline), C_RAG, 0, 0},
    {"--blend-cold", NULL, F_BOOL, OFF(blend_cold), C_RAG, 0, 0},
    {"--blend-read-mbps", NULL, F_FLOAT, OFF(blend_read_mbps), C_RAG, 0, 1e9},
    {"--needle", NULL, F_STR, OFF(ret_needle), C_NEEDLE, 0, 0},
    {"--question", NULL, F_STR, OFF(ret_question), C_NEEDLE, 0, 0},
    {"--answer", NULL, F_STR, OFF(ret_answer), C_NEEDLE, 0, 0},
    {"--keys", NULL, F_INT, OFF(ret_keys), C_MULTIKEY, 1, 64},
    {"--plot", NULL, F_STR, OFF(ret_plot), C_RET, 0, 0},
    {"--no-share", NULL, F_BOOL, OFF(ret_no_share), C_RET, 0, 0},
    {"--query-agnostic", NULL, F_BOOL, OFF(ret_query_agnostic), C_RET, 0, 0},
};

static const char USAGE_MAIN[] =
    "usage: kvlite COMMAND [flags]\n"
    "\n"
    "commands:\n"
    "  run       generate text from a prompt\n"
    "  chat      interactive multi-turn chat (reads stdin), KV cache kept across turns\n"
    "  tokenize  print the token ids of a text\n"
    "  bench     prefill / decode speed, KV bytes per token, peak RSS\n"
    "  eval ppl  perplexity of a text file\n"
    "  eval kld  KL divergence of a KV codec against f32 KV\n"
    "  eval kv-error  per-layer K/V and attention-output error of a KV codec against f32\n"
    "  eval needle|passkey|multikey  long-context retrieval accuracy with KV bytes used\n"
    "  eval stream  adaptive KV streaming (CacheGen levels / recompute) over bandwidth traces\n"
    "  eval rag  RAG chunk reuse (CacheBlend) vs full prefill and prefix caching: TTFT and quality\n"
    "  codecs    list the KV codecs with their exact bits per value\n"
    "  policies  list the KV eviction policies and their parameters\n"
    "  kv info FILE  what a session / KV file holds (every checksum verified, no model)\n"
    "  kv export prefill a text file and write its KV cache to a file\n"
    "  kv import load a KV file (verified) and optionally continue generation\n"
    "  gguf-random  write a Llama GGUF with random weights (presets tiny, llama3-1b, llama3-8b)\n"
    "\n"
    "run 'kvlite COMMAND --help' for the flags of a command.\n";

static const char USAGE_COMMON[] =
    "  -t, --threads N       worker threads (0 = all cores, default)\n"
    "  -c, --ctx N           context length in tokens\n"
    "      --kv SPEC         KV cache codec for K and V (default f16): kvlite codecs lists them;\n"
    "                        SPEC = NAME[+rot][:key=value,...], e.g. int4, int4+rot, kivi2:r=64\n"
    "      --kv-k SPEC       codec for K only (default --kv)\n"
    "      --kv-v SPEC       codec for V only (default --kv)\n"
    "      --kv-layers L=SPEC[;...]  per-layer overrides, e.g. 0,1,-2,-1=int8 (negative: from the\n"
    "                        end) or k0-3=int8;v29=f16 (one side)\n"
    "      --kv-budget BYTES KV pool budget, e.g. 64M, 1G (default: sized for --ctx); with a\n"
    "                        policy it is kept by evicting (and sets --kv-keep when that is absent)\n"
    "      --kv-policy SPEC  eviction policy NAME[:key=value,...] (default full): streaming, h2o,\n"
    "                        tova, snapkv, pyramidkv, veda, cake (kvlite policies lists them)\n"
    "      --kv-keep N|P%    policy budget: N cached tokens per layer and kv-head, or P% of the\n"
    "                        tokens processed\n"
    "      --batch N         tokens per forward call (default 512; the policy evicts between calls)\n"
    "      --exact           exact matmuls: f32 activations, weights dequantized on the fly\n"
    "                        (matches a float32 reference such as transformers; 10-30x slower)\n"
    "      --device D        cpu (default) or cuda: the forward pass on the GPU (a build with\n"
    "                        make CUDA=1; KV codecs f16, int8, int4z; policy full)\n";

static const char USAGE_SAMPLING[] =
    "      --temp T          temperature (default 0.8; 0 = greedy)\n"
    "  -s, --seed S          sampler seed (default 42)\n"
    "      --top-k K         top-k (default 40; 0 = off)\n"
    "      --top-p P         nucleus sampling (default 0.95; 1 = off)\n"
    "      --min-p P         min-p (default 0.05; 0 = off)\n"
    "      --repeat-penalty R repetition penalty (default 1.0 = off)\n"
    "      --repeat-last-n N tokens of history the penalty looks at (default 64)\n";

static unsigned cmd_mask(const char *cmd, const char *sub);

static void print_usage(FILE *f, const char *cmd, const char *sub) {
    if (!cmd || !cmd_mask(cmd, sub)) {
        fputs(USAGE_MAIN, f);
        return;
    }
    if (!strcmp(cmd, "run")) {
        fputs("usage: kvlite run -m MODEL (-p PROMPT | -f FILE) [flags]\n\n"
              "Generates text; only the generated text goes to stdout.\n\n"
              "  -m, --model PATH      GGUF model\n"
              "  -p, --prompt TEXT     prompt text\n"
              "  -f, --file PATH       read the prompt from a file\n"
              "  -n, --n-predict N     tokens to generate (default 256; -1 = until end or context full)\n"
              "      --chat            wrap the prompt in the model's chat template\n"
              "      --system TEXT     system message (with --chat)\n"
              "      --no-special      do not parse special-token text in the prompt\n"
              "      --stats           print token counts, speeds and KV usage to stderr\n"
              "      --ids             print the prompt and generated token ids to stderr\n"
              "      --prefix-cache DIR  reuse the KV of the longest cached prompt prefix (256-token\n"
              "                        chunks kept in DIR, keyed by model, codec and token ids) and\n"
              "                        store this prompt's chunks (--stats reports reused tokens)\n"
              "      --redis URL       a Redis tier for the prefix chunks (redis://HOST[:PORT][/DB]),\n"
              "                        looked up after RAM and --prefix-cache; a Redis that is down\n"
              "                        is logged once and the prompt is recomputed\n"
              "      --prefix-level L  keep the disk and Redis chunks as CacheGen level L (0..3; lossy,\n"
              "                        several times smaller than pages; RAM keeps exact pages)\n",
              f);
        fputs(USAGE_SAMPLING, f);
        fputs(USAGE_COMMON, f);
    } else if (!strcmp(cmd, "chat")) {
        fputs("usage: kvlite chat -m MODEL [flags]\n\n"
              "Reads one user message per line from stdin and streams each answer to stdout.\n"
              "The KV cache is kept between turns; only new tokens are processed.\n"
              "Commands: /reset clears the conversation, /stats shows KV usage, EOF exits.\n\n"
              "  -m, --model PATH      GGUF model\n"
              "  -n, --n-predict N     max tokens per answer (default -1 = until end of turn)\n"
              "      --system TEXT     system message\n"
              "      --session NAME    save the conversation and its KV cache after each turn as session\n"
              "                        NAME; started again with the same NAME, restore it without\n"
              "                        re-prefilling (1-64 of [A-Za-z0-9._-])\n"
              "      --store DIR       session directory (default ~/.cache/kvlite/sessions)\n"
              "      --redis URL       keep the session in Redis instead (redis://HOST[:PORT][/DB],\n"
              "                        key kvlite:session:NAME); another process can continue it\n",
              f);
        fputs(USAGE_SAMPLING, f);
        fputs(USAGE_COMMON, f);
    } else if (!strcmp(cmd, "tokenize")) {
        fputs("usage: kvlite tokenize -m MODEL (-p TEXT | -f FILE) [--no-special | --chat [--system TEXT]]\n\n"
              "Prints the token ids on one line, space-separated.\n\n"
              "  -m, --model PATH      GGUF model\n"
              "  -p, --prompt TEXT     text (taken literally: no escapes, as in run)\n"
              "  -f, --file PATH       read the text from a file\n"
              "      --no-special      treat special-token text as plain text\n"
              "      --chat            the ids run --chat would prefill: the text as the user\n"
              "                        message in the chat template, assistant header appended\n"
              "                        (message text never becomes special tokens)\n"
              "      --system TEXT     system message (with --chat)\n",
              f);
    } else if (!strcmp(cmd, "kv")) {
        fputs("usage: kvlite kv info FILE\n"
              "       kvlite kv export -m MODEL -f TEXT -o FILE [--kv SPEC] [--ctx N]\n"
              "       kvlite kv export -m MODEL -f TEXT -o FILE --level L [--cg-scale S] [--cg-group G] [--cg-chan N]\n"
              "       kvlite kv import -m MODEL -i FILE [-p TEXT [-n N]] [--ctx N]\n"
              "       kvlite kv eval -m MODEL -f TEXT [--prefix N] [--cont M] [--levels 0,1,2,3]\n"
              "                      [--baselines int8,int4,kivi2] [--exact] [--json]\n\n"
              "KV / session files (the session format, docs/ARCHITECTURE.md). info prints what a\n"
              "file holds and verifies every checksum without a model; export prefills a text and\n"
              "writes its KV pages; import verifies and loads a file into a context with the file's\n"
              "KV configuration (or the --kv flags given), then optionally prefills -p TEXT and\n"
              "generates -n tokens (default 256). A bad file is a one-line error and exit 1.\n\n"
              "  -m, --model PATH      GGUF model (export, import)\n"
              "  -f, --file PATH       text to prefill (export)\n"
              "  -o, --output PATH     KV file to write (export)\n"
              "  -i, --input PATH      KV file to read (import; info takes it as FILE)\n"
              "  -p, --prompt TEXT     text to prefill after the loaded tokens (import)\n"
              "  -n, --n-predict N     tokens to generate after -p (import)\n"
              "      --level L         export the CacheGen format at quality level L (0 finest .. 3\n"
              "                        smallest; lossy, entropy-coded; import loads it into the --kv codec)\n"
              "      --cg-scale S      multiply every CacheGen quantization step by S (export, eval)\n"
              "      --cg-group G      tokens per anchor group (default 10); --cg-chan N channels per context\n"
              "  eval: restore the first --prefix tokens (default 2048) of TEXT from each CacheGen level\n"
              "  and from each baseline page codec (and zstd of int8 pages), continue over --cont tokens\n"
              "  (default 256) and report bits/value, KLD and perplexity of the continuation against the\n"
              "  f16 cache, encode/decode MB/s, and rANS vs zstd on the same symbol streams\n",
              f);
        fputs(USAGE_SAMPLING, f);
        fputs(USAGE_COMMON, f);
    } else if (!strcmp(cmd, "bench")) {
        fputs("usage: kvlite bench -m MODEL [flags]\n\n"
              "  -m, --model PATH      GGUF model\n"
              "      --prompt N        prompt tokens for the prefill measurement (default 512)\n"
              "      --gen N           tokens decoded after the prompt (default 64)\n"
              "      --reps R          repetitions; the median is reported (default 3)\n"
              "      --json            one JSON object on stdout\n",
              f);
        fputs(USAGE_COMMON, f);
    } else if (!strcmp(cmd, "eval") && sub && !strcmp(sub, "stream")) {
        fputs("usage: kvlite eval stream -m MODEL -f TEXT --bandwidth TRACE[,TRACE...] --slo-ms N [flags]\n\n"
              "The first --prefix tokens of TEXT are a context fetched in 256-token chunks over a link\n"
              "that follows each TRACE (Mbit/s per line, one line per --trace-step-ms; bench/traces/);\n"
              "the next --cont tokens are the request. Each chunk is sent at a CacheGen level or as\n"
              "text to recompute; measured level sizes, decode / recompute speeds and KLDs drive the\n"
              "choice. Reports SLO attainment, TTFT and KLD for the adaptive choice, always-int8 pages,\n"
              "always the best level and always recompute; table on stderr, --json on stdout.\n\n"
              "  -m, --model PATH      GGUF model\n"
              "  -f, --file PATH       text (context + request)\n"
              "      --bandwidth LIST  trace files, comma-separated\n"
              "      --slo-ms N[,N...] time-to-first-token targets (each replayed; real runs use the first)\n"
              "      --prefix N        context tokens (default 2048)\n"
              "      --cont M          request tokens (default 64; the first 32 are the question)\n"
              "      --levels L,...    CacheGen levels offered (default 0,1,2,3)\n"
              "      --requests N      requests per trace (default 100; real: 20 per mode)\n"
              "      --trace-step-ms N trace sample length (default 100)\n"
              "      --rtt-ms R        per-chunk request latency of the replay (default 1)\n"
              "      --redis URL       also run the requests for real through Redis (chunks published\n"
              "                        there first; shape the link with bench/stream_netem.sh)\n"
              "      --spacing-ms N    real requests start every N ms (default back to back)\n"
              "      --json            one JSON object on stdout\n",
              f);
        fputs(USAGE_COMMON, f);
    } else if (!strcmp(cmd, "eval") && sub && cmd_mask(cmd, sub) & C_RET) {
        fprintf(f,
                "usage: kvlite eval %s -m MODEL [flags]\n\n"
                "Retrieval accuracy over a grid of prompt lengths x needle depths x seeds; greedy\n"
                "answers scored by exact match; each score is reported with the KV bytes used.\n"
                "Table on stderr; --json writes one object on stdout.\n\n"
                "  -m, --model PATH      GGUF model\n"
                "      --lengths L,...   total prompt lengths in tokens (default 1024,2048,3072,4096)\n"
                "      --depths D,...    needle depths in %% of the haystack tokens (default 0,10,...,100)\n"
                "      --seeds N         prompts per (length, depth) cell (default 2)\n"
                "      --seed-base S     first prompt seed (default 0; tune on another range than you report)\n"
                "      --query-agnostic  with --kv-policy: prefill and compress the haystack, then append\n"
                "                        the question (default: the policy sees the whole prompt)\n",
                sub);
        if (!strcmp(sub, "needle") || !strcmp(sub, "multikey"))
            fputs("      --haystack DIR    essays (*.txt) to cut sentences from (default ../shared/data/pg_essays)\n", f);
        if (!strcmp(sub, "needle"))
            fputs("      --needle TEXT     custom fact (with --question and --answer; default: a made-up fact per seed)\n"
                  "      --question TEXT   question asked after the haystack\n"
                  "      --answer TEXT     value the answer must contain\n",
                  f);
        if (!strcmp(sub, "multikey"))
            fputs("      --keys K          key -> value facts in the haystack (default 4)\n", f);
        fputs("      --plot FILE.png   write a depth x length accuracy heat map\n"
              "      --no-share        prefill every prompt from scratch (default: share prompt\n"
              "                        prefixes between depths via kvl_seq_fork unless --kv-budget is set)\n"
              "      --json            one JSON object on stdout\n",
              f);
        fputs(USAGE_COMMON, f);
    } else if (!strcmp(cmd, "eval") && sub && !strcmp(sub, "rag")) {
        fputs("usage: kvlite eval rag -m MODEL [flags]\n\n"
              "RAG chunk reuse: per seed --chunks chunks cut from essays (a made-up fact planted in each) and\n"
              "--questions questions over all chunks in a shuffled order (odd ones need two chunks), prefilled\n"
              "as full prefill, prefix caching only, reuse (stored chunk KV, no recompute) and CacheBlend at\n"
              "each ratio; TTFT median, exact-match accuracy, agreement with full, KLD of the first answer token.\n"
              "Table on stderr; --json writes one object with a `modes` map on stdout.\n\n"
              "  -m, --model PATH      GGUF model\n"
              "      --haystack DIR    essays (*.txt) to cut chunks from (default ../shared/data/pg_essays)\n"
              "      --chunks N        chunks per prompt (default 6)\n"
              "      --chunk-tokens T  tokens per chunk (default 512)\n"
              "      --questions Q     questions per seed (default 4)\n"
              "      --seeds S         knowledge bases (default 2)\n"
              "      --seed-base B     first seed (default 0: report; tune on another range)\n"
              "      --blend-ratio R[,R...]  CacheBlend recompute ratios (default 0.05,0.15,0.3)\n"
              "      --blend-layers L  first layers recomputed in full; selection at layer L (default 1)\n"
              "      --blend-select k|v  select by the deviation of K or V (default v)\n"
              "      --blend-store DIR disk tier of the chunk store (with --blend-ram 0: disk only)\n"
              "      --blend-ram BYTES RAM tier budget of the chunk store (default 4G)\n"
              "      --blend-pipeline 0|1|0,1  stream disk-tier layers during the pass (1, default), read them\n"
              "                        whole first (0), or both side by side (blend@R and blend@R/serial)\n"
              "      --blend-cold      drop the chunk files from the page cache before each prompt\n"
              "      --blend-read-mbps R  cap the disk-tier reads at R MB/s (emulates a network tier)\n"
              "      --json            one JSON object on stdout\n",
              f);
        fputs(USAGE_COMMON, f);
    } else if (!strcmp(cmd, "eval")) {
        if (!sub || !strcmp(sub, "ppl"))
            fputs("usage: kvlite eval ppl -m MODEL -f TEXT [--ctx N] [--kv CODEC] [--max-windows W] [--exact] [--json]\n"
                  "  perplexity over non-overlapping windows of --ctx tokens (default 512)\n",
                  f);
        if (!sub || !strcmp(sub, "kld"))
            fputs("usage: kvlite eval kld -m MODEL -f TEXT --kv CODEC [--ctx N] [--max-windows W] [--exact] [--json]\n"
                  "  mean KL(P_f32 || P_codec), top-1 agreement and both perplexities; with --exact both\n"
                  "  passes use exact matmuls, removing the ~3e-3 KLD floor 8-bit activations add\n",
                  f);
        if (!sub || !strcmp(sub, "kv-error"))
            fputs("usage: kvlite eval kv-error -m MODEL -f TEXT --kv CODEC [--ctx N] [--json]\n"
                  "  per-layer K/V reconstruction error and attention-output error of the codec against f32\n"
                  "  KV on the first --ctx tokens (default 1024), queries of the last 64 tokens\n",
                  f);
        if (!sub)
            fputs("usage: kvlite eval needle|passkey|multikey -m MODEL [--lengths L,..] [--depths D,..] [--seeds N]\n"
                  "  long-context retrieval accuracy with the KV bytes used (kvlite eval needle --help)\n",
                  f);
        fputs("\n  -m, --model PATH      GGUF model\n"
              "  -f, --file PATH       text file\n"
              "      --max-windows W   evaluate at most W windows (default all)\n"
              "      --chunk N         tokens per prefill call (default 256; 32 with a sealing codec, as decode)\n"
              "      --json            one JSON object on stdout\n",
              f);
        fputs(USAGE_COMMON, f);
    }
}

static unsigned cmd_mask(const char *cmd, const char *sub) {
    if (!strcmp(cmd, "codecs") || !strcmp(cmd, "policies")) return C_CODECS;
    if (!strcmp(cmd, "run")) return C_RUN;
    if (!strcmp(cmd, "chat")) return C_CHAT;
    if (!strcmp(cmd, "tokenize")) return C_TOK;
    if (!strcmp(cmd, "bench")) return C_BENCH;
    if (!strcmp(cmd, "kv")) {
        if (sub && !strcmp(sub, "export")) return C_KVEXP;
        if (sub && !strcmp(sub, "import")) return C_KVIMP;
        if (sub && !strcmp(sub, "eval")) return C_KVEVAL;
        return C_KVINFO;
    }
    if (!strcmp(cmd, "eval")) {
        if (sub && !strcmp(sub, "needle")) return C_NEEDLE;
        if (sub && !strcmp(sub, "passkey")) return C_PASSKEY;
        if (sub && !strcmp(sub, "multikey")) return C_MULTIKEY;
        if (sub && !strcmp(sub, "kv-error")) return C_KVERR;
        if (sub && !strcmp(sub, "stream")) return C_STREAM;
        if (sub && !strcmp(sub, "rag")) return C_RAG;
        return sub && !strcmp(sub, "kld") ? C_KLD : C_PPL;
    }
    return 0;
}

static const flag_spec *find_flag(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof FLAGS / sizeof FLAGS[0]; i++) {
        const flag_spec *f = &FLAGS[i];
        if ((strlen(f->name) == len && !strncmp(f->name, name, len)) ||
            (f->alias && strlen(f->alias) == len && !strncmp(f->alias, name, len)))
            return f;
    }
    return NULL;
}

static void set_flag(cli_opts *o, const flag_spec *f, const char *name, const char *val) {
    void *dst = (char *)o + f->off;
    switch (f->kind) {
    case F_STR:
        *(const char **)dst = val;
        break;
    case F_BOOL:
        *(int *)dst = 1;
        break;
    case F_INT:
        if (cli_parse_int(val, (long)f->lo, (long)f->hi, (int *)dst))
            cli_die(CLI_EXIT_USAGE, "%s: expected an integer in [%.0f, %.0f], got '%s'", name, f->lo, f->hi, val);
        break;
    case F_FLOAT:
        if (cli_parse_float(val, f->lo, f->hi, (float *)dst))
            cli_die(CLI_EXIT_USAGE, "%s: expected a number in [%g, %g], got '%s'", name, f->lo, f->hi, val);
        break;
    case F_U64:
        if (cli_parse_u64(val, (uint64_t *)dst))
            cli_die(CLI_EXIT_USAGE, "%s: expected a non-negative integer, got '%s'", name, val);
        break;
    case F_SIZE:
        if (cli_parse_size(val, (size_t *)dst))
            cli_die(CLI_EXIT_USAGE, "%s: expected a byte size such as 65536, 64M or 1G, got '%s'", name, val);
        break;
    }
}

static void parse_flags(cli_opts *o, unsigned mask, const char *cmdname, int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) continue; /* handled by the caller */
        if (a[0] != '-' || a[1] == 0)
            cli_die(CLI_EXIT_USAGE, "%s: unexpected argument '%s' (see kvlite %s --help)", cmdname, a, cmdname);
        const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        const flag_spec *f = find_flag(a, nlen);
        /* "bench --prompt N" is the number of prompt tokens */
        if (mask == C_BENCH && nlen == 8 && !strncmp(a, "--prompt", 8)) f = find_flag("--prompt-tokens", 15);
        if (!f || !(f->cmds & mask))
            cli_die(CLI_EXIT_USAGE, "%s: unknown flag '%.*s' (see kvlite %s --help)", cmdname, (int)nlen, a, cmdname);
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)nlen, a);
        const char *val = NULL;
        if (f->kind == F_BOOL) {
            if (eq) cli_die(CLI_EXIT_USAGE, "%s takes no value", name);
        } else if (eq) {
            val = eq + 1;
        } else {
            if (i + 1 >= argc) cli_die(CLI_EXIT_USAGE, "%s: missing value for %s", cmdname, name);
            val = argv[++i];
        }
        if (f->off == OFF(kv)) o->kv_set = 1;
        set_flag(o, f, name, val);
    }
}

static int wants_help(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2)
        cli_die(CLI_EXIT_USAGE, "missing command: run, chat, tokenize, bench, eval, codecs or kv (see kvlite --help)");
    const char *cmd = argv[1];
    if (!strcmp(cmd, "calibrate")) return cmd_calibrate(argc - 2, argv + 2); /* own flags: tools/cmd_calibrate.c */
    if (!strcmp(cmd, "gguf-random")) return cmd_gguf_random(argc - 2, argv + 2); /* own flags: tools/cmd_gguf_random.c */
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        print_usage(stdout, argc > 2 && strcmp(argv[2], "-h") && strcmp(argv[2], "--help") ? argv[2] : NULL, NULL);
        return 0;
    }
    const char *sub = NULL;
    int first = 2;
    if (!cmd_mask(cmd, NULL)) cli_die(CLI_EXIT_USAGE, "unknown command '%s' (see kvlite --help)", cmd);
    if (!strcmp(cmd, "eval")) {
        if (argc > 2 && (!strcmp(argv[2], "ppl") || !strcmp(argv[2], "kld") || !strcmp(argv[2], "needle") ||
                         !strcmp(argv[2], "passkey") || !strcmp(argv[2], "multikey") ||
                         !strcmp(argv[2], "kv-error") || !strcmp(argv[2], "stream") || !strcmp(argv[2], "rag"))) {
            sub = argv[2];
            first = 3;
        } else if (wants_help(argc - 2, argv + 2)) {
            print_usage(stdout, cmd, NULL);
            return 0;
        } else if (argc > 2 && argv[2][0] != '-') {
            cli_die(CLI_EXIT_USAGE, "eval: unknown evaluation '%s' (ppl, kld, kv-error, needle, passkey, multikey, rag or stream)", argv[2]);
        } else {
            cli_die(CLI_EXIT_USAGE,
                    "eval: missing evaluation: ppl, kld, kv-error, needle, passkey, multikey, rag or stream (see kvlite eval --help)");
        }
    }
    if (!strcmp(cmd, "kv")) {
        if (argc > 2 && (!strcmp(argv[2], "info") || !strcmp(argv[2], "export") || !strcmp(argv[2], "import") ||
                         !strcmp(argv[2], "eval"))) {
            sub = argv[2];
            first = 3;
        } else if (wants_help(argc - 2, argv + 2)) {
            print_usage(stdout, cmd, NULL);
            return 0;
        } else {
            cli_die(CLI_EXIT_USAGE, "kv: missing or unknown subcommand: info, export, import or eval (see kvlite kv --help)");
        }
    }
    if (wants_help(argc - first, argv + first)) {
        print_usage(stdout, cmd, sub);
        return 0;
    }
    const char *kv_file = NULL; /* kv info FILE */
    if (sub && !strcmp(sub, "info") && first < argc && argv[first][0] != '-') kv_file = argv[first++];

    cli_opts o;
    memset(&o, 0, sizeof o);
    o.cmd = cmd;
    o.subcmd = sub;
    kvl_sampler_params_default(&o.sp);
    o.n_predict = strcmp(cmd, "chat") ? 256 : -1;
    o.bench_prompt = 512;
    o.bench_gen = 64;
    o.reps = 3;
    o.cg_level = -1;
    o.trace_step_ms = 100;
    o.prefix_level = -1;
    o.rtt_ms = 1;
    o.blend_layers = -1;
    o.blend_ram = SIZE_MAX; /* not given */
    char cmdname[32];
    snprintf(cmdname, sizeof cmdname, "%s%s%s", cmd, sub ? " " : "", sub ? sub : "");
    parse_flags(&o, cmd_mask(cmd, sub), cmdname, argc - first, argv + first);
    if (o.kv_set && (!o.kv || !o.kv[0])) cli_die(CLI_EXIT_USAGE, "--kv: empty codec name");
    if ((o.kv_k && !o.kv_k[0]) || (o.kv_v && !o.kv_v[0])) cli_die(CLI_EXIT_USAGE, "--kv-k/--kv-v: empty codec spec");
    if (!o.kv) o.kv = "f16";
    if (!strcmp(cmd, "codecs")) return cmd_codecs(&o);
    if (!strcmp(cmd, "policies")) return cmd_policies(&o);
    if (!strcmp(cmd, "kv")) {
        if (kv_file) {
            if (o.input) cli_die(CLI_EXIT_USAGE, "kv info: give FILE or -i FILE, not both");
            o.input = kv_file;
        }
        if (!strcmp(sub, "info") && !o.input) cli_die(CLI_EXIT_USAGE, "kv info: missing FILE");
        if (!strcmp(sub, "export") && (!o.file || !o.output)) cli_die(CLI_EXIT_USAGE, "kv export: missing -f TEXT or -o FILE");
        if (!strcmp(sub, "import") && !o.input) cli_die(CLI_EXIT_USAGE, "kv import: missing -i FILE");
        if (!strcmp(sub, "eval") && !o.file) cli_die(CLI_EXIT_USAGE, "kv eval: missing -f TEXT");
        if (!strcmp(sub, "export") && o.cg_level < 0 && (o.cg_scale > 0 || o.cg_group || o.cg_chan))
            cli_die(CLI_EXIT_USAGE, "kv export: --cg-scale/--cg-group/--cg-chan need --level");
        if (strcmp(sub, "info") && !o.model) cli_die(CLI_EXIT_USAGE, "%s: missing -m MODEL (see kvlite kv --help)", cmdname);
        return cmd_kv(&o);
    }
    if (o.session && !kvl_session_name_ok(o.session))
        cli_die(CLI_EXIT_USAGE, "--session: invalid name '%s' (1-64 of [A-Za-z0-9._-], not starting with '.')", o.session);
    if (o.store && !o.session) cli_die(CLI_EXIT_USAGE, "--store needs --session");
    if (o.redis && !strcmp(cmd, "chat") && !o.session) cli_die(CLI_EXIT_USAGE, "chat --redis needs --session");
    if (o.redis && o.store) cli_die(CLI_EXIT_USAGE, "--store and --redis: give one session store");
    if (o.redis && strncmp(o.redis, "redis://", 8))
        cli_die(CLI_EXIT_USAGE, "--redis: '%s' is not a redis://HOST[:PORT][/DB] URL", o.redis);

    if (!o.model) cli_die(CLI_EXIT_USAGE, "%s: missing -m MODEL (see kvlite %s --help)", cmdname, cmd);
    if (!strcmp(cmd, "run") || !strcmp(cmd, "tokenize")) {
        if (o.prompt && o.file) cli_die(CLI_EXIT_USAGE, "%s: give either -p or -f, not both", cmd);
        if (!o.prompt && !o.file) cli_die(CLI_EXIT_USAGE, "%s: missing -p PROMPT or -f FILE", cmd);
    }
    if ((!strcmp(cmd, "run") || !strcmp(cmd, "tokenize")) && o.system && !o.chat)
        cli_die(CLI_EXIT_USAGE, "%s: --system needs --chat", cmd);

    if (!strcmp(cmd, "run")) return cmd_run(&o);
    if (!strcmp(cmd, "chat")) return cmd_chat(&o);
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(&o);
    if (!strcmp(cmd, "bench")) return cmd_bench(&o);
    if (cmd_mask(cmd, sub) & C_RET) return cmd_retrieval(&o);
    if (cmd_mask(cmd, sub) & C_RAG) return cmd_rag(&o);
    if (!o.file) cli_die(CLI_EXIT_USAGE, "%s: missing -f TEXT", cmdname);
    if (!strcmp(sub, "stream")) return cmd_stream(&o);
    if (!strcmp(sub, "kv-error")) return cmd_kverr(&o);
    if (!strcmp(sub, "kld") && !o.kv_set && !o.kv_k && !o.kv_v && !o.kv_layers)
        cli_die(CLI_EXIT_USAGE, "eval kld: missing --kv CODEC to compare with f32");
    return cmd_eval(&o);
}
