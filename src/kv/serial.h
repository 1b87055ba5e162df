/* Serialization of KV page tables (the page-level half of a session file;
 * src/engine/session.c adds the model identity, the sequences' positions
 * and token ids, and the chat messages). Format (docs/ARCHITECTURE.md,
 * "Sessions and serialization"): a 32-byte header, then sections of
 * (type, crc32c, length, payload). Writing appends to a growable buffer;
 * reading treats every byte as hostile: lengths and offsets are checked
 * before use, no allocation is sized by a field that was not checked
 * against the bytes present, every section's CRC32C is verified, and a load
 * either fills every table or changes nothing (pool bytes included). */
#ifndef KVL_KV_SERIAL_H
#define KVL_KV_SERIAL_H

#include <stddef.h>
#include <stdint.h>

#include "kv/kv.h"

#define KVL_SER_MAGIC "KVLSESS\0" /* 8 bytes */
#define KVL_SER_VERSION 1u
#define KVL_SER_HEADER_BYTES 32
#define KVL_SER_SECTION_BYTES 16
#define KVL_SER_MAX_SECTIONS 16

/* Section types. */
enum {
    KVL_SER_KV_CONFIG = 1, /* geometry, per-layer codec specs, page classes */
    KVL_SER_POLICY = 2,    /* policy name + policy state (kv/serial_policy.c; empty without a policy) */
    KVL_SER_PAGES = 3,     /* distinct pages: class + raw bytes */
    KVL_SER_TABLES = 4,    /* per table: per (layer, kv-head) length, sealed, page indices; codec state */
    KVL_SER_SEQS = 5,      /* engine: per sequence position and token ids */
    KVL_SER_MESSAGES = 6,  /* engine: chat messages (role, content) */
};

/* Growable output buffer; oom is set (and writes stop) when realloc fails. */
typedef struct kvl_ser_buf {
    uint8_t *p;
    size_t n, cap;
    int oom;
} kvl_ser_buf;

void kvl_ser_put(kvl_ser_buf *b, const void *data, size_t n);
void kvl_ser_put_u32(kvl_ser_buf *b, uint32_t v);
void kvl_ser_put_u64(kvl_ser_buf *b, uint64_t v);
/* A string as u32 length + bytes. */
void kvl_ser_put_str(kvl_ser_buf *b, const char *s, size_t n);
/* Header with the model identity; the section count and header CRC are
 * filled by kvl_ser_finish. */
void kvl_ser_header(kvl_ser_buf *b, uint64_t identity);
/* Open a section (returns its offset for kvl_ser_section_end, which writes
 * its length and CRC32C). */
size_t kvl_ser_section_begin(kvl_ser_buf *b, uint32_t type);
void kvl_ser_section_end(kvl_ser_buf *b, size_t at);
/* Count the sections and write the header CRC. KVL_ERR_NOMEM if b->oom. */
kvl_status kvl_ser_finish(kvl_ser_buf *b, kvl_err *err);

/* Bounds-checked reader over untrusted bytes: a read past the end sets bad
 * and returns zeros; callers check bad (or kvl_ser_left) before using counts. */
typedef struct kvl_ser_rd {
    const uint8_t *p;
    size_t n, off;
    int bad;
} kvl_ser_rd;

uint32_t kvl_ser_get_u32(kvl_ser_rd *r);
uint64_t kvl_ser_get_u64(kvl_ser_rd *r);
/* n bytes in place (NULL and bad when fewer are left). */
const uint8_t *kvl_ser_get(kvl_ser_rd *r, size_t n);
/* A u32-length string of at most max bytes (in place, not NUL-terminated). */
const char *kvl_ser_get_str(kvl_ser_rd *r, size_t max, size_t *len);
static inline size_t kvl_ser_left(const kvl_ser_rd *r) { return r->bad ? 0 : r->n - r->off; }

typedef struct kvl_ser_section {
    uint32_t type;
    const uint8_t *data;
    size_t len;
} kvl_ser_section;

typedef struct kvl_ser_file {
    uint32_t version;
    uint64_t identity;
    int n_sec;
    kvl_ser_section sec[KVL_SER_MAX_SECTIONS];
} kvl_ser_file;

/* Check the framing of buf: magic, version, header CRC, section count,
 * every section's length within the file and its CRC32C, no trailing
 * bytes, no unknown or repeated section type. Sections point into buf. */
kvl_status kvl_kv_ser_parse(const void *buf, size_t len, kvl_ser_file *f, kvl_err *err);
/* Section of a type, or NULL. */
const kvl_ser_section *kvl_kv_ser_find(const kvl_ser_file *f, uint32_t type);

