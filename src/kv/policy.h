/* KV eviction policies. A policy is a table of operations found by name; each
 * page table (sequence) gets its own policy state. At table creation the
 * policy says which attention statistics it needs (kvl_kv_table_stats_enable;
 * the attention loop then produces them as a by-product, no second pass over
 * the cache). After each forward call the engine calls kvl_kv_policy_step,
 * which runs the policy's step: it reads lengths, positions and statistics
 * through kv.h (kvl_kv_table_len, kvl_kv_table_positions,
 * kvl_kv_table_stat_mass), decides per (layer, kv-head) which tokens to keep —
 * budgets may differ per layer (PyramidKV, CAKE) and per head — and evicts
 * with kvl_kv_drop, which compacts pages so memory really returns to the pool.
 *
 * Built-in: "full" (keep everything, no statistics). H2O (mass), TOVA (last
 * query), SnapKV (observation window) fit the same shape. */
#ifndef KVL_KV_POLICY_H
#define KVL_KV_POLICY_H

#include "kv/kv.h"

typedef struct kvl_policy_ops {
    const char *name;
    /* Create per-table state (NULL ops: no state). May enable statistics on t. */
    kvl_status (*create)(kvl_kv_table *t, void **state, kvl_err *err);
    void (*destroy)(void *state);
    /* State for a fork of the table that owns src_state (NULL: create()). */
    kvl_status (*fork)(const void *src_state, kvl_kv_table *child, void **state, kvl_err *err);
    /* Consume statistics, evict. NULL: nothing to do. */
    kvl_status (*step)(void *state, kvl_kv_table *t, kvl_err *err);
} kvl_policy_ops;

/* Policy by name or NULL. */
const kvl_policy_ops *kvl_policy_find(const char *name);
/* Comma-separated list of policy names. */
const char *kvl_policy_list(void);

#endif
