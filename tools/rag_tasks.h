/* RAG tasks for `kvlite eval rag` (tools/cmd_rag.c): a knowledge base of
 * chunks cut from essays with made-up facts planted in them, and questions
 * over the chunks shuffled into a different order for every question (some
 * questions need facts from two chunks). Deterministic for a seed (the
 * splitmix64 generator of tasks.h). Prompt = chat header + chunks + question
 * + the template's assistant header, as token segments, so every mode of the
 * eval sees the same token ids. */
#ifndef KVL_TOOLS_RAG_TASKS_H
#define KVL_TOOLS_RAG_TASKS_H

#include "kvlite.h"
#include "tasks.h"

#define RAG_MAX_CHUNKS 64

typedef struct rag_fact {
    char key[64];   /* "silver lantern" */
    char value[16]; /* 5-digit number */
    int rel;        /* relation ("access code", "serial number", ...) */
    int chunk;
} rag_fact;

typedef struct rag_set {
    kvl_token *head;                  /* chat template up to the user message content [n_head] */
    int n_head;
    kvl_token *tail;                  /* end of the user message + assistant header [n_tail] */
    int n_tail;
    kvl_token *chunk[RAG_MAX_CHUNKS]; /* [n_chunks][chunk_tokens] */
    int n_chunks, chunk_tokens;
    rag_fact fact[RAG_MAX_CHUNKS];    /* fact i is planted in chunk i */
} rag_set;

typedef struct rag_question {
    int order[RAG_MAX_CHUNKS];        /* chunk order in the prompt */
    int n_facts, fact[2];             /* facts asked (1 or 2, in different chunks) */
    kvl_token *q;                     /* question tokens, template tail included [n_q] */
    int n_q;
    char expected[40];                /* values, space-separated */
} rag_question;

/* Build the knowledge base for seed: n_chunks chunks of exactly chunk_tokens
 * tokens, each with one fact at a sentence boundary in its first 85%.
 * 0, or -1 with err. */
int rag_set_build(const kvl_model *m, const task_corpus *c, uint64_t seed, int n_chunks, int chunk_tokens,
                  rag_set *out, char *err, size_t err_len);
void rag_set_free(rag_set *s);
/* Question qi of the set (odd qi ask two facts when there are 2+ chunks);
 * its tokens end with the template's assistant header and the answer's
 * lead "The RELATION of the KEY is" (the first asked fact). */
int rag_question_make(const kvl_model *m, const rag_set *s, uint64_t seed, int qi, rag_question *out, char *err,
                      size_t err_len);
void rag_question_free(rag_question *q);
/* 1 when answer contains every expected value (task_score per value). */
int rag_score(const rag_question *q, const rag_set *s, const char *answer);

#endif