/* Write the KV sections (CONFIG, POLICY, PAGES, TABLES) of tables t [n]
 * (one pool, no open transaction): each page referenced by several tables
 * or lists is written once. n_ctx: the saving context's length (recorded). */
kvl_status kvl_kv_ser_write(kvl_ser_buf *b, const kvl_kv_table *const *t, int n, int n_ctx, kvl_err *err);

/* Load the KV sections of f into n fresh tables of pool p (no pages, no
 * open transaction: KVL_ERR_ARG otherwise). Checks, each failure a message
 * naming the field: geometry (n_layer, n_head_kv, head_dim, page size),
 * each layer's K/V codec spec, page class layouts, the policy name, table
 * count, every list's length (<= n_ctx) / page count / sealed prefix and
 * page classes, page indices, every referenced page's positions (in
 * [0, n_ctx)) and codec metadata (kvl_codec.validate), codec state sizes,
 * and that the distinct pages fit the pool's free budget. On success pages
 * shared in the file are shared again (one copy, reference counts); on any
 * failure nothing changed (pool bytes in use included). */
kvl_status kvl_kv_ser_load(kvl_kv_pool *p, const kvl_ser_file *f, kvl_kv_table *const *t, int n, int n_ctx,
                           kvl_err *err);

/* The KV configuration recorded in f's kv-config section: layer 0's K and
 * V specs, the other layers' differences as a layer-override string
 * ("k3=int8;v5=f16", "" when none; kv/codec_spec.h), tokens per page.
 * k, v, layers: cap bytes each. KVL_ERR_FORMAT if malformed, KVL_ERR_ARG if
 * a buffer is too small. */
kvl_status kvl_kv_ser_config(const kvl_ser_file *f, char *k, char *v, char *layers, size_t cap, int *page_tokens,
                             kvl_err *err);

/* Number of tables in f's TABLES section (-1 if missing or malformed). */
int kvl_kv_ser_n_tables(const kvl_ser_file *f);

/* Append a human-readable description of f's KV sections to b (text, not
 * NUL-terminated): geometry, codecs per layer, page classes and counts,
 * per table tokens and pages. Checks structure as far as it reads; returns
 * KVL_ERR_FORMAT on malformed sections. */
kvl_status kvl_kv_ser_describe(const kvl_ser_file *f, kvl_ser_buf *b, kvl_err *err);
/* ---- prefix chunks (engine/prefix.c) ----
 * A chunk is pages [page0, page0 + n_pages) of every (layer, kv-head) list
 * of a table. Payload: for each list in order, for each of its pages: u32
 * class, then the page bytes. */
/* 1 when t's pages [page0, page0 + n_pages) can be stored as a chunk: every
 * list holds them full, the pages of sealing layers are sealed (so chunks
 * from different sequences stack into a valid sealed prefix), no open
 * transaction, and no codec keeps per-sequence state. */
int kvl_kv_chunk_ready(const kvl_kv_table *t, int page0, int n_pages);
/* Append the payload of chunk [page0, page0 + n_pages) of t to b. */
void kvl_kv_chunk_write(kvl_ser_buf *b, const kvl_kv_table *t, int page0, int n_pages);
/* Load n consecutive chunks (payload[c] of len[c] bytes, chunk c = pages
 * [c * n_pages, (c + 1) * n_pages) of every list) into the fresh table t:
 * assembled into the KV sections of one table and loaded by
 * kvl_kv_ser_load with all its checks (untrusted bytes: a disk tier). */
kvl_status kvl_kv_chunk_load(kvl_kv_pool *p, kvl_kv_table *t, const uint8_t *const *payload, const size_t *len, int n,
                             int n_pages, int n_ctx, kvl_err *err);

/* ---- policy state (kv/serial_policy.c) ----
 * The state half of the policy section: attention statistics and
 * per-sequence policy state of each table (layout in serial_policy.c). */
/* 1 when any of t [n] keeps statistics or policy state. */
int kvi_ser_policy_state_used(const kvl_kv_table *const *t, int n);
void kvi_ser_policy_state_write(kvl_ser_buf *b, const kvl_kv_table *const *t, int n);
/* Check state bytes against the tables t [n] it will load into (same
 * accumulators, policy state present iff the policy keeps one), lists of
 * lengths list_len [n][n_layer * n_head_kv]: exact size, finite values in
 * range. Changes nothing. */
kvl_status kvi_ser_policy_state_check(const uint8_t *data, size_t len, kvl_kv_table *const *t, int n, const int *list_len,
                                      int n_ctx, kvl_err *err);
/* Copy checked state into t (statistics reserved for the lengths). */
void kvi_ser_policy_state_apply(const uint8_t *data, size_t len, kvl_kv_table *const *t, int n, const int *list_len,
                                int n_ctx);

/* printf into b. */
void kvl_ser_printf(kvl_ser_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
