/* Minimal test harness: CHECK macros count failures; each test binary ends
 * with KVL_TEST_END() printing "N passed, N failed" and returning non-zero on
 * failure. */
#ifndef KVL_TEST_H
#define KVL_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int kvl_t_pass, kvl_t_fail;

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (cond) kvl_t_pass++;                                                          \
        else {                                                                           \
            kvl_t_fail++;                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);     \
        }                                                                                \
    } while (0)

#define CHECK_MSG(cond, ...)                                                             \
    do {                                                                                 \
        if (cond) kvl_t_pass++;                                                          \
        else {                                                                           \
            kvl_t_fail++;                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);     \
            fprintf(stderr, __VA_ARGS__);                                                \
            fputc('\n', stderr);                                                         \
        }                                                                                \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                            \
    do {                                                                                 \
        double kvl_a_ = (a), kvl_b_ = (b);                                               \
        if (fabs(kvl_a_ - kvl_b_) <= (tol)) kvl_t_pass++;                                \
        else {                                                                           \
            kvl_t_fail++;                                                                \
            fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s=%g %s=%g tol=%g\n", __FILE__,  \
                    __LINE__, #a, kvl_a_, #b, kvl_b_, (double)(tol));                    \
        }                                                                                \
    } while (0)

#define KVL_TEST_END()                                                                   \
    do {                                                                                 \
        printf("%s: %d passed, %d failed\n", __FILE__, kvl_t_pass, kvl_t_fail);          \
        return kvl_t_fail ? 1 : 0;                                                       \
    } while (0)

#endif
