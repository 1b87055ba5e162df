/* Writer of random-weight Llama GGUF files (contract in gguf_random.h).
 * Layout as the loader (src/model/model.c) reads it: GGUF v3, metadata,
 * the tensor table, data aligned to 32 bytes. Each weight row is generated
 * from its own seed (seed, tensor, row), quantized with the project's
 * scalar reference quantizer (kvl_quant_row_ref), so the bytes do not
 * depend on the thread count; rows are split over threads per tensor. The
 * vocabulary is synthetic SentencePiece ("llama" tokenizer): <unk>, <s>,
 * </s>, the 256 byte-fallback tokens <0xXX>, the printable ASCII characters
 * with and without the word marker U+2581, lowercase letter pairs, then
 * filler pieces "\u2581w<N>" up to n_vocab; any text tokenizes (byte
 * fallback). */
#include "gguf_random.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cpu/quant.h"

#define GRAND_ALIGN 32
#define GRAND_MIN_VOCAB 300 /* 259 special + byte tokens and a few pieces */
#define WORD "\xE2\x96\x81" /* U+2581, the SentencePiece word marker */

static int say(char *msg, size_t n, const char *fmt, ...) {
    if (msg && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static const struct {
    const char *name;
    int L, E, H, Hkv, F, V, ctx, tied;
    float theta;
} PRESETS[] = {
    /* CPU tests and device smoke tests: head_dim 64 (a device kernel exists) */
    {"tiny", 2, 256, 4, 2, 512, 512, 1024, 0, 10000.0f},
    /* Llama-3.2-1B's dimensions, untied (a tied random model's greedy decoding
     * falls into repeats, see build_table) */
    {"llama3-1b", 16, 2048, 32, 8, 8192, 128256, 131072, 0, 500000.0f},
    /* Llama-3-8B's dimensions */
    {"llama3-8b", 32, 4096, 32, 8, 14336, 128256, 8192, 0, 500000.0f},
};
#define N_PRESETS (int)(sizeof PRESETS / sizeof PRESETS[0])

const char *grand_preset_names(void) { return "tiny, llama3-1b, llama3-8b"; }

int grand_preset(const char *name, grand_spec *s) {
    for (int i = 0; i < N_PRESETS; i++) {
        if (strcmp(name, PRESETS[i].name)) continue;
        memset(s, 0, sizeof *s);
        snprintf(s->preset, sizeof s->preset, "%s", name);
        s->n_layer = PRESETS[i].L, s->n_embd = PRESETS[i].E, s->n_head = PRESETS[i].H;
        s->n_head_kv = PRESETS[i].Hkv, s->n_ff = PRESETS[i].F, s->n_vocab = PRESETS[i].V;
        s->n_ctx = PRESETS[i].ctx, s->tied = PRESETS[i].tied, s->rope_theta = PRESETS[i].theta;
        s->norm_eps = 1e-5f, s->wtype = KVL_TYPE_Q8_0, s->seed = 1, s->gain = 1.0f;
        return 1;
    }
    return 0;
}

int grand_type_parse(const char *name) {
    if (!strcasecmp(name, "f16")) return KVL_TYPE_F16;
    if (!strcasecmp(name, "q8_0")) return KVL_TYPE_Q8_0;
    if (!strcasecmp(name, "q4_0")) return KVL_TYPE_Q4_0;
    if (!strcasecmp(name, "q4_1")) return KVL_TYPE_Q4_1;
    return -1;
}

int grand_validate(const grand_spec *s, char *msg, size_t n) {
    if (s->wtype != KVL_TYPE_F16 && s->wtype != KVL_TYPE_Q8_0 && s->wtype != KVL_TYPE_Q4_0 && s->wtype != KVL_TYPE_Q4_1)
        return say(msg, n, "weight type %d not supported (have f16, q8_0, q4_0, q4_1)", s->wtype);
    if (s->n_layer < 1 || s->n_layer > 1024) return say(msg, n, "layers %d out of range (1..1024)", s->n_layer);
    if (s->n_embd < 32 || s->n_embd > 65536 || s->n_embd % 32)
        return say(msg, n, "dim %d must be a multiple of 32 in 32..65536", s->n_embd);
    if (s->n_ff < 32 || s->n_ff > 262144 || s->n_ff % 32)
        return say(msg, n, "ffn %d must be a multiple of 32 in 32..262144", s->n_ff);
    if (s->n_head < 1 || s->n_embd % s->n_head)
        return say(msg, n, "heads %d must divide dim %d", s->n_head, s->n_embd);
    const int hd = s->n_embd / s->n_head;
    if (hd % 2 || hd > 512) return say(msg, n, "head dim %d (dim / heads) must be even and <= 512", hd);
    if (s->n_head_kv < 1 || s->n_head % s->n_head_kv)
        return say(msg, n, "kv-heads %d must divide heads %d", s->n_head_kv, s->n_head);
    if (s->n_vocab < GRAND_MIN_VOCAB || s->n_vocab > (1 << 24))
        return say(msg, n, "vocab %d out of range (%d..%d)", s->n_vocab, GRAND_MIN_VOCAB, 1 << 24);
    if (s->n_ctx < 1 || s->n_ctx > (1 << 24)) return say(msg, n, "ctx %d out of range (1..%d)", s->n_ctx, 1 << 24);
    if (!(s->rope_theta > 0) || !isfinite(s->rope_theta)) return say(msg, n, "rope theta must be > 0");
    if (!(s->norm_eps >= 0) || !isfinite(s->norm_eps)) return say(msg, n, "norm eps must be >= 0");
    if (!(s->gain > 0) || !isfinite(s->gain) || s->gain > 100) return say(msg, n, "gain must be in (0, 100]");
    return 0;
}

/* ---- the tensor table ---- */

typedef struct gtensor {
    char name[48];
    int n_dims;
    int64_t rows, cols; /* ne = {cols, rows} */
    int type;
    float amp;          /* uniform in [-amp, amp); 0 = a vector of the value fill */
    float fill;
    uint64_t off, bytes;
} gtensor;

static int build_table(const grand_spec *s, gtensor **out) {
    const int E = s->n_embd, hd = E / s->n_head, H = s->n_head * hd, KV = s->n_head_kv * hd;
    const int nt = 2 + !s->tied + 9 * s->n_layer;
    gtensor *t = calloc((size_t)nt, sizeof *t);
    if (!t) return -1;
    int k = 0;
    const float g = s->gain * sqrtf(3.0f); /* uniform amplitude of std gain / sqrt(cols) times sqrt(cols) */
#define MAT(nm, r, c, a) (snprintf(t[k].name, sizeof t[k].name, "%s", nm), t[k].n_dims = 2, t[k].rows = (r), \
                          t[k].cols = (c), t[k].type = s->wtype, t[k].amp = (a), k++)
#define VEC(nm, c, v) (snprintf(t[k].name, sizeof t[k].name, "%s", nm), t[k].n_dims = 1, t[k].rows = 1, \
                       t[k].cols = (c), t[k].type = KVL_TYPE_F32, t[k].amp = 0, t[k].fill = (v), k++)
    /* tied: the embedding is the output matrix too. At std 1 the logits' std
     * is sqrt(dim) and the input token's own row wins (its embedding is in
     * the residual): rows of std gain / (8 sqrt(dim)) and a final norm of 8
     * keep the logits' std ~1 with the residual's self term small. Still, a
     * tied random model's token identity is either drowned in the residual
     * (small rows) or boosts its own logit (large rows): its greedy decoding
     * falls into repeats within a few tokens on some prompts (tiny preset:
     * 1 to 10 distinct of 16). Untied models (the presets) do not. */
    MAT("token_embd.weight", s->n_vocab, E, s->tied ? g / (8 * sqrtf((float)E)) : sqrtf(3.0f));
    VEC("output_norm.weight", E, s->tied ? 8.0f : 1.0f);
    if (!s->tied) MAT("output.weight", s->n_vocab, E, g / sqrtf((float)E));
    for (int l = 0; l < s->n_layer; l++) {
        char nm[48];
#define LNAME(suffix) (snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, suffix), nm)
        VEC(LNAME("attn_norm"), E, 1.0f);
        MAT(LNAME("attn_q"), H, E, g / sqrtf((float)E));
        MAT(LNAME("attn_k"), KV, E, g / sqrtf((float)E));
        MAT(LNAME("attn_v"), KV, E, g / sqrtf((float)E));
        MAT(LNAME("attn_output"), E, H, g / sqrtf((float)H));
        VEC(LNAME("ffn_norm"), E, 1.0f);
        MAT(LNAME("ffn_gate"), s->n_ff, E, g / sqrtf((float)E));
        MAT(LNAME("ffn_up"), s->n_ff, E, g / sqrtf((float)E));
        MAT(LNAME("ffn_down"), E, s->n_ff, g / sqrtf((float)s->n_ff));
#undef LNAME
    }
#undef MAT
#undef VEC
    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        t[i].off = off;
        t[i].bytes = (uint64_t)t[i].rows * kvl_type_row_bytes(t[i].type, t[i].cols);
        off += (t[i].bytes + GRAND_ALIGN - 1) / GRAND_ALIGN * GRAND_ALIGN;
    }
    *out = t;
    return nt;
}

