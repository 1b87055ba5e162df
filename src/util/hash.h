/* Hashing shared by the library's hash tables: FNV-1a over bytes (GGUF key
 * index, tokenizer vocabulary, tokenizer word cache). */
#ifndef KVL_UTIL_HASH_H
#define KVL_UTIL_HASH_H

#include <stddef.h>
#include <stdint.h>

/* 64-bit FNV-1a of p[0..n). Tables index with the low bits (h & mask). */
static inline uint64_t kvl_hash_fnv1a(const void *p, size_t n) {
    const uint8_t *s = (const uint8_t *)p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

#endif
