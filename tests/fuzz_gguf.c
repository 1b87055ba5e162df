/* libFuzzer target for everything built from a GGUF file: the reader, the
 * tokenizer and the model loader. Any byte string must either open cleanly or
 * be rejected with a message, never crash, leak or read out of bounds.
 *
 *   reader     every key (typed getters, type, lookup by name), every array
 *              element (string and numeric views), every tensor descriptor
 *              and data byte, out-of-range accessors, the data byte total
 *   tokenizer  kvl_tok_create from the tokenizer.* metadata; when it builds,
 *              encode a few texts (special tokens on/off), the piece of
 *              every id, chat rendering
 *   model      kvl_model_load on the same bytes (through a memfd) when the
 *              file names an architecture: hparams, RoPE tables, every
 *              weight's presence, type and shape
 *
 * Built by `make fuzz` (build-fuzz/fuzz_gguf, clang -fsanitize=fuzzer,
 * address,undefined); seeds in tests/fuzz/corpus/fuzz_gguf/ (written by
 * scripts/make_fuzz_seeds.py); `make fuzz-run` runs it. */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kvlite.h"
#include "model/chat.h"
#include "model/gguf.h"
#include "model/tok.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile unsigned sink;

static void touch_reader(const kvl_gguf *g) {
    unsigned acc = 0;
    for (int64_t i = 0; i < kvl_gguf_n_kv(g); i++) {
        const char *k = kvl_gguf_key_name(g, i);
        uint32_t u;
        int64_t v;
        float f;
        int b;
        const char *s;
        size_t n;
        kvl_gguf_vtype et;
        uint64_t cnt;
        if (!k || kvl_gguf_find_key(g, k) != i) abort();
        acc += (unsigned)kvl_gguf_key_type(g, i);
        acc += (unsigned)kvl_gguf_get_u32(g, k, &u) + (unsigned)kvl_gguf_get_i64(g, k, &v) +
               (unsigned)kvl_gguf_get_f32(g, k, &f) + (unsigned)kvl_gguf_get_bool(g, k, &b);
        if (kvl_gguf_get_str(g, k, &s, &n) && n) acc += (uint8_t)s[n - 1];
        if (kvl_gguf_get_arr(g, k, &et, &cnt)) {
            const void *raw = kvl_gguf_arr_data(g, k);
            if ((raw == NULL) != (et == KVL_GGUF_STRING)) abort();
            for (uint64_t j = 0; j < cnt; j++) {
                double d;
                if (kvl_gguf_arr_str(g, k, j, &s, &n) && n) acc += (uint8_t)s[0] + (uint8_t)s[n - 1];
                acc += (unsigned)kvl_gguf_arr_i64(g, k, j, &v) + (unsigned)kvl_gguf_arr_f64(g, k, j, &d);
            }
            if (kvl_gguf_arr_str(g, k, cnt, &s, &n) || kvl_gguf_arr_i64(g, k, cnt, &v)) abort();
        }
    }
    if (kvl_gguf_key_name(g, -1) || kvl_gguf_key_name(g, kvl_gguf_n_kv(g))) abort();
    acc += (unsigned)kvl_gguf_find_key(g, "kvlite.fuzz.no_such_key") + (kvl_gguf_find_tensor(g, "") != NULL);
    uint64_t total = 0;
    for (int64_t i = 0; i < kvl_gguf_n_tensors(g); i++) {
        const kvl_gguf_tensor *t = kvl_gguf_tensor_at(g, i);
        if (!t || kvl_gguf_find_tensor(g, t->name) != t) abort();
        if (t->n_dims < 1 || t->n_dims > 4 || !kvl_type_block_bytes(t->type)) abort();
        for (size_t j = 0; j < t->nbytes; j++) acc += ((const uint8_t *)t->data)[j];
        total += t->nbytes;
    }
    if (kvl_gguf_tensor_at(g, -1) || kvl_gguf_tensor_at(g, kvl_gguf_n_tensors(g))) abort();
    if (total != kvl_gguf_data_bytes(g) && kvl_gguf_data_bytes(g) != SIZE_MAX) abort();
    sink += acc;
}

