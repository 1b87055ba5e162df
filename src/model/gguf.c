/* GGUF reader. The whole file is validated up front by a bounds-checked
 * cursor (every read checks the remaining bytes, every count is checked
 * against what the remaining bytes could possibly hold before anything is
 * allocated, all size arithmetic is overflow-checked), so that afterwards the
 * getters can read the map without further checks. Validation also builds
 * the lookup structures: hash indexes over keys and tensor names, and a
 * per-string-array offset table so that element i of a 49k-entry vocabulary
 * is O(1). Hostile input must produce KVL_ERR_FORMAT with a message naming
 * what is wrong, never a crash. */
#include "model/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/hash.h"

#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_MAX_DIMS 4
#define GGUF_MAX_KEY_LEN 65535u  /* spec: keys are at most 2^16-1 bytes */
#define GGUF_MAX_NAME_LEN 65535u /* generous limit for tensor names */
/* Smallest possible encodings, used to bound counts before allocating. */
#define GGUF_MIN_KV_BYTES 14u     /* key len 8 + 1 key byte + type 4 + 1 value byte */
#define GGUF_MIN_TENSOR_BYTES 33u /* name len 8 + 1 + n_dims 4 + ne 8 + type 4 + offset 8 */

typedef struct gguf_kv {
    size_t key_off;   /* key bytes in the map */
    uint32_t key_len;
    kvl_gguf_vtype type;
    kvl_gguf_vtype elem_type; /* arrays only */
    uint64_t count;           /* arrays only */
    size_t val_off;           /* scalar value / string length field / first array element */
    size_t *str_offs;         /* string arrays: offset of each element's u64 length field */
    const char *name;         /* NUL-terminated copy (in the name pool) */
} gguf_kv;

typedef struct gguf_tinfo {
    size_t name_off; /* name bytes in the map */
    uint32_t name_len;
    uint64_t data_off; /* relative to the data section */
} gguf_tinfo;

typedef struct gguf_index {
    uint32_t *slot; /* entry index + 1, 0 = empty */
    size_t mask;
} gguf_index;

struct kvl_gguf {
    const uint8_t *base;
    size_t size;
    void *map; /* non-NULL when we own an mmap of map_size bytes */
    size_t map_size;
    uint32_t version;
    uint32_t alignment;
    int64_t n_kv;
    gguf_kv *kv;
    gguf_index kv_index;
    int64_t n_tensors;
    kvl_gguf_tensor *tensors;
    gguf_tinfo *tinfo; /* per-tensor raw name location and relative data offset */
    gguf_index tensor_index;
    char *names; /* pool holding the NUL-terminated keys and tensor names */
    size_t data_off;
    size_t data_bytes;
};

/* Record an error in err and evaluate to 0 (the "failed" result of the
 * int-returning validation helpers). */
#define FAIL(...) (kvl_err_set(__VA_ARGS__), 0)

/* ---- little-endian decoding ------------------------------------------------ */