/* ---- the vocabulary (generated on the fly, never stored) ---- */

/* Piece i into b (>= 32 bytes): its text, and its token type and score. */
static size_t piece(int i, char *b, int *type, float *score) {
    static const char *const fixed[3] = {"<unk>", "<s>", "</s>"};
    *score = 0;
    if (i < 3) {
        *type = i == 0 ? 2 : 3; /* unknown, control */
        return (size_t)snprintf(b, 32, "%s", fixed[i]);
    }
    if (i < 3 + 256) {
        *type = 6; /* byte */
        return (size_t)snprintf(b, 32, "<0x%02X>", i - 3);
    }
    *type = 1; /* normal; earlier pieces score higher */
    *score = -(float)(i - 259);
    int j = i - 259;
    if (j == 0) return (size_t)snprintf(b, 32, WORD);
    j--;
    if (j < 94) return (size_t)snprintf(b, 32, "%c", 33 + j);
    j -= 94;
    if (j < 94) return (size_t)snprintf(b, 32, WORD "%c", 33 + j);
    j -= 94;
    if (j < 26 * 26) return (size_t)snprintf(b, 32, "%c%c", 'a' + j / 26, 'a' + j % 26);
    j -= 26 * 26;
    return (size_t)snprintf(b, 32, WORD "w%d", j);
}

