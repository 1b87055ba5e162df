/* `kvlite gguf-random`: write a GGUF with deterministic random weights of a
 * Llama architecture (tools/gguf_random.c), then optionally load it through
 * the normal model loader and report what a forward pass gives (--check N:
 * the prompt's logits' spread and N greedy tokens on the CPU, or on the
 * device with --device cuda). Parses its own flags. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cpu/quant.h"
#include "gguf_random.h"

static const char USAGE[] =
    "usage: kvlite gguf-random --preset NAME -o FILE [flags]\n\n"
    "Writes a Llama GGUF with random weights (uniform, std gain/sqrt(cols); embedding std 1;\n"
    "norms 1) and a synthetic SentencePiece vocabulary (<unk> <s> </s>, 256 byte tokens,\n"
    "ASCII pieces, filler pieces) that the model loader accepts.\n\n"
    "  --preset NAME     tiny (2 layers, 256 dim, 4/2 heads, ffn 512, vocab 512),\n"
    "                    llama3-1b (16, 2048, 32/8, 8192, 128256; untied),\n"
    "                    llama3-8b (32, 4096, 32/8, 14336, 128256; ~8.5 GB as q8_0)\n"
    "  -o, --output FILE the GGUF to write\n"
    "  --type T          weight type of every matrix: q8_0 (default), q4_0, q4_1, f16\n"
    "  --seed S          seed (default 1): same flags and seed = same bytes\n"
    "  --gain G          scale of every matrix (default 1)\n"
    "  --layers N --dim N --heads N --kv-heads N --ffn N --vocab N --ctx N --theta X --tied 0|1\n"
    "                    override the preset's architecture (--tied 1: no output matrix; such\n"
    "                    a random model's greedy decoding tends to repeat tokens)\n"
    "  -t, --threads N   generator threads (default all cores)\n"
    "  --check N         load the file, prefill a prompt, print the logits' spread and N\n"
    "                    greedy tokens\n"
    "  --device D        cpu (default) or cuda, for --check\n";

static long num(const char *flag, const char *v, long lo, long hi) {
    char *e;
    const long x = strtol(v, &e, 10);
    if (!*v || *e || x < lo || x > hi) cli_die(CLI_EXIT_USAGE, "gguf-random: %s wants an integer in %ld..%ld, got '%s'", flag, lo, hi, v);
    return x;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* Load path, prefill a fixed prompt, print the logits' mean / std / range,
 * the top token's margin and n greedy tokens. */
static int check(const char *path, int n, int device) {
    char err[256];
    kvl_model *m = NULL;
    const double t0 = now_s();
    if (kvl_model_load(path, &m, err, sizeof err)) cli_die(CLI_EXIT_RUNTIME, "gguf-random --check: %s", err);
    kvl_model_info mi;
    kvl_model_get_info(m, &mi);
    kvl_ctx_params p;
    kvl_ctx_params_default(&p);
    p.n_ctx = 64 + n;
    p.device = device;
    kvl_ctx *c = NULL;
    if (kvl_ctx_create(m, &p, &c, err, sizeof err)) cli_die(CLI_EXIT_RUNTIME, "gguf-random --check: %s", err);
    kvl_seq *s = NULL;
    if (kvl_seq_create(c, &s)) cli_die(CLI_EXIT_RUNTIME, "gguf-random --check: %s", kvl_ctx_error(c));
    const char *text = "The quick brown fox jumps over the lazy dog.";
    kvl_token tok[64];
    const int64_t nt = kvl_tokenize(m, text, strlen(text), 1, 0, tok, 64);
    if (nt <= 0) cli_die(CLI_EXIT_RUNTIME, "gguf-random --check: tokenize failed");
    float *lg = malloc(sizeof(float) * (size_t)mi.n_vocab);
    if (!lg) cli_die(CLI_EXIT_RUNTIME, "gguf-random --check: out of memory");
    const double t1 = now_s();
    if (kvl_prefill(s, tok, (int)nt, lg, NULL)) cli_die(CLI_EXIT_RUNTIME, "gguf-random --check: %s", kvl_ctx_error(c));
    const double t2 = now_s();
    double sum = 0, sq = 0, lo = INFINITY, hi = -INFINITY, second = -INFINITY;
    int finite = 1;
    for (int i = 0; i < mi.n_vocab; i++) {
        const double v = lg[i];
        finite &= isfinite(v) != 0;
        sum += v, sq += v * v;
        if (v > hi) second = hi, hi = v;
        else if (v > second) second = v;
        if (v < lo) lo = v;
    }
    const double mean = sum / mi.n_vocab, sd = sqrt(fmax(0, sq / mi.n_vocab - mean * mean));
    printf("check: %s, %d layers, dim %d, vocab %d, device %s; load + context %.2f s, prefill of %lld tokens %.3f s\n",
           path, mi.n_layer, mi.n_embd, mi.n_vocab, device ? "cuda" : "cpu", t1 - t0, (long long)nt, t2 - t1);
    printf("check: logits finite %s, mean %.4f, std %.4f, min %.4f, max %.4f, top-2 margin %.4f\n", finite ? "yes" : "NO",
           mean, sd, lo, hi, hi - second);
    printf("check: greedy:");
    int distinct = 0;
    kvl_token *seen = calloc((size_t)n + 1, sizeof *seen);
    for (int i = 0; i < n && seen; i++) {
        int best = 0;
        for (int v = 1; v < mi.n_vocab; v++)
            if (lg[v] > lg[best]) best = v;
        int dup = 0;
        for (int j = 0; j < distinct; j++) dup |= seen[j] == best;
        if (!dup) seen[distinct++] = best;
        printf(" %d", best);
        if (kvl_decode(s, best, lg)) cli_die(CLI_EXIT_RUNTIME, "gguf-random --check: %s", kvl_ctx_error(c));
    }
    printf("\ncheck: %d distinct of %d greedy tokens\n", distinct, n);
    free(seen), free(lg);
    kvl_seq_free(s);
    kvl_ctx_free(c);
    kvl_model_free(m);
    return finite ? CLI_EXIT_OK : CLI_EXIT_RUNTIME;
}

