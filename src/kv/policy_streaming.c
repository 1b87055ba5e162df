/* StreamingLLM (Xiao et al., ICLR 2024): attention sinks + a recent window.
 * The first `sink` tokens and the newest budget - sink tokens stay; no
 * attention statistics at all, so attention runs at full speed. Kept keys
 * keep their original positions (StreamingLLM re-indexes positions inside
 * the cache; with RoPE applied before caching, kvlite does not). */
#include "kv/policy.h"

static void streaming_defaults(kvl_policy_cfg *c) {
    c->sink = 4;
    c->recent = 1 << 20; /* everything after the sinks, up to the budget */
}

const kvl_policy_ops kvl_policy_streaming = {
    "streaming", "attention sinks + recent window (StreamingLLM)", "sink,slack", 0, 0, streaming_defaults,
    NULL, NULL, NULL};