static uint16_t ld_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t ld_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t ld_u64(const uint8_t *p) { return (uint64_t)ld_u32(p) | ((uint64_t)ld_u32(p + 4) << 32); }
static float ld_f32(const uint8_t *p) {
    uint32_t u = ld_u32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static double ld_f64(const uint8_t *p) {
    uint64_t u = ld_u64(p);
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static const char *vtype_name(uint32_t t) {
    static const char *const names[] = {"uint8", "int8",  "uint16", "int16", "uint32",
                                        "int32", "float32", "bool", "string", "array",
                                        "uint64", "int64", "float64"};
    return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

/* Encoded size of one scalar of type t (strings: the length field only); 0 if
 * not a fixed-size scalar. */
static size_t scalar_size(uint32_t t) {
    switch (t) {
    case KVL_GGUF_UINT8: case KVL_GGUF_INT8: case KVL_GGUF_BOOL: return 1;
    case KVL_GGUF_UINT16: case KVL_GGUF_INT16: return 2;
    case KVL_GGUF_UINT32: case KVL_GGUF_INT32: case KVL_GGUF_FLOAT32: return 4;
    case KVL_GGUF_UINT64: case KVL_GGUF_INT64: case KVL_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static int is_int_type(kvl_gguf_vtype t) {
    return t == KVL_GGUF_UINT8 || t == KVL_GGUF_INT8 || t == KVL_GGUF_UINT16 || t == KVL_GGUF_INT16 ||
           t == KVL_GGUF_UINT32 || t == KVL_GGUF_INT32 || t == KVL_GGUF_UINT64 || t == KVL_GGUF_INT64;
}

/* Decode an integer value of type t at p. Sets *neg and *mag (sign and magnitude)
 * so callers can range-check without overflow. Returns 0 if t is not an integer. */
static int ld_int(kvl_gguf_vtype t, const uint8_t *p, int *neg, uint64_t *mag) {
    int64_t s;
    switch (t) {
    case KVL_GGUF_UINT8: *neg = 0; *mag = p[0]; return 1;
    case KVL_GGUF_UINT16: *neg = 0; *mag = ld_u16(p); return 1;
    case KVL_GGUF_UINT32: *neg = 0; *mag = ld_u32(p); return 1;
    case KVL_GGUF_UINT64: *neg = 0; *mag = ld_u64(p); return 1;
    case KVL_GGUF_INT8: s = (int8_t)p[0]; break;
    case KVL_GGUF_INT16: s = (int16_t)ld_u16(p); break;
    case KVL_GGUF_INT32: s = (int32_t)ld_u32(p); break;
    case KVL_GGUF_INT64: s = (int64_t)ld_u64(p); break;
    default: return 0;
    }
    *neg = s < 0;
    *mag = s < 0 ? (uint64_t)0 - (uint64_t)s : (uint64_t)s;
    return 1;
}

static int int_to_i64(int neg, uint64_t mag, int64_t *out) {
    if (!neg) {
        if (mag > (uint64_t)INT64_MAX) return 0;
        *out = (int64_t)mag;
    } else {
        if (mag > (uint64_t)INT64_MAX + 1u) return 0;
        *out = mag == (uint64_t)INT64_MAX + 1u ? INT64_MIN : -(int64_t)mag;
    }
    return 1;
}

/* ---- hash index ------------------------------------------------------------- */

static int index_init(gguf_index *ix, int64_t n) {
    size_t cap = 16;
    while (cap < (size_t)n * 2) cap <<= 1;
    ix->slot = calloc(cap, sizeof *ix->slot);
    ix->mask = cap - 1;
    return ix->slot != NULL;
}

/* Find the slot for name (either holding it or the empty slot where it goes).
 * names(i) gives the NUL-terminated name of entry i. */
#define INDEX_PROBE(ix, name, len, name_of_entry, result)                                   \
    do {                                                                                    \
        size_t h_ = (size_t)kvl_hash_fnv1a((name), (len)) & (ix)->mask;                     \
        for (;;) {                                                                          \
            uint32_t e_ = (ix)->slot[h_];                                                   \
            if (!e_) break;                                                                 \
            const char *n_ = name_of_entry(e_ - 1);                                         \
            if (strncmp(n_, (name), (len)) == 0 && n_[len] == 0) break;                     \
            h_ = (h_ + 1) & (ix)->mask;                                                     \
        }                                                                                   \
        (result) = h_;                                                                      \
    } while (0)

#define KV_NAME(i) (g->kv[(i)].name)
#define TENSOR_NAME(i) (g->tensors[(i)].name)

/* ---- validating cursor ------------------------------------------------------- */

typedef struct cursor {
    const uint8_t *p;
    size_t size;
    size_t pos;
    kvl_err *err;
    char what[192]; /* description of the item being parsed, for messages */
} cursor;

static size_t remaining(const cursor *c) { return c->size - c->pos; }

static int need(cursor *c, uint64_t n, const char *field) {
    if (n <= remaining(c)) return 1;
    kvl_err_set(c->err, KVL_ERR_FORMAT,
                "gguf: truncated file: %s%s%s needs %llu bytes at offset %zu (file size %zu)",
                c->what, c->what[0] ? " " : "", field, (unsigned long long)n, c->pos, c->size);
    return 0;
}

static int rd_u32(cursor *c, const char *field, uint32_t *v) {
    if (!need(c, 4, field)) return 0;
    *v = ld_u32(c->p + c->pos);
    c->pos += 4;
    return 1;
}

static int rd_u64(cursor *c, const char *field, uint64_t *v) {
    if (!need(c, 8, field)) return 0;
    *v = ld_u64(c->p + c->pos);
    c->pos += 8;
    return 1;
}

/* Read a gguf string: u64 length + bytes. Returns the offset of the bytes. */
static int rd_str(cursor *c, const char *field, size_t *off, uint64_t *len) {
    if (!rd_u64(c, field, len)) return 0;
    if (*len > remaining(c)) {
        kvl_err_set(c->err, KVL_ERR_FORMAT,
                    "gguf: %s%s%s length %llu at offset %zu exceeds the %zu bytes left in the file",
                    c->what, c->what[0] ? " " : "", field, (unsigned long long)*len, c->pos - 8,
                    remaining(c));
        return 0;
    }
    *off = c->pos;
    c->pos += (size_t)*len;
    return 1;
}

/* Key or tensor name: non-empty, bounded, without NUL bytes (they are used as
 * C strings). */
static int check_name(cursor *c, const char *kind, int64_t idx, size_t off, uint64_t len, uint32_t max) {
    if (len == 0 || len > max) {
        kvl_err_set(c->err, KVL_ERR_FORMAT, "gguf: %s %lld has invalid name length %llu (must be 1..%u)",
                    kind, (long long)idx, (unsigned long long)len, max);
        return 0;
    }
    if (memchr(c->p + off, 0, (size_t)len)) {
        kvl_err_set(c->err, KVL_ERR_FORMAT, "gguf: %s %lld name at offset %zu contains a NUL byte", kind,
                    (long long)idx, off);
        return 0;
    }
    return 1;
}

/* Describe the current item as "<kind> '<name>'" (name shortened, non-printable
 * bytes shown as '?'). */
static void set_what_name(cursor *c, const char *kind, size_t off, uint64_t len) {
    char name[121];
    size_t n = len > 120 ? 120 : (size_t)len;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = c->p[off + i];
        name[i] = b >= 0x20 && b < 0x7f ? (char)b : '?';
    }
    name[n] = 0;
    snprintf(c->what, sizeof c->what, "%s '%s%s'", kind, name, len > 120 ? "..." : "");
}

/* Parse one metadata value of type `type` into kv. */
static int parse_value(cursor *c, gguf_kv *kv, uint32_t type) {
    if (type == KVL_GGUF_STRING) {
        size_t off;
        uint64_t len;
        kv->val_off = c->pos;
        return rd_str(c, "string value", &off, &len);
    }
    if (type == KVL_GGUF_ARRAY) {
        uint32_t et;
        uint64_t n;
        if (!rd_u32(c, "array element type", &et) || !rd_u64(c, "array count", &n)) return 0;
        if (et == KVL_GGUF_ARRAY) {
            return FAIL(c->err, KVL_ERR_UNSUPPORTED, "gguf: %s: nested arrays are not supported",
                        c->what);
        }
        size_t esz = et == KVL_GGUF_STRING ? 8 : scalar_size(et);
        if (esz == 0) {
            kvl_err_set(c->err, KVL_ERR_FORMAT, "gguf: %s: unknown array element type %u", c->what, et);
            return 0;
        }
        if (n > remaining(c) / esz) {
            kvl_err_set(c->err, KVL_ERR_FORMAT,
                        "gguf: %s: array of %llu %s elements cannot fit in the %zu bytes left in the file",
                        c->what, (unsigned long long)n, vtype_name(et), remaining(c));
            return 0;
        }
        kv->elem_type = (kvl_gguf_vtype)et;
        kv->count = n;
        kv->val_off = c->pos;
        if (et != KVL_GGUF_STRING) {
            c->pos += (size_t)n * esz;
            return 1;
        }
        kv->str_offs = malloc((n ? (size_t)n : 1) * sizeof *kv->str_offs);
        if (!kv->str_offs) {
            kvl_err_set(c->err, KVL_ERR_NOMEM, "gguf: %s: out of memory for %llu string offsets", c->what,
                        (unsigned long long)n);
            return 0;
        }
        for (uint64_t i = 0; i < n; i++) {
            size_t off;
            uint64_t len;
            kv->str_offs[i] = c->pos;
            if (!rd_str(c, "array string", &off, &len)) return 0;
        }
        return 1;
    }
    size_t sz = scalar_size(type);
    if (sz == 0) {
        kvl_err_set(c->err, KVL_ERR_FORMAT, "gguf: %s has unknown value type %u", c->what, type);
        return 0;
    }
    if (!need(c, sz, "value")) return 0;
    kv->val_off = c->pos;
    c->pos += sz;
    return 1;
}

static int parse_kvs(kvl_gguf *g, cursor *c) {
    for (int64_t i = 0; i < g->n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        uint64_t klen;
        uint32_t type;
        snprintf(c->what, sizeof c->what, "key %lld", (long long)i);
        if (!rd_str(c, "name", &kv->key_off, &klen)) return 0;
        if (!check_name(c, "key", i, kv->key_off, klen, GGUF_MAX_KEY_LEN)) return 0;
        kv->key_len = (uint32_t)klen;
        set_what_name(c, "key", kv->key_off, klen);
        if (!rd_u32(c, "value type", &type)) return 0;
        if (type > KVL_GGUF_FLOAT64) {
            kvl_err_set(c->err, KVL_ERR_FORMAT, "gguf: %s has unknown value type %u", c->what, type);
            return 0;
        }
        kv->type = (kvl_gguf_vtype)type;
        if (!parse_value(c, kv, type)) return 0;
    }
    c->what[0] = 0;
    return 1;
}

static int parse_tensor_infos(kvl_gguf *g, cursor *c) {
    for (int64_t i = 0; i < g->n_tensors; i++) {
        kvl_gguf_tensor *t = &g->tensors[i];
        uint64_t nlen, ne[GGUF_MAX_DIMS], off;
        uint32_t n_dims, type;
        snprintf(c->what, sizeof c->what, "tensor info %lld", (long long)i);
        gguf_tinfo *ti = &g->tinfo[i];
        if (!rd_str(c, "name", &ti->name_off, &nlen)) return 0;
        if (!check_name(c, "tensor", i, ti->name_off, nlen, GGUF_MAX_NAME_LEN)) return 0;
        ti->name_len = (uint32_t)nlen;
        set_what_name(c, "tensor", ti->name_off, nlen);
        if (!rd_u32(c, "n_dims", &n_dims)) return 0;
        if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) {
            kvl_err_set(c->err, KVL_ERR_FORMAT, "gguf: %s has n_dims = %u (must be 1..%d)", c->what, n_dims,
                        GGUF_MAX_DIMS);
            return 0;
        }
        for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) ne[d] = 1;
        for (uint32_t d = 0; d < n_dims; d++) {
            if (!rd_u64(c, "ne", &ne[d])) return 0;
            if (ne[d] > (uint64_t)INT64_MAX) {
                kvl_err_set(c->err, KVL_ERR_FORMAT, "gguf: %s has ne[%u] = %llu (too large)", c->what, d,
                            (unsigned long long)ne[d]);
                return 0;
            }
        }
        if (!rd_u32(c, "type", &type) || !rd_u64(c, "offset", &off)) return 0;
        if (type > INT_MAX || kvl_type_block_bytes((int)type) == 0) {
            kvl_err_set(c->err, KVL_ERR_FORMAT, "gguf: %s has unknown tensor type %u", c->what, type);
            return 0;
        }
        /* Element count must fit in int64 (overflow-safe product). */
        uint64_t nel = 1;
        for (uint32_t d = 0; d < n_dims; d++) {
            if (ne[d] != 0 && nel > (uint64_t)INT64_MAX / ne[d]) {
                kvl_err_set(c->err, KVL_ERR_FORMAT,
                            "gguf: %s: element count overflows (ne = [%llu, %llu, %llu, %llu])", c->what,
                            (unsigned long long)ne[0], (unsigned long long)ne[1],
                            (unsigned long long)ne[2], (unsigned long long)ne[3]);
                return 0;
            }
            nel *= ne[d];
        }
        uint64_t blk = (uint64_t)kvl_type_block_elems((int)type);
        uint64_t bbytes = (uint64_t)kvl_type_block_bytes((int)type);
        if (ne[0] % blk != 0) {
            kvl_err_set(c->err, KVL_ERR_FORMAT,
                        "gguf: %s of type %s has ne[0] = %llu, not a multiple of its block size %llu",
                        c->what, kvl_type_name((int)type), (unsigned long long)ne[0],
                        (unsigned long long)blk);
            return 0;
        }
        /* nbytes = (ne0 / blk) * bbytes * ne1 * ne2 * ne3, overflow-checked. */
        uint64_t nbytes = ne[0] / blk;
        int ovf = nbytes != 0 && bbytes > UINT64_MAX / nbytes;
        nbytes *= bbytes;
        for (uint32_t d = 1; d < n_dims && !ovf; d++) {
            if (ne[d] != 0 && nbytes > UINT64_MAX / ne[d]) ovf = 1;
            else nbytes *= ne[d];
        }
        if (ovf || nbytes > SIZE_MAX) {
            kvl_err_set(c->err, KVL_ERR_FORMAT, "gguf: %s: data size overflows", c->what);
            return 0;
        }
        if (off % g->alignment != 0) {
            kvl_err_set(c->err, KVL_ERR_FORMAT, "gguf: %s data offset %llu is not a multiple of the alignment %u",
                        c->what, (unsigned long long)off, g->alignment);
            return 0;
        }
        t->type = (kvl_type)type;
        t->n_dims = (int)n_dims;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = (int64_t)ne[d];
        t->nbytes = (size_t)nbytes;
        ti->data_off = off; /* placed once the data section offset is known */
    }
    c->what[0] = 0;
    return 1;
}

/* Resolve data pointers once the data section offset is known. */
static int place_tensors(kvl_gguf *g, kvl_err *err) {
    uint64_t total = 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        kvl_gguf_tensor *t = &g->tensors[i];
        uint64_t off = g->tinfo[i].data_off;
        uint64_t avail = g->data_off <= g->size ? (uint64_t)(g->size - g->data_off) : 0;
        if (g->data_off > g->size || off > avail || t->nbytes > avail - off) {
            return FAIL(err, KVL_ERR_FORMAT,
                        "gguf: tensor '%s' data [offset %llu, %zu bytes] extends past end of file "
                        "(size %zu, data section at %zu)",
                        t->name, (unsigned long long)off, t->nbytes, g->size, g->data_off);
        }
        t->data = g->base + g->data_off + (size_t)off;
        total = total + t->nbytes < total ? UINT64_MAX : total + t->nbytes;
    }
    g->data_bytes = total > SIZE_MAX ? SIZE_MAX : (size_t)total;
    return 1;
}

/* Copy keys and tensor names into one NUL-terminated pool. */
static int build_names(kvl_gguf *g, kvl_err *err) {
    size_t total = 1;
    for (int64_t i = 0; i < g->n_kv; i++) total += (size_t)g->kv[i].key_len + 1;
    for (int64_t i = 0; i < g->n_tensors; i++) total += (size_t)g->tinfo[i].name_len + 1;
    g->names = malloc(total);
    if (!g->names) return FAIL(err, KVL_ERR_NOMEM, "gguf: out of memory for %zu name bytes", total);
    char *p = g->names;
    for (int64_t i = 0; i < g->n_kv; i++) {
        memcpy(p, g->base + g->kv[i].key_off, g->kv[i].key_len);
        p[g->kv[i].key_len] = 0;
        g->kv[i].name = p;
        p += g->kv[i].key_len + 1;
    }
    for (int64_t i = 0; i < g->n_tensors; i++) {
        memcpy(p, g->base + g->tinfo[i].name_off, g->tinfo[i].name_len);
        p[g->tinfo[i].name_len] = 0;
        g->tensors[i].name = p;
        p += g->tinfo[i].name_len + 1;
    }
    return 1;
}

static int build_indexes(kvl_gguf *g, kvl_err *err) {
    if (!index_init(&g->kv_index, g->n_kv) || !index_init(&g->tensor_index, g->n_tensors))
        return FAIL(err, KVL_ERR_NOMEM, "gguf: out of memory for indexes");
    for (int64_t i = 0; i < g->n_kv; i++) {
        size_t s;
        INDEX_PROBE(&g->kv_index, g->kv[i].name, g->kv[i].key_len, KV_NAME, s);
        if (g->kv_index.slot[s])
            return FAIL(err, KVL_ERR_FORMAT, "gguf: duplicate key '%s' (entries %u and %lld)",
                        g->kv[i].name, (unsigned)(g->kv_index.slot[s] - 1), (long long)i);
        g->kv_index.slot[s] = (uint32_t)i + 1;
    }
    for (int64_t i = 0; i < g->n_tensors; i++) {
        size_t s;
        INDEX_PROBE(&g->tensor_index, g->tensors[i].name, g->tinfo[i].name_len, TENSOR_NAME, s);
        if (g->tensor_index.slot[s])
            return FAIL(err, KVL_ERR_FORMAT, "gguf: duplicate tensor name '%s' (tensors %u and %lld)",
                        g->tensors[i].name, (unsigned)(g->tensor_index.slot[s] - 1), (long long)i);
        g->tensor_index.slot[s] = (uint32_t)i + 1;
    }
    return 1;
}

/* general.alignment: u32, a power of two and a multiple of 8 (the spec requires
 * a multiple of 8, llama.cpp a power of two; smaller values would leave typed
 * tensor data such as f32 rows misaligned). */
static int read_alignment(kvl_gguf *g, kvl_err *err) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    for (int64_t i = 0; i < g->n_kv; i++) {
        const gguf_kv *kv = &g->kv[i];
        if (kv->key_len != 17 || memcmp(g->base + kv->key_off, "general.alignment", 17) != 0) continue;
        if (kv->type != KVL_GGUF_UINT32)
            return FAIL(err, KVL_ERR_FORMAT, "gguf: general.alignment has type %s (must be uint32)",
                        vtype_name(kv->type));
        uint32_t a = ld_u32(g->base + kv->val_off);
        if (a < 8 || (a & (a - 1)) != 0)
            return FAIL(err, KVL_ERR_FORMAT,
                        "gguf: general.alignment = %u is invalid (must be a power of two and a multiple of 8)", a);
        g->alignment = a;
    }
    return 1;
}

