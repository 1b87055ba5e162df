/* Long-context retrieval tasks for `kvlite eval needle|passkey|multikey`:
 * sentence corpus loading (Paul Graham essays), seeded prompt generators that
 * hit a target length in tokens and put the needle at a depth measured in
 * tokens, and exact-match scorers. Everything is deterministic for a seed
 * (own splitmix64 generator, integer arithmetic, sorted file order), so the
 * same seed gives byte-identical prompts on every run and platform.
 * Uses only kvlite.h (tokenizer, chat template) and libc/POSIX. */
#ifndef KVL_TOOLS_TASKS_H
#define KVL_TOOLS_TASKS_H

#include "kvlite.h"

#include <stddef.h>
#include <stdint.h>

typedef enum { TASK_NEEDLE = 0, TASK_PASSKEY, TASK_MULTIKEY } task_kind;

/* "needle", "passkey", "multikey". */
const char *task_kind_name(task_kind k);
/* 0 and *k set if s names a task, else -1. */
int task_kind_parse(const char *s, task_kind *k);

/* ---- deterministic generator -------------------------------------------------- */

/* splitmix64 step: advances *state, returns 64 random bits. */
uint64_t task_rng_next(uint64_t *state);
/* Uniform integer in [0, n) (n > 0), unbiased (rejection). */
uint64_t task_rng_below(uint64_t *state, uint64_t n);

/* ---- haystack corpus ------------------------------------------------------------ */

/* Sentences cut from plain-text files, in file-name order then text order. */
typedef struct task_corpus {
    char *buf;     /* all sentences, NUL-separated */
    char **sent;   /* [n] pointers into buf */
    int n;
    char *lower;   /* lower-cased copy of all sentences (space-joined), for collision checks */
} task_corpus;

/* Load every *.txt file of dir (sorted by name) and split into sentences.
 * Returns 0, or -1 with a message in err. */
int task_corpus_load(task_corpus *c, const char *dir, char *err, size_t err_len);
/* Same from one in-memory text (tests). */
int task_corpus_from_text(task_corpus *c, const char *text, size_t len, char *err, size_t err_len);
void task_corpus_free(task_corpus *c);

/* Split text into clean sentences: whitespace collapsed, footnote markers
 * "[n]" removed, a sentence ends at . ! ? (plus closing quotes) followed by
 * space + capital, or directly by a capital (paragraphs glued without a
 * newline), never after a known abbreviation; kept only if it starts with a
 * capital letter, ends with terminal punctuation and has 20..320 bytes.
 * Calls fn(sentence, len, user) for each kept one (sentence not NUL-terminated). */
void task_split_sentences(const char *text, size_t len, void (*fn)(const char *s, size_t n, void *user),
                          void *user);

/* ---- prompts -------------------------------------------------------------------- */

typedef struct task_config {
    task_kind kind;
    const task_corpus *corpus; /* needle, multikey (ignored by passkey) */
    int n_keys;                /* multikey: number of key -> value facts (>= 1; 0 = 4) */
    /* needle: a custom fact; all three or none. answer is the scored value. */
    const char *needle, *question, *answer;
} task_config;

/* One haystack for (config, seed, target length): the needle(s), the question
 * and the filler units, sized so the whole chat prompt is within 2% of the
 * target. The needle text depends on the seed only (same across lengths); the
 * filler on the seed and (multikey distractor positions) the length. */
typedef struct task_hay task_hay;

/* Build; returns 0, or -1 with err (e.g. target too short, corpus empty). */
int task_hay_build(const kvl_model *m, const task_config *cfg, uint64_t seed, int target_tokens, task_hay **out,
                   char *err, size_t err_len);
void task_hay_free(task_hay *h);

/* The value the answer must contain, and whether it is a number. */
const char *task_hay_expected(const task_hay *h);
int task_hay_numeric(const task_hay *h);
/* Facts of the prompt (1 for needle/passkey, K for multikey; fact 0 is the one
 * asked). key is the entity / key word ("" for passkey), value the answer. */
int task_hay_n_facts(const task_hay *h);
void task_hay_fact(const task_hay *h, int i, const char **key, const char **value, const char **sentence);
const char *task_hay_question(const task_hay *h);

typedef struct task_prompt {
    char *text;          /* the rendered chat prompt (NUL-terminated) */
    size_t text_len;
    kvl_token *tokens;   /* kvl_chat_tokenize of the message (what the model is given) */
    int n_tokens;
    int needle_pos;      /* index in tokens of the asked needle's first token */
    int hay_start;       /* index of the first haystack token (after the template header) */
    int hay_tokens;      /* haystack tokens, the asked needle excluded */
    int hay_end;         /* index of the first token after the haystack (the question follows) */
    double depth;        /* actual depth: 100 * (needle_pos - hay_start) / hay_tokens */
} task_prompt;

/* Render the prompt with the asked needle at depth_pct (0..100) of the haystack
 * tokens, at the sentence boundary nearest to the target. 0 or -1 with err. */
int task_hay_prompt(const task_hay *h, int depth_pct, task_prompt *out, char *err, size_t err_len);
void task_prompt_free(task_prompt *p);

/* ---- scoring -------------------------------------------------------------------- */

/* 1 if value is a non-empty string of ASCII digits. */
int task_is_number(const char *value);

/* 1 if answer contains expected. Numbers: the exact digit string as a whole
 * number, bounded by non-digits (so 14829173 or 04829173 do not match
 * 4829173); thousands separators in canonical position are accepted
 * ("4,829,173"), a decimal part is not ("4829173.5"). Words/phrases:
 * case-insensitive, bounded by non-alphanumerics, surrounding punctuation and
 * spaces ignored. An empty expected value never matches. */
int task_score(const char *answer, const char *expected);

#endif
