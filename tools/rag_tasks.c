/* RAG task generator and scorer (see rag_tasks.h). */
#include "rag_tasks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *ADJ[] = {"silver", "crimson", "amber",  "violet", "golden", "emerald", "copper", "ivory",
                            "scarlet", "azure",  "bronze", "jade",   "coral",  "indigo",  "olive",  "ruby"};
static const char *NOUN[] = {"lantern", "compass", "harbor", "falcon", "orchard", "bridge", "archive", "meadow",
                             "beacon",  "glacier", "canyon", "citadel", "lagoon", "quarry", "tower",   "valley"};

/* Relations of the planted facts: chunk k's fact uses relation k % 6, so
 * the facts of one prompt read differently (a 135M model confuses six facts
 * of one template, even with a full prefill). fact: "The R of the KEY is V.",
 * question "What is the R of the KEY?". */
static const char *REL[] = {"access code", "serial number", "room number", "ticket number", "postal code",
                            "phone extension"};
#define N_REL 6

static int fail(char *err, size_t n, const char *msg) {
    if (err && n) snprintf(err, n, "%s", msg);
    return -1;
}

static kvl_token *tok(const kvl_model *m, const char *s, int special, int *n) {
    const int64_t k = kvl_tokenize(m, s, strlen(s), 0, special, NULL, 0);
    if (k < 0) return NULL;
    kvl_token *t = malloc(sizeof(kvl_token) * (size_t)(k ? k : 1));
    if (!t) return NULL;
    kvl_tokenize(m, s, strlen(s), 0, special, t, k);
    *n = (int)k;
    return t;
}

/* The chat template around a user message: head before the content, tail after. */
static int template_split(const kvl_model *m, rag_set *s, char *err, size_t n) {
    const char *mark = "\x01";
    kvl_chat_msg msgs[2] = {{"system", "You are a helpful assistant. Answer from the documents."}, {"user", mark}};
    char buf[4096];
    const int64_t len = kvl_chat_apply(m, msgs, 2, 1, buf, sizeof buf);
    if (len < 0 || len >= (int64_t)sizeof buf) return fail(err, n, "rag: cannot render the chat template");
    char *at = strchr(buf, 1);
    if (!at) return fail(err, n, "rag: the chat template dropped the message");
    *at = 0;
    /* the head as kvl_chat_tokenize starts a chat: BOS per the model's setting, once */
    const int64_t k = kvl_tokenize(m, buf, strlen(buf), -1, 1, NULL, 0);
    if (k < 1) return fail(err, n, "rag: cannot tokenize the template");
    kvl_token *h = malloc(sizeof(kvl_token) * (size_t)k);
    if (!h) return fail(err, n, "rag: out of memory");
    kvl_tokenize(m, buf, strlen(buf), -1, 1, h, k);
    int nh = (int)k;
    kvl_model_info info;
    kvl_model_get_info(m, &info);
    if (nh >= 2 && info.bos >= 0 && h[0] == info.bos && h[1] == info.bos) memmove(h, h + 1, sizeof(kvl_token) * (size_t)--nh);
    s->head = h;
    s->n_head = nh;
    s->tail = tok(m, at + 1, 1, &s->n_tail);
    if (!s->tail) return fail(err, n, "rag: cannot tokenize the template");
    return 0;
}

int rag_set_build(const kvl_model *m, const task_corpus *c, uint64_t seed, int n_chunks, int T, rag_set *out,
                  char *err, size_t err_len) {
    memset(out, 0, sizeof *out);
    if (n_chunks < 1 || n_chunks > RAG_MAX_CHUNKS || T < 32)
        return fail(err, err_len, "rag: chunks must be 1..64 and chunk tokens at least 32");
    if (!c || c->n < 8) return fail(err, err_len, "rag: the corpus has too few sentences");
    if (template_split(m, out, err, err_len)) return rag_set_free(out), -1;
    out->n_chunks = n_chunks;
    out->chunk_tokens = T;
    uint64_t r = seed * 0x9E3779B97F4A7C15ull ^ 0x5241474B42ull;
    task_rng_next(&r);
    const int NA = (int)(sizeof ADJ / sizeof ADJ[0]), NN = (int)(sizeof NOUN / sizeof NOUN[0]);
    char *used = calloc((size_t)NA * NN, 1);
    size_t cap = 1 << 16;
    char *text = malloc(cap);
    if (!used || !text) {
        free(used), free(text);
        rag_set_free(out);
        return fail(err, err_len, "rag: out of memory");
    }
    for (int k = 0; k < n_chunks; k++) {
        rag_fact *f = &out->fact[k];
        int a, b;
        do {
            a = (int)task_rng_below(&r, (uint64_t)NA);
            b = (int)task_rng_below(&r, (uint64_t)NN);
        } while (used[a * NN + b]);
        used[a * NN + b] = 1;
        snprintf(f->key, sizeof f->key, "%s %s", ADJ[a], NOUN[b]);
        snprintf(f->value, sizeof f->value, "%05u", (unsigned)(10000 + task_rng_below(&r, 90000)));
        f->chunk = k;
        char fact[160];
        f->rel = k % N_REL;
        snprintf(fact, sizeof fact, " The %s of the %s is %s.", REL[f->rel], f->key, f->value);
        /* consecutive sentences from a random start, the fact at a boundary in the first 85% */
        const int start = (int)task_rng_below(&r, (uint64_t)c->n);
        const int fact_at = (int)(task_rng_below(&r, (uint64_t)(T * 85 / 100)));
        size_t len = 0;
        int toks = 0, planted = 0;
        for (int i = 0; toks < T + 16; i++) {
            const char *sent = c->sent[(start + i) % c->n];
            char piece[512];
            const char *add = piece;
            if (!planted && toks >= fact_at) {
                add = fact;
                planted = 1;
                i--;
            } else {
                snprintf(piece, sizeof piece, " %s", sent);
            }
            const size_t pl = strlen(add);
            if (len + pl + 1 > cap) {
                char *t2 = realloc(text, cap * 2);
                if (!t2) break;
                text = t2;
                cap *= 2;
            }
            memcpy(text + len, add, pl + 1);
            len += pl;
            toks += (int)kvl_tokenize(m, add, pl, 0, 0, NULL, 0);
        }
        int n = 0;
        kvl_token *t = tok(m, text, 0, &n);
        if (!t || n < T) {
            free(t), free(used), free(text);
            rag_set_free(out);
            return fail(err, err_len, "rag: cannot build a chunk (corpus too small?)");
        }
        out->chunk[k] = t; /* the first T tokens; the fact lies in the first 85% + one sentence */
    }
    free(used);
    free(text);
    return 0;
}