static kvl_status parse(kvl_gguf *g, kvl_err *err) {
    cursor c = {.p = g->base, .size = g->size, .pos = 0, .err = err};
    uint64_t n_tensors, n_kv;
    c.what[0] = 0;
    if (g->size < 4 || memcmp(g->base, "GGUF", 4) != 0)
        return kvl_err_set(err, KVL_ERR_FORMAT, "gguf: bad magic (not a GGUF file)");
    c.pos = 4;
    if (!rd_u32(&c, "header version", &g->version)) return err ? err->status : KVL_ERR_FORMAT;
    if (g->version == 1)
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED,
                           "gguf: unsupported GGUF version 1 (only v2 and v3; re-convert the model)");
    if (g->version != 2 && g->version != 3) {
        /* A byte-swapped small version number means a big-endian file. */
        if (g->version != 0 && (g->version & 0xffff) == 0)
            return kvl_err_set(err, KVL_ERR_UNSUPPORTED,
                               "gguf: unsupported GGUF version %u (big-endian file?)", g->version);
        return kvl_err_set(err, KVL_ERR_UNSUPPORTED, "gguf: unsupported GGUF version %u (only v2 and v3)",
                           g->version);
    }
    if (!rd_u64(&c, "header tensor count", &n_tensors) || !rd_u64(&c, "header metadata count", &n_kv))
        return err ? err->status : KVL_ERR_FORMAT;
    if (n_kv > remaining(&c) / GGUF_MIN_KV_BYTES || n_kv >= UINT32_MAX)
        return kvl_err_set(err, KVL_ERR_FORMAT,
                           "gguf: metadata count %llu is impossible for the %zu bytes left in the file",
                           (unsigned long long)n_kv, remaining(&c));
    if (n_tensors > remaining(&c) / GGUF_MIN_TENSOR_BYTES || n_tensors >= UINT32_MAX)
        return kvl_err_set(err, KVL_ERR_FORMAT,
                           "gguf: tensor count %llu is impossible for the %zu bytes left in the file",
                           (unsigned long long)n_tensors, remaining(&c));
    g->n_kv = (int64_t)n_kv;
    g->n_tensors = (int64_t)n_tensors;
    g->kv = calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv);
    g->tensors = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *g->tensors);
    g->tinfo = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *g->tinfo);
    if (!g->kv || !g->tensors || !g->tinfo)
        return kvl_err_set(err, KVL_ERR_NOMEM, "gguf: out of memory for %llu keys / %llu tensors",
                           (unsigned long long)n_kv, (unsigned long long)n_tensors);
    /* Tensor counts were bounded by the header position; re-check against the
     * smaller remainder after the metadata when it is parsed. */
    if (!parse_kvs(g, &c)) return err ? err->status : KVL_ERR_FORMAT;
    if (!read_alignment(g, err)) return err ? err->status : KVL_ERR_FORMAT;
    if (n_tensors > remaining(&c) / GGUF_MIN_TENSOR_BYTES)
        return kvl_err_set(err, KVL_ERR_FORMAT,
                           "gguf: tensor count %llu is impossible for the %zu bytes left after the metadata",
                           (unsigned long long)n_tensors, remaining(&c));
    if (!parse_tensor_infos(g, &c)) return err ? err->status : KVL_ERR_FORMAT;
    /* Data section: next multiple of the alignment after the tensor infos
     * (c.pos <= size, alignment <= 2^31, so this cannot overflow on 64-bit;
     * the check keeps 32-bit size_t honest). */
    uint64_t doff = ((uint64_t)c.pos + g->alignment - 1) / g->alignment * g->alignment;
    g->data_off = doff > SIZE_MAX ? SIZE_MAX : (size_t)doff;
    if (!build_names(g, err) || !build_indexes(g, err)) return err ? err->status : KVL_ERR_FORMAT;
    if (!place_tensors(g, err)) return err ? err->status : KVL_ERR_FORMAT;
    kvl_err_clear(err);
    return KVL_OK;
}

