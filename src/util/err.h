/* Error reporting inside kvlite: a status code plus a one-line message kept in
 * a caller-owned buffer (no global state). */
#ifndef KVL_UTIL_ERR_H
#define KVL_UTIL_ERR_H

#include "kvlite.h"

typedef struct kvl_err {
    kvl_status status;
    char msg[512];
} kvl_err;

/* Record status and a printf-style message in err (err may be NULL). Returns status. */
kvl_status kvl_err_set(kvl_err *err, kvl_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Reset to KVL_OK and empty message. */
void kvl_err_clear(kvl_err *err);

#endif
