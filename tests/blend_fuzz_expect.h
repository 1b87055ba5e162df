/* The configuration tests/fuzz_blend.c decodes chunk files against, shared
 * with test_blend.c, which writes its seed corpus (KVL_WRITE_SEEDS=DIR). */
#ifndef KVL_TESTS_BLEND_FUZZ_EXPECT_H
#define KVL_TESTS_BLEND_FUZZ_EXPECT_H

#include "engine/blend.h"

static inline kvl_blend_expect blend_fuzz_expect(int f32) {
    return (kvl_blend_expect){.identity = 0x1234abcd5678ef00ull, .config = "model=1234abcd5678ef00;page=8;0-1=f16/f16;",
                              .n_layer = 2, .kv = 16, .f32 = f32, .base_pos = 3, .n_vocab = 256, .max_tokens = 64};
}

#endif
