/* rANS entropy coder over byte symbols with per-context static frequency
 * models (src/kv/cachegen.c codes its quantized KV symbols with it).
 *
 * Static two-pass models: the encoder counts every context's symbols first
 * (kvl_rans_count), normalizes the counts to frequencies summing to
 * 2^KVL_RANS_PROB_BITS (every seen symbol >= 1) and stores them in the
 * stream (kvl_rans_models_write: per context the used symbol range and
 * varint frequencies). Static rather than adaptive because the KV of a
 * chunk is known in full before encoding: the exact histogram codes better
 * than a model still learning (no warm-up on the few thousand symbols of a
 * context), decoding is one table lookup per symbol with no model update,
 * and the stored models cost well under 1% of a chunk of a few hundred tokens
 * when contexts are channel groups (docs/RESULTS.md, "CacheGen format").
 *
 * Coder: 32-bit states in [2^23, 2^31), byte-wise renormalization, two
 * interleaved states (symbol i uses state i & 1) sharing one byte stream,
 * written backwards by the encoder and read forwards by the decoder.
 * Stream: state 0 (4 bytes LE), state 1 (4 bytes LE), renormalization bytes.
 * A decoder that ends with both states back at 2^23 and every byte consumed
 * has checked the whole stream (a cheap integrity check on top of the
 * container's CRC). Every read of the stream and of a model is
 * bounds-checked: the decoder treats its input as hostile. */
#ifndef KVL_UTIL_RANS_H
#define KVL_UTIL_RANS_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define KVL_RANS_PROB_BITS 12
#define KVL_RANS_TOTAL (1u << KVL_RANS_PROB_BITS)
#define KVL_RANS_ALPHA 256  /* symbols are bytes */
#define KVL_RANS_MAX_CTX 65536

/* n_ctx contexts, each a histogram (encoder), frequencies + cumulative
 * frequencies, and (after kvl_rans_decoder_prepare) a slot -> symbol table. */
typedef struct kvl_rans_models kvl_rans_models;

/* 1 <= n_ctx <= KVL_RANS_MAX_CTX. */
kvl_status kvl_rans_models_create(int n_ctx, kvl_rans_models **out, kvl_err *err);
void kvl_rans_models_free(kvl_rans_models *m);
int kvl_rans_models_n_ctx(const kvl_rans_models *m);
/* Zero every histogram and frequency. */
void kvl_rans_models_reset(kvl_rans_models *m);

/* Encoder pass 1: count symbol sym[i] in context ctx[i] for i < n
 * (ctx[i] < n_ctx, checked: KVL_ERR_ARG). sym: [n], ctx: [n]. */
kvl_status kvl_rans_count(kvl_rans_models *m, const uint8_t *sym, const uint16_t *ctx, size_t n, kvl_err *err);
/* Counts -> frequencies summing to KVL_RANS_TOTAL per used context (every
 * counted symbol >= 1); contexts with no counts stay empty. */
void kvl_rans_normalize(kvl_rans_models *m);
/* Frequency of symbol s in context c (0..KVL_RANS_TOTAL), for tests and
 * cost estimates. */
uint32_t kvl_rans_freq(const kvl_rans_models *m, int c, int s);
/* Ideal coded size in bits of the counted symbols under the normalized
 * frequencies (sum of -log2(f / TOTAL)). */
double kvl_rans_cost_bits(const kvl_rans_models *m);

/* Serialized size of the models (bytes), and their serialization into dst
 * [cap] (returns bytes written, 0 if cap is too small). Per context: varint
 * count of used symbols k (0: empty); when k > 0: lo, hi (bytes, lo <= hi),
 * then hi - lo + 1 varint frequencies. */
size_t kvl_rans_models_bytes(const kvl_rans_models *m);
size_t kvl_rans_models_write(const kvl_rans_models *m, uint8_t *dst, size_t cap);
/* Parse models from untrusted src [n] into m (its n_ctx contexts): every
 * context's frequencies must sum to KVL_RANS_TOTAL or be empty, the range
 * within the alphabet, k equal to the nonzero count. *used: bytes read.
 * Builds the decode tables. KVL_ERR_FORMAT with a message on any fault. */
kvl_status kvl_rans_models_read(kvl_rans_models *m, const uint8_t *src, size_t n, size_t *used, kvl_err *err);
/* Build the decode tables from the frequencies (after kvl_rans_normalize;
 * kvl_rans_models_read does it itself). */
kvl_status kvl_rans_decoder_prepare(kvl_rans_models *m, kvl_err *err);

/* Bytes an encoded stream of n symbols can take at most. */
size_t kvl_rans_bound(size_t n);
/* Encode sym [n] with contexts ctx [n] (every symbol must have a nonzero
 * frequency in its context: KVL_ERR_ARG otherwise) into dst [cap >=
 * kvl_rans_bound(n)]; *len: the stream's bytes (8 for n == 0). */
kvl_status kvl_rans_encode(const kvl_rans_models *m, const uint8_t *sym, const uint16_t *ctx, size_t n, uint8_t *dst,
                           size_t cap, size_t *len, kvl_err *err);
/* Decode n symbols into sym [n] from the untrusted stream src [len], symbol
 * i in context ctx[i] (< n_ctx). Fails with KVL_ERR_FORMAT when the stream
 * is short, a state is out of range, a context is empty, or the stream does
 * not end exactly (final states, bytes left). sym may be partly written then. */
kvl_status kvl_rans_decode(const kvl_rans_models *m, const uint16_t *ctx, size_t n, const uint8_t *src, size_t len,
                           uint8_t *sym, kvl_err *err);

/* The same decoder in pieces, for decoding a long stream in blocks: init
 * reads the states, run decodes the next n symbols (contexts ctx [n]),
 * end checks that the stream ended cleanly. */
typedef struct kvl_rans_dec {
    uint32_t x[2];
    const uint8_t *p, *end;
    uint64_t i; /* symbols decoded so far */
} kvl_rans_dec;
kvl_status kvl_rans_dec_init(kvl_rans_dec *d, const uint8_t *src, size_t len, kvl_err *err);
kvl_status kvl_rans_dec_run(kvl_rans_dec *d, const kvl_rans_models *m, const uint16_t *ctx, size_t n, uint8_t *sym,
                            kvl_err *err);
kvl_status kvl_rans_dec_end(const kvl_rans_dec *d, kvl_err *err);

/* Scalar reference decoder of the same stream format (linear search for the
 * symbol, no tables) (tests
 * compare the fast path against it). */
kvl_status kvl_rans_decode_ref(const kvl_rans_models *m, const uint16_t *ctx, size_t n, const uint8_t *src,
                               size_t len, uint8_t *sym, kvl_err *err);

#endif
