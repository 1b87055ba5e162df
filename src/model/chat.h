/* Chat templates (ChatML, Llama-3) chosen from tokenizer.chat_template and
 * rendered natively. The template is created with the tokenizer and owned by
 * it (kvl_tok_chat); functions take the tokenizer, which supplies the BOS
 * text. */
#ifndef KVL_MODEL_CHAT_H
#define KVL_MODEL_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "kvlite.h"
#include "model/gguf.h"
#include "model/tok.h"

/* Recognize the template of g (absent or unknown templates: ChatML). Only
 * fails for lack of memory (message in err). g may be freed afterwards. */
kvl_status kvl_chat_create(const kvl_gguf *g, kvl_chat **out, kvl_err *err);
void kvl_chat_free(kvl_chat *c);

/* Same contract as kvl_chat_apply in kvlite.h, with the template of t. */
int64_t kvl_chat_render(const kvl_tok *t, const kvl_chat_msg *msgs, int n_msgs, int add_assistant, char *out,
                        size_t cap);
/* Same contract as kvl_chat_tokenize in kvlite.h: the rendering tokenized
 * with control tokens matched only in the template's own markup (roles and
 * contents are text), BOS added once. err (may be NULL) gets a message on
 * failure. */
int64_t kvl_chat_encode(const kvl_tok *t, const kvl_chat_msg *msgs, int n_msgs, int add_assistant, kvl_token *out,
                        int64_t cap, kvl_err *err);

#endif