/* ---- open / free -------------------------------------------------------------- */

static kvl_status finish_open(kvl_gguf *g, kvl_gguf **out, kvl_err *err) {
    kvl_err local;
    kvl_err *e = err ? err : &local;
    kvl_status st = parse(g, e);
    if (st != KVL_OK) {
        kvl_gguf_free(g);
        return st;
    }
    *out = g;
    return KVL_OK;
}

kvl_status kvl_gguf_open_mem(const void *data, size_t size, kvl_gguf **out, kvl_err *err) {
    if (!out) return kvl_err_set(err, KVL_ERR_ARG, "gguf: out is NULL");
    *out = NULL;
    if (!data && size) return kvl_err_set(err, KVL_ERR_ARG, "gguf: NULL buffer of %zu bytes", size);
    kvl_gguf *g = calloc(1, sizeof *g);
    if (!g) return kvl_err_set(err, KVL_ERR_NOMEM, "gguf: out of memory");
    static const uint8_t empty[1] = {0};
    g->base = data ? data : empty;
    g->size = size;
    return finish_open(g, out, err);
}

kvl_status kvl_gguf_open(const char *path, kvl_gguf **out, kvl_err *err) {
    if (!out) return kvl_err_set(err, KVL_ERR_ARG, "gguf: out is NULL");
    *out = NULL;
    if (!path) return kvl_err_set(err, KVL_ERR_ARG, "gguf: path is NULL");
    /* O_NONBLOCK so that opening a FIFO does not hang; it has no effect on
     * regular files. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return kvl_err_set(err, KVL_ERR_IO, "gguf: cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return kvl_err_set(err, KVL_ERR_IO, "gguf: cannot stat '%s': %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return kvl_err_set(err, KVL_ERR_IO, "gguf: '%s' is a directory, not a GGUF file", path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return kvl_err_set(err, KVL_ERR_IO, "gguf: '%s' is not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return kvl_err_set(err, KVL_ERR_FORMAT, "gguf: '%s' is empty (0 bytes)", path);
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return kvl_err_set(err, KVL_ERR_IO, "gguf: '%s' is too large to map", path);
    }
    size_t size = (size_t)st.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED)
        return kvl_err_set(err, KVL_ERR_IO, "gguf: cannot mmap '%s' (%zu bytes): %s", path, size,
                           strerror(map_errno));
    kvl_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        munmap(map, size);
        return kvl_err_set(err, KVL_ERR_NOMEM, "gguf: out of memory");
    }
    g->base = map;
    g->size = size;
    g->map = map;
    g->map_size = size;
    return finish_open(g, out, err);
}

void kvl_gguf_free(kvl_gguf *g) {
    if (!g) return;
    if (g->kv)
        for (int64_t i = 0; i < g->n_kv; i++) free(g->kv[i].str_offs);
    free(g->kv);
    free(g->kv_index.slot);
    free(g->tensors);
    free(g->tinfo);
    free(g->tensor_index.slot);
    free(g->names);
    if (g->map) munmap(g->map, g->map_size);
    free(g);
}

/* ---- metadata access ------------------------------------------------------------ */

uint32_t kvl_gguf_version(const kvl_gguf *g) { return g ? g->version : 0; }
int64_t kvl_gguf_n_kv(const kvl_gguf *g) { return g ? g->n_kv : 0; }

int64_t kvl_gguf_find_key(const kvl_gguf *g, const char *key) {
    if (!g || !key) return -1;
    size_t s, len = strlen(key);
    INDEX_PROBE(&g->kv_index, key, len, KV_NAME, s);
    return g->kv_index.slot[s] ? (int64_t)g->kv_index.slot[s] - 1 : -1;
}

/* NULL for an out-of-range index. */
const char *kvl_gguf_key_name(const kvl_gguf *g, int64_t idx) {
    return g && idx >= 0 && idx < g->n_kv ? g->kv[idx].name : NULL;
}

/* (kvl_gguf_vtype)-1 for an out-of-range index. */
kvl_gguf_vtype kvl_gguf_key_type(const kvl_gguf *g, int64_t idx) {
    return g && idx >= 0 && idx < g->n_kv ? g->kv[idx].type : (kvl_gguf_vtype)-1;
}

static const gguf_kv *find_kv(const kvl_gguf *g, const char *key) {
    int64_t i = kvl_gguf_find_key(g, key);
    return i < 0 ? NULL : &g->kv[i];
}

int kvl_gguf_get_u32(const kvl_gguf *g, const char *key, uint32_t *out) {
    const gguf_kv *kv = find_kv(g, key);
    int neg;
    uint64_t mag;
    if (!kv || !ld_int(kv->type, g->base + kv->val_off, &neg, &mag)) return 0;
    if ((neg && mag != 0) || mag > UINT32_MAX) return 0;
    *out = (uint32_t)mag;
    return 1;
}

int kvl_gguf_get_i64(const kvl_gguf *g, const char *key, int64_t *out) {
    const gguf_kv *kv = find_kv(g, key);
    int neg;
    uint64_t mag;
    if (!kv || !ld_int(kv->type, g->base + kv->val_off, &neg, &mag)) return 0;
    return int_to_i64(neg, mag, out);
}

int kvl_gguf_get_f32(const kvl_gguf *g, const char *key, float *out) {
    const gguf_kv *kv = find_kv(g, key);
    if (!kv) return 0;
    const uint8_t *p = g->base + kv->val_off;
    if (kv->type == KVL_GGUF_FLOAT32) *out = ld_f32(p);
    else if (kv->type == KVL_GGUF_FLOAT64) *out = (float)ld_f64(p);
    else {
        int neg;
        uint64_t mag;
        if (!ld_int(kv->type, p, &neg, &mag)) return 0;
        *out = neg ? -(float)mag : (float)mag;
    }
    return 1;
}

int kvl_gguf_get_bool(const kvl_gguf *g, const char *key, int *out) {
    const gguf_kv *kv = find_kv(g, key);
    if (!kv || kv->type != KVL_GGUF_BOOL) return 0;
    *out = g->base[kv->val_off] != 0;
    return 1;
}

int kvl_gguf_get_str(const kvl_gguf *g, const char *key, const char **s, size_t *len) {
    const gguf_kv *kv = find_kv(g, key);
    if (!kv || kv->type != KVL_GGUF_STRING) return 0;
    *len = (size_t)ld_u64(g->base + kv->val_off);
    *s = (const char *)g->base + kv->val_off + 8;
    return 1;
}

int kvl_gguf_get_arr(const kvl_gguf *g, const char *key, kvl_gguf_vtype *elem_type, uint64_t *n) {
    const gguf_kv *kv = find_kv(g, key);
    if (!kv || kv->type != KVL_GGUF_ARRAY) return 0;
    *elem_type = kv->elem_type;
    *n = kv->count;
    return 1;
}

int kvl_gguf_arr_str(const kvl_gguf *g, const char *key, uint64_t i, const char **s, size_t *len) {
    const gguf_kv *kv = find_kv(g, key);
    if (!kv || kv->type != KVL_GGUF_ARRAY || kv->elem_type != KVL_GGUF_STRING || i >= kv->count) return 0;
    size_t off = kv->str_offs[i];
    *len = (size_t)ld_u64(g->base + off);
    *s = (const char *)g->base + off + 8;
    return 1;
}

/* Non-string arrays only (bool arrays give their 0/1 bytes); NULL otherwise. */
const void *kvl_gguf_arr_data(const kvl_gguf *g, const char *key) {
    const gguf_kv *kv = find_kv(g, key);
    if (!kv || kv->type != KVL_GGUF_ARRAY || kv->elem_type == KVL_GGUF_STRING) return NULL;
    return g->base + kv->val_off;
}

static const uint8_t *arr_elem(const kvl_gguf *g, const char *key, uint64_t i, kvl_gguf_vtype *et) {
    const gguf_kv *kv = find_kv(g, key);
    if (!kv || kv->type != KVL_GGUF_ARRAY || kv->elem_type == KVL_GGUF_STRING || i >= kv->count) return NULL;
    *et = kv->elem_type;
    return g->base + kv->val_off + (size_t)i * scalar_size(kv->elem_type);
}

int kvl_gguf_arr_i64(const kvl_gguf *g, const char *key, uint64_t i, int64_t *out) {
    kvl_gguf_vtype et;
    const uint8_t *p = arr_elem(g, key, i, &et);
    int neg;
    uint64_t mag;
    if (!p || !ld_int(et, p, &neg, &mag)) return 0;
    return int_to_i64(neg, mag, out);
}

/* Accepts float and integer element types. */
int kvl_gguf_arr_f64(const kvl_gguf *g, const char *key, uint64_t i, double *out) {
    kvl_gguf_vtype et;
    const uint8_t *p = arr_elem(g, key, i, &et);
    if (!p) return 0;
    if (et == KVL_GGUF_FLOAT32) *out = ld_f32(p);
    else if (et == KVL_GGUF_FLOAT64) *out = ld_f64(p);
    else {
        int neg;
        uint64_t mag;
        if (!is_int_type(et) || !ld_int(et, p, &neg, &mag)) return 0;
        *out = neg ? -(double)mag : (double)mag;
    }
    return 1;
}

/* ---- tensors ------------------------------------------------------------------- */

int64_t kvl_gguf_n_tensors(const kvl_gguf *g) { return g ? g->n_tensors : 0; }

/* NULL for an out-of-range index. */
const kvl_gguf_tensor *kvl_gguf_tensor_at(const kvl_gguf *g, int64_t i) {
    return g && i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const kvl_gguf_tensor *kvl_gguf_find_tensor(const kvl_gguf *g, const char *name) {
    if (!g || !name) return NULL;
    size_t s, len = strlen(name);
    INDEX_PROBE(&g->tensor_index, name, len, TENSOR_NAME, s);
    return g->tensor_index.slot[s] ? &g->tensors[g->tensor_index.slot[s] - 1] : NULL;
}

size_t kvl_gguf_data_bytes(const kvl_gguf *g) { return g ? g->data_bytes : 0; }
