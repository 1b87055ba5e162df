/* Tensor type table: names, block sizes and row sizes (ggml numbering). */
#include "cpu/quant.h"

typedef struct {
    const char *name;
    int64_t elems;
    size_t bytes;
    int supported;
} kvl_type_info;

static const kvl_type_info *type_info(int t) {
    static const kvl_type_info tab[KVL_TYPE_COUNT] = {
        [KVL_TYPE_F32] = {"f32", 1, 4, 1},
        [KVL_TYPE_F16] = {"f16", 1, 2, 1},
        [KVL_TYPE_Q4_0] = {"q4_0", 32, 18, 1},
        [KVL_TYPE_Q4_1] = {"q4_1", 32, 20, 1},
        [KVL_TYPE_Q5_0] = {"q5_0", 32, 22, 1},
        [KVL_TYPE_Q5_1] = {"q5_1", 32, 24, 1},
        [KVL_TYPE_Q8_0] = {"q8_0", 32, 34, 1},
        [KVL_TYPE_Q8_1] = {"q8_1", 32, 36, 0},
        [KVL_TYPE_Q2_K] = {"q2_k", 256, 84, 0},
        [KVL_TYPE_Q3_K] = {"q3_k", 256, 110, 0},
        [KVL_TYPE_Q4_K] = {"q4_k", 256, 144, 1},
        [KVL_TYPE_Q5_K] = {"q5_k", 256, 176, 0},
        [KVL_TYPE_Q6_K] = {"q6_k", 256, 210, 1},
        [KVL_TYPE_Q8_K] = {"q8_k", 256, 292, 0},
        [KVL_TYPE_BF16] = {"bf16", 1, 2, 1},
    };
    if (t < 0 || t >= KVL_TYPE_COUNT || !tab[t].name) return 0;
    return &tab[t];
}

const char *kvl_type_name(int t) {
    const kvl_type_info *i = type_info(t);
    return i ? i->name : 0;
}
int kvl_type_supported(int t) {
    const kvl_type_info *i = type_info(t);
    return i ? i->supported : 0;
}
int64_t kvl_type_block_elems(int t) {
    const kvl_type_info *i = type_info(t);
    return i ? i->elems : 0;
}
size_t kvl_type_block_bytes(int t) {
    const kvl_type_info *i = type_info(t);
    return i ? i->bytes : 0;
}
size_t kvl_type_row_bytes(int t, int64_t n) {
    const kvl_type_info *i = type_info(t);
    if (!i || n < 0) return 0;
    return (size_t)(n / i->elems) * i->bytes;
}
