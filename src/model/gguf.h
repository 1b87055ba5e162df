/* GGUF reader: maps a file (or borrows a memory buffer), validates the whole
 * header, metadata and tensor table with bounds checks on every read, and
 * exposes typed metadata lookups and tensor descriptors pointing into the map.
 * Supports GGUF v2 and v3 and all metadata value types. */
#ifndef KVL_MODEL_GGUF_H
#define KVL_MODEL_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "cpu/quant.h"
#include "util/err.h"

/* Metadata value types (numbering as in the GGUF spec). */
typedef enum kvl_gguf_vtype {
    KVL_GGUF_UINT8 = 0, KVL_GGUF_INT8 = 1, KVL_GGUF_UINT16 = 2, KVL_GGUF_INT16 = 3,
    KVL_GGUF_UINT32 = 4, KVL_GGUF_INT32 = 5, KVL_GGUF_FLOAT32 = 6, KVL_GGUF_BOOL = 7,
    KVL_GGUF_STRING = 8, KVL_GGUF_ARRAY = 9, KVL_GGUF_UINT64 = 10, KVL_GGUF_INT64 = 11,
    KVL_GGUF_FLOAT64 = 12
} kvl_gguf_vtype;

typedef struct kvl_gguf kvl_gguf;

typedef struct kvl_gguf_tensor {
    const char *name;      /* NUL-terminated copy */
    kvl_type type;
    int n_dims;            /* 1..4 */
    int64_t ne[4];         /* ne[0] = contiguous (row length); unused dims = 1 */
    const void *data;      /* into the map; aligned to general.alignment */
    size_t nbytes;
} kvl_gguf_tensor;

/* Open and validate a file (mmap, read-only). */
kvl_status kvl_gguf_open(const char *path, kvl_gguf **out, kvl_err *err);
/* Validate a caller-owned buffer (must outlive the handle). For tests/fuzzing. */
kvl_status kvl_gguf_open_mem(const void *data, size_t size, kvl_gguf **out, kvl_err *err);
void kvl_gguf_free(kvl_gguf *g);

uint32_t kvl_gguf_version(const kvl_gguf *g);
int64_t kvl_gguf_n_kv(const kvl_gguf *g);
/* Index of a metadata key or -1. */
int64_t kvl_gguf_find_key(const kvl_gguf *g, const char *key);
const char *kvl_gguf_key_name(const kvl_gguf *g, int64_t idx);
kvl_gguf_vtype kvl_gguf_key_type(const kvl_gguf *g, int64_t idx);

/* Typed getters by key name. Return 1 when the key exists with a compatible
 * type (any integer type for the integer getters if the value fits, any float
 * or integer for get_f32), else 0 and *out untouched. */
int kvl_gguf_get_u32(const kvl_gguf *g, const char *key, uint32_t *out);
int kvl_gguf_get_i64(const kvl_gguf *g, const char *key, int64_t *out);
int kvl_gguf_get_f32(const kvl_gguf *g, const char *key, float *out);
int kvl_gguf_get_bool(const kvl_gguf *g, const char *key, int *out);
/* String value: pointer into the map (NOT NUL-terminated) and its length. */
int kvl_gguf_get_str(const kvl_gguf *g, const char *key, const char **s, size_t *len);

/* Arrays: element type and count. */
int kvl_gguf_get_arr(const kvl_gguf *g, const char *key, kvl_gguf_vtype *elem_type, uint64_t *n);
/* Element i of a string array (pointer into the map, not NUL-terminated). */
int kvl_gguf_arr_str(const kvl_gguf *g, const char *key, uint64_t i, const char **s, size_t *len);
/* Raw element data of a numeric array (elements are little-endian, packed). */
const void *kvl_gguf_arr_data(const kvl_gguf *g, const char *key);
/* Numeric array element i converted: any integer type -> int64, float types -> f64. */
int kvl_gguf_arr_i64(const kvl_gguf *g, const char *key, uint64_t i, int64_t *out);
int kvl_gguf_arr_f64(const kvl_gguf *g, const char *key, uint64_t i, double *out);

int64_t kvl_gguf_n_tensors(const kvl_gguf *g);
const kvl_gguf_tensor *kvl_gguf_tensor_at(const kvl_gguf *g, int64_t i);
/* Tensor by name or NULL. */
const kvl_gguf_tensor *kvl_gguf_find_tensor(const kvl_gguf *g, const char *name);
/* Total bytes of tensor data. */
size_t kvl_gguf_data_bytes(const kvl_gguf *g);

#endif