void rag_set_free(rag_set *s) {
    free(s->head);
    free(s->tail);
    for (int i = 0; i < RAG_MAX_CHUNKS; i++) free(s->chunk[i]);
    memset(s, 0, sizeof *s);
}

int rag_question_make(const kvl_model *m, const rag_set *s, uint64_t seed, int qi, rag_question *out, char *err,
                      size_t err_len) {
    memset(out, 0, sizeof *out);
    uint64_t r = (seed * 0xD1B54A32D192ED03ull) ^ ((uint64_t)qi * 0x8CB92BA72F3D8DD7ull) ^ 0x51ull;
    task_rng_next(&r);
    const int N = s->n_chunks;
    for (int i = 0; i < N; i++) out->order[i] = i;
    for (int i = N - 1; i > 0; i--) { /* Fisher-Yates */
        const int j = (int)task_rng_below(&r, (uint64_t)i + 1);
        const int t = out->order[i];
        out->order[i] = out->order[j];
        out->order[j] = t;
    }
    out->n_facts = (qi & 1) && N >= 2 ? 2 : 1;
    out->fact[0] = (int)task_rng_below(&r, (uint64_t)N);
    if (out->n_facts == 2) {
        out->fact[1] = (int)task_rng_below(&r, (uint64_t)N - 1);
        if (out->fact[1] >= out->fact[0]) out->fact[1]++;
    }
    char text[512];
    const rag_fact *a = &s->fact[out->fact[0]];
    if (out->n_facts == 1) {
        snprintf(text, sizeof text, "\nQuestion: What is the %s of the %s? Answer with the number only.", REL[a->rel],
                 a->key);
        snprintf(out->expected, sizeof out->expected, "%s", a->value);
    } else {
        const rag_fact *b = &s->fact[out->fact[1]];
        snprintf(text, sizeof text,
                 "\nQuestion: What are the %s of the %s and the %s of the %s? Answer with the two numbers only.",
                 REL[a->rel], a->key, REL[b->rel], b->key);
        snprintf(out->expected, sizeof out->expected, "%s %s", a->value, b->value);
    }
    /* the assistant's answer starts with the first asked key, so it goes straight to the number */
    char lead[128];
    snprintf(lead, sizeof lead, "The %s of the %s is", REL[a->rel], a->key);
    int nq = 0, nl = 0;
    kvl_token *q = tok(m, text, 0, &nq), *l = tok(m, lead, 0, &nl);
    if (!q || !l) return free(q), free(l), fail(err, err_len, "rag: cannot tokenize the question");
    out->q = malloc(sizeof(kvl_token) * (size_t)(nq + s->n_tail + nl));
    if (!out->q) return free(q), free(l), fail(err, err_len, "rag: out of memory");
    memcpy(out->q, q, sizeof(kvl_token) * (size_t)nq);
    memcpy(out->q + nq, s->tail, sizeof(kvl_token) * (size_t)s->n_tail);
    memcpy(out->q + nq + s->n_tail, l, sizeof(kvl_token) * (size_t)nl);
    out->n_q = nq + s->n_tail + nl;
    free(q);
    free(l);
    return 0;
}

void rag_question_free(rag_question *q) {
    free(q->q);
    q->q = NULL;
}

int rag_score(const rag_question *q, const rag_set *s, const char *answer) {
    for (int i = 0; i < q->n_facts; i++)
        if (!task_score(answer, s->fact[q->fact[i]].value)) return 0;
    return 1;
}