/* ---- byte output with one error flag ---- */

typedef struct wr {
    FILE *f;
    int bad;
    int n_kv; /* keys written (checked against N_META) */
} wr;

static void w_bytes(wr *w, const void *p, size_t n) {
    if (!w->bad && n && fwrite(p, 1, n, w->f) != n) w->bad = 1;
}
static void w_u32(wr *w, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    w_bytes(w, b, 4);
}
static void w_u64(wr *w, uint64_t v) { w_u32(w, (uint32_t)v), w_u32(w, (uint32_t)(v >> 32)); }
static void w_f32(wr *w, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    w_u32(w, u);
}
static void w_str(wr *w, const char *s, size_t n) { w_u64(w, n), w_bytes(w, s, n); }
static void w_key(wr *w, const char *k, uint32_t type) { w_str(w, k, strlen(k)), w_u32(w, type), w->n_kv++; }
static void kv_u32(wr *w, const char *k, uint32_t v) { w_key(w, k, 4), w_u32(w, v); }
static void kv_u64(wr *w, const char *k, uint64_t v) { w_key(w, k, 10), w_u64(w, v); }
static void kv_f32(wr *w, const char *k, float v) { w_key(w, k, 6), w_f32(w, v); }
static void kv_str(wr *w, const char *k, const char *v) { w_key(w, k, 8), w_str(w, v, strlen(v)); }
static void kv_bool(wr *w, const char *k, int v) {
    uint8_t b = (uint8_t)(v != 0);
    w_key(w, k, 7), w_bytes(w, &b, 1);
}

#define N_META 23 /* key-value pairs written by write_meta */