int cmd_gguf_random(int argc, char **argv) {
    grand_spec s;
    const char *preset = NULL, *out = NULL;
    int type = -1, n_check = -1, device = 0, tied = -1;
    long L = 0, E = 0, H = 0, Hkv = 0, F = 0, V = 0, C = 0, th = 0;
    double theta = 0, gain = 1;
    unsigned long long seed = 1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            return CLI_EXIT_OK;
        }
        if (i + 1 >= argc) cli_die(CLI_EXIT_USAGE, "gguf-random: %s needs a value (see kvlite gguf-random --help)", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--preset")) preset = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) out = v;
        else if (!strcmp(a, "--type")) {
            if ((type = grand_type_parse(v)) < 0)
                cli_die(CLI_EXIT_USAGE, "gguf-random: unknown --type '%s' (have q8_0, q4_0, q4_1, f16)", v);
        } else if (!strcmp(a, "--seed")) {
            char *e;
            seed = strtoull(v, &e, 10);
            if (!*v || *e || *v == '-') cli_die(CLI_EXIT_USAGE, "gguf-random: --seed wants a non-negative integer, got '%s'", v);
        } else if (!strcmp(a, "--gain")) {
            char *e;
            gain = strtod(v, &e);
            if (!*v || *e) cli_die(CLI_EXIT_USAGE, "gguf-random: --gain wants a number, got '%s'", v);
        } else if (!strcmp(a, "--theta")) {
            char *e;
            theta = strtod(v, &e);
            if (!*v || *e || !(theta > 0)) cli_die(CLI_EXIT_USAGE, "gguf-random: --theta wants a number > 0, got '%s'", v);
        } else if (!strcmp(a, "--layers")) L = num(a, v, 1, 1024);
        else if (!strcmp(a, "--dim")) E = num(a, v, 1, 65536);
        else if (!strcmp(a, "--heads")) H = num(a, v, 1, 65536);
        else if (!strcmp(a, "--kv-heads")) Hkv = num(a, v, 1, 65536);
        else if (!strcmp(a, "--ffn")) F = num(a, v, 1, 262144);
        else if (!strcmp(a, "--vocab")) V = num(a, v, 1, 1 << 24);
        else if (!strcmp(a, "--ctx")) C = num(a, v, 1, 1 << 24);
        else if (!strcmp(a, "--tied")) tied = (int)num(a, v, 0, 1);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) th = num(a, v, 0, 64);
        else if (!strcmp(a, "--check")) n_check = (int)num(a, v, 0, 4096);
        else if (!strcmp(a, "--device")) {
            if (!strcmp(v, "cpu")) device = 0;
            else if (!strcmp(v, "cuda")) device = 1;
            else cli_die(CLI_EXIT_USAGE, "gguf-random: --device wants cpu or cuda, got '%s'", v);
        } else cli_die(CLI_EXIT_USAGE, "gguf-random: unknown flag '%s' (see kvlite gguf-random --help)", a);
    }
    if (!preset) cli_die(CLI_EXIT_USAGE, "gguf-random: --preset is required (%s)", grand_preset_names());
    if (!grand_preset(preset, &s)) cli_die(CLI_EXIT_USAGE, "gguf-random: unknown preset '%s' (have %s)", preset, grand_preset_names());
    if (!out) cli_die(CLI_EXIT_USAGE, "gguf-random: -o FILE is required");
    if (type >= 0) s.wtype = type;
    if (L) s.n_layer = (int)L;
    if (E) s.n_embd = (int)E;
    if (H) s.n_head = (int)H;
    if (Hkv) s.n_head_kv = (int)Hkv;
    if (F) s.n_ff = (int)F;
    if (V) s.n_vocab = (int)V;
    if (C) s.n_ctx = (int)C;
    if (tied >= 0) s.tied = tied;
    if (theta > 0) s.rope_theta = (float)theta;
    s.seed = seed, s.gain = (float)gain, s.n_threads = (int)th;
    char msg[256];
    if (grand_validate(&s, msg, sizeof msg)) cli_die(CLI_EXIT_USAGE, "gguf-random: %s", msg);
    const double t0 = now_s();
    uint64_t bytes = 0;
    if (grand_write(&s, out, &bytes, msg, sizeof msg)) cli_die(CLI_EXIT_RUNTIME, "gguf-random: %s", msg);
    printf("wrote %s: %s %s, %d layers, dim %d, %d/%d heads, ffn %d, vocab %d%s, seed %llu, gain %g: %.3f GB in %.1f s\n",
           out, s.preset, kvl_type_name(s.wtype), s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff, s.n_vocab,
           s.tied ? " (tied)" : "", (unsigned long long)s.seed, (double)s.gain, bytes / 1e9, now_s() - t0);
    fflush(stdout);
    return n_check >= 0 ? check(out, n_check, device) : CLI_EXIT_OK;
}