static void touch_tokenizer(const kvl_gguf *g) {
    kvl_tok *t = NULL;
    kvl_err err;
    kvl_err_clear(&err);
    if (kvl_tok_create(g, &t, &err) != KVL_OK) {
        if (t || !err.msg[0]) abort();
        return;
    }
    unsigned acc = 0;
    static const char *const texts[] = {
        "Hello world! The quick brown fox, 12345 and\ttabs\n\nnewlines.",
        "<|im_start|>user\nhi<|im_end|><|endoftext|><s></s><|eot_id|> <unk>",
        "\xff\xfe invalid \xc3\x28 utf-8 \xe2\x82 and caf\xc3\xa9 \xf0\x9f\x98\x80",
        "",
    };
    kvl_token ids[512];
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        for (int special = 0; special < 2; special++) {
            int64_t n = kvl_tok_encode(t, texts[i], strlen(texts[i]), special, special, ids, 512);
            if (n > 512) abort(); /* these texts are short: it must fit */
            for (int64_t j = 0; j < n; j++) {
                if (ids[j] < 0 || ids[j] >= kvl_tok_n_vocab(t)) abort();
                acc += (unsigned)ids[j];
            }
            acc += (unsigned)kvl_tok_encode(t, texts[i], strlen(texts[i]), 0, special, ids, 1); /* cap 1 */
        }
    }
    char buf[64];
    const int nv = kvl_tok_n_vocab(t);
    for (int id = -1; id <= nv && id < 8192; id++) {
        int n = kvl_tok_piece(t, id, id & 1, buf, (int)sizeof buf);
        if (n > 0 && n <= (int)sizeof buf) acc += (uint8_t)buf[n - 1];
    }
    acc += (unsigned)kvl_tok_bos(t) + (unsigned)kvl_tok_eos(t) + (unsigned)kvl_tok_eot(t) +
           (unsigned)kvl_tok_add_bos_default(t) + (unsigned)kvl_tok_is_eog(t, 0);
    const kvl_chat_msg msgs[3] = {{"system", "Be brief."}, {"user", "Hi <|im_end|>"}, {"assistant", "Hello."}};
    char out[1024];
    int64_t n = kvl_chat_render(t, msgs, 3, 1, out, sizeof out);
    /* NUL-terminated when it fits (token texts in the template may hold NULs) */
    if (n >= 0 && (size_t)n < sizeof out && out[n] != 0) abort();
    acc += (unsigned)kvl_chat_render(t, msgs, 2, 0, out, 4); /* too small */
    kvl_token cids[256];
    acc += (unsigned)kvl_chat_encode(t, msgs, 3, 1, cids, 256, NULL);
    kvl_tok_free(t);
    sink += acc;
}

/* kvl_model_load takes a path: hand it the bytes through a memfd. */
static void touch_model(const uint8_t *data, size_t size) {
    static int fd = -2;
    if (fd == -2) fd = memfd_create("fuzz_gguf", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size) return;
    char path[64], err[256] = "";
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    kvl_model *m = NULL;
    kvl_status st = kvl_model_load(path, &m, err, sizeof err);
    if (st != KVL_OK) {
        if (m || !err[0]) abort();
        return;
    }
    kvl_model_info mi;
    kvl_model_get_info(m, &mi);
    if (mi.n_layer <= 0 || mi.n_vocab <= 0 || mi.head_dim <= 0) abort();
    kvl_token ids[64];
    int64_t n = kvl_tokenize(m, "fuzz the model", 14, 1, 0, ids, 64);
    sink += (unsigned)n + (unsigned)kvl_model_is_eog(m, 0);
    kvl_model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kvl_gguf *g = NULL;
    kvl_err err;
    kvl_err_clear(&err);
    if (kvl_gguf_open_mem(data, size, &g, &err) != KVL_OK) {
        if (g || !err.msg[0]) abort();
        return 0;
    }
    touch_reader(g);
    touch_tokenizer(g);
    const int load = kvl_gguf_find_key(g, "general.architecture") >= 0;
    kvl_gguf_free(g);
    if (load) touch_model(data, size);
    return 0;
}