static void write_meta(wr *w, const grand_spec *s) {
    char name[128];
    snprintf(name, sizeof name, "kvlite-random %s %s seed %llu", s->preset[0] ? s->preset : "custom",
             kvl_type_name(s->wtype), (unsigned long long)s->seed);
    kv_str(w, "general.architecture", "llama");
    kv_str(w, "general.name", name);
    kv_u32(w, "general.alignment", GRAND_ALIGN);
    kv_u32(w, "llama.block_count", (uint32_t)s->n_layer);
    kv_u32(w, "llama.context_length", (uint32_t)s->n_ctx);
    kv_u32(w, "llama.embedding_length", (uint32_t)s->n_embd);
    kv_u32(w, "llama.feed_forward_length", (uint32_t)s->n_ff);
    kv_u32(w, "llama.attention.head_count", (uint32_t)s->n_head);
    kv_u32(w, "llama.attention.head_count_kv", (uint32_t)s->n_head_kv);
    kv_u32(w, "llama.rope.dimension_count", (uint32_t)(s->n_embd / s->n_head));
    kv_f32(w, "llama.rope.freq_base", s->rope_theta);
    kv_f32(w, "llama.attention.layer_norm_rms_epsilon", s->norm_eps);
    kv_u32(w, "llama.vocab_size", (uint32_t)s->n_vocab);
    kv_u64(w, "kvlite.random.seed", s->seed);
    kv_f32(w, "kvlite.random.gain", s->gain);
    kv_str(w, "tokenizer.ggml.model", "llama");
    char b[32];
    int ty;
    float sc;
    w_key(w, "tokenizer.ggml.tokens", 9), w_u32(w, 8), w_u64(w, (uint64_t)s->n_vocab);
    for (int i = 0; i < s->n_vocab; i++) {
        const size_t n = piece(i, b, &ty, &sc);
        w_str(w, b, n);
    }
    w_key(w, "tokenizer.ggml.scores", 9), w_u32(w, 6), w_u64(w, (uint64_t)s->n_vocab);
    for (int i = 0; i < s->n_vocab; i++) piece(i, b, &ty, &sc), w_f32(w, sc);
    w_key(w, "tokenizer.ggml.token_type", 9), w_u32(w, 5), w_u64(w, (uint64_t)s->n_vocab);
    for (int i = 0; i < s->n_vocab; i++) piece(i, b, &ty, &sc), w_u32(w, (uint32_t)ty);
    kv_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    kv_u32(w, "tokenizer.ggml.bos_token_id", 1);
    kv_u32(w, "tokenizer.ggml.eos_token_id", 2);
    kv_bool(w, "tokenizer.ggml.add_bos_token", 1);
}

/* ---- weights: rows split over threads ---- */

static uint64_t splitmix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

typedef struct job {
    const gtensor *t;
    uint64_t seed;   /* per tensor */
    uint8_t *out;    /* [rows][row bytes] */
    int64_t r0, r1;
    int fail;
} job;

static void *gen_rows(void *arg) {
    job *j = arg;
    const gtensor *t = j->t;
    const size_t rb = kvl_type_row_bytes(t->type, t->cols);
    float *x = malloc(sizeof(float) * (size_t)t->cols);
    if (!x) {
        j->fail = 1;
        return NULL;
    }
    const float scale = t->amp / 2147483648.0f;
    for (int64_t r = j->r0; r < j->r1; r++) {
        uint64_t st = splitmix(j->seed ^ splitmix((uint64_t)r)) | 1;
        for (int64_t c = 0; c < t->cols; c++) { /* xorshift64*, the high 32 bits as a signed uniform */
            st ^= st >> 12, st ^= st << 25, st ^= st >> 27;
            x[c] = (float)(int32_t)((st * 2685821657736338717ull) >> 32) * scale;
        }
        kvl_quant_row_ref((kvl_type)t->type, x, j->out + (size_t)r * rb, t->cols);
    }
    free(x);
    return NULL;
}

