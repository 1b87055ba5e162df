/* libFuzzer target for the Redis URL parser (kvl_redis_url_parse,
 * src/engine/redis.c): any byte string is accepted or rejected with a
 * message, never read past its end; an accepted URL has a non-empty host of
 * the allowed characters, port 1..65535 and database 0..65535, and its
 * canonical form redis://HOST:PORT/DB parses back to the same fields.
 * Built by `make fuzz` (build-fuzz/fuzz_redis_url); seeds in
 * tests/fuzz/corpus/fuzz_redis_url/. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/redis.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = 0; /* the parser takes C strings: anything after a NUL is not seen */
    char host[KVL_REDIS_URL_MAX];
    int port = -1, db = -1;
    kvl_err e;
    kvl_err_clear(&e);
    const kvl_status st = kvl_redis_url_parse(s, host, sizeof host, &port, &db, &e);
    if (st == KVL_OK) {
        if (!host[0] || port < 1 || port > 65535 || db < 0 || db > 65535) abort();
        for (const char *p = host; *p; p++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:", *p)) abort();
        char canon[KVL_REDIS_URL_MAX + 32], h2[KVL_REDIS_URL_MAX];
        snprintf(canon, sizeof canon, strchr(host, ':') ? "redis://[%s]:%d/%d" : "redis://%s:%d/%d", host, port, db);
        int p2 = -1, d2 = -1;
        if (strlen(canon) < KVL_REDIS_URL_MAX &&
            (kvl_redis_url_parse(canon, h2, sizeof h2, &p2, &d2, &e) != KVL_OK || strcmp(h2, host) || p2 != port || d2 != db))
            abort();
    } else if (st != KVL_ERR_ARG || !e.msg[0]) {
        abort();
    }
    free(s);
    return 0;
}
