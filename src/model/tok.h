/* Tokenizer built from GGUF metadata: byte-level BPE (GPT-2 style; the
 * pre-tokenizer regex chosen from tokenizer.ggml.pre, run with PCRE2) and the
 * SentencePiece-style BPE of Llama-2 models (tokenizer.ggml.model == "llama",
 * with byte fallback); special tokens. The tokenizer owns the model's chat
 * template (model/chat.h). */
#ifndef KVL_MODEL_TOK_H
#define KVL_MODEL_TOK_H

#include <stddef.h>
#include <stdint.h>

#include "kvlite.h"
#include "model/gguf.h"

typedef struct kvl_tok kvl_tok;
typedef struct kvl_chat kvl_chat; /* model/chat.h */

/* Build from the GGUF's tokenizer.* metadata (g must outlive the tokenizer). */
kvl_status kvl_tok_create(const kvl_gguf *g, kvl_tok **out, kvl_err *err);
void kvl_tok_free(kvl_tok *t);

int kvl_tok_n_vocab(const kvl_tok *t);
kvl_token kvl_tok_bos(const kvl_tok *t); /* -1 if none */
kvl_token kvl_tok_eos(const kvl_tok *t);
kvl_token kvl_tok_eot(const kvl_tok *t); /* end of turn (<|im_end|>, <|eot_id|>) or -1 */
int kvl_tok_is_eog(const kvl_tok *t, kvl_token id);
int kvl_tok_add_bos_default(const kvl_tok *t);
/* The chat template created with t (never NULL for a created tokenizer). */
const kvl_chat *kvl_tok_chat(const kvl_tok *t);
/* Raw vocabulary text of token id (not NUL-terminated, length in *len), or
 * NULL for an id outside the vocabulary. */
const char *kvl_tok_text(const kvl_tok *t, kvl_token id, size_t *len);

/* Same contract as kvl_tokenize in kvlite.h (parse_special = 1: control
 * tokens match anywhere; 0: nowhere). Special-token matching is
 * leftmost-longest on the raw bytes (as HF tokenizers): control tokens
 * (token_type 3) only when parse_special, user-defined tokens (type 4) always
 * (as HF and llama.cpp treat non-special added tokens). Byte-level BPE: a
 * byte whose byte-level character is missing from the vocab is dropped (as
 * HF does; SmolLM2 lacks 21 such bytes), every other byte round-trips through
 * kvl_tok_piece, invalid UTF-8 included. Thread-safe (const tokenizer). */
int64_t kvl_tok_encode(const kvl_tok *t, const char *text, size_t len, int add_bos, int parse_special,
                       kvl_token *out, int64_t cap);

/* Template markup in a text given to kvl_tok_encode_ex: bytes [off, off+len). */
typedef struct kvl_tok_span {
    size_t off, len;
} kvl_tok_span;

typedef struct kvl_tok_enc_opts {
    int add_bos;                /* as kvl_tokenize: < 0 = the model's default */
    int bos_once;               /* a BOS added by add_bos is not repeated when the text
                                   itself starts with the BOS control token */
    const kvl_tok_span *markup; /* sorted, disjoint, inside the text */
    int n_markup;
} kvl_tok_enc_opts;

/* kvl_tok_encode with explicit places where control tokens may be matched:
 * only wholly inside one markup span (a chat template's own text); everywhere
 * else control-token text is plain text. User-defined tokens match anywhere
 * but never across a span boundary. Pre-tokenization runs over the text
 * between matched special tokens as usual, whatever the spans, so for text
 * whose control-token strings all lie in markup the ids equal kvl_tok_encode
 * with parse_special = 1. Returns the count (may exceed cap) or a negative
 * kvl_status, with a message in err (may be NULL): KVL_ERR_ARG for bad
 * arguments or len > KVL_TOKENIZE_MAX_BYTES (checked before text is read),
 * KVL_ERR_NOMEM, KVL_ERR_INTERNAL for a regex engine failure. */
int64_t kvl_tok_encode_ex(const kvl_tok *t, const char *text, size_t len, const kvl_tok_enc_opts *o,
                          kvl_token *out, int64_t cap, kvl_err *err);

/* Same contract as kvl_token_to_piece. */
int kvl_tok_piece(const kvl_tok *t, kvl_token id, int render_special, char *buf, int cap);

#endif