static int gen_tensor(const grand_spec *s, const gtensor *t, int ti, uint8_t *buf, int nth) {
    if (t->amp == 0) { /* a norm vector */
        for (int64_t c = 0; c < t->cols; c++) memcpy(buf + 4 * c, &t->fill, 4);
        return 0;
    }
    if (nth > t->rows) nth = (int)t->rows;
    job jobs[64];
    pthread_t th[64];
    int started[64] = {0};
    const uint64_t seed = splitmix(s->seed * 0x2545F4914F6CDD1Dull + (uint64_t)ti);
    int fail = 0;
    for (int i = 0; i < nth; i++) {
        jobs[i] = (job){t, seed, buf, t->rows * i / nth, t->rows * (i + 1) / nth, 0};
        if (i == nth - 1 || pthread_create(&th[i], NULL, gen_rows, &jobs[i])) gen_rows(&jobs[i]); /* last inline */
        else started[i] = 1;
    }
    for (int i = 0; i < nth; i++) {
        if (started[i]) pthread_join(th[i], NULL);
        fail |= jobs[i].fail;
    }
    return fail ? -1 : 0;
}

int grand_write(const grand_spec *s, const char *path, uint64_t *bytes, char *msg, size_t n) {
    if (grand_validate(s, msg, n)) return -1;
    if (!path || !path[0]) return say(msg, n, "no output path");
    gtensor *t = NULL;
    const int nt = build_table(s, &t);
    if (nt < 0) return say(msg, n, "out of memory");
    int nth = s->n_threads > 0 ? s->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (nth < 1) nth = 1;
    if (nth > 64) nth = 64;
    uint64_t maxb = 0;
    for (int i = 0; i < nt; i++) maxb = t[i].bytes > maxb ? t[i].bytes : maxb;
    uint8_t *buf = malloc(maxb);
    wr w = {fopen(path, "wb"), 0, 0};
    if (!buf || !w.f) {
        const int e = errno;
        free(buf), free(t);
        if (w.f) fclose(w.f);
        return w.f ? say(msg, n, "out of memory (%llu bytes for one tensor)", (unsigned long long)maxb)
                   : say(msg, n, "cannot write %s: %s", path, strerror(e));
    }
    setvbuf(w.f, NULL, _IOFBF, 1 << 20);
    w_bytes(&w, "GGUF", 4);
    w_u32(&w, 3);
    w_u64(&w, (uint64_t)nt);
    w_u64(&w, N_META);
    write_meta(&w, s);
    if (w.n_kv != N_META) w.bad = 1; /* a key added without N_META: never a valid file */
    for (int i = 0; i < nt; i++) {
        w_str(&w, t[i].name, strlen(t[i].name));
        w_u32(&w, (uint32_t)t[i].n_dims);
        w_u64(&w, (uint64_t)t[i].cols);
        if (t[i].n_dims == 2) w_u64(&w, (uint64_t)t[i].rows);
        w_u32(&w, (uint32_t)t[i].type);
        w_u64(&w, t[i].off);
    }
    static const uint8_t zeros[GRAND_ALIGN] = {0};
    long pos = ftell(w.f);
    if (pos < 0) w.bad = 1;
    else w_bytes(&w, zeros, (size_t)((GRAND_ALIGN - pos % GRAND_ALIGN) % GRAND_ALIGN));
    uint64_t total = (uint64_t)(pos < 0 ? 0 : pos);
    total += (GRAND_ALIGN - total % GRAND_ALIGN) % GRAND_ALIGN;
    int fail = 0;
    for (int i = 0; i < nt && !w.bad && !fail; i++) {
        fail = gen_tensor(s, &t[i], i, buf, nth);
        w_bytes(&w, buf, t[i].bytes);
        const size_t pad = (size_t)((GRAND_ALIGN - t[i].bytes % GRAND_ALIGN) % GRAND_ALIGN);
        if (i + 1 < nt) w_bytes(&w, zeros, pad);
        total += t[i].bytes + (i + 1 < nt ? pad : 0);
    }
    if (fclose(w.f)) w.bad = 1;
    free(buf), free(t);
    if (w.bad || fail) {
        const int e = errno;
        remove(path);
        return fail ? say(msg, n, "out of memory generating weights")
                    : say(msg, n, "writing %s failed: %s", path, strerror(e));
    }
    if (bytes) *bytes = total;
    return 0;
}
