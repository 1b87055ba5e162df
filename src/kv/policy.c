/* Policy registry and the "full" policy (keeps every token, collects no
 * statistics, so attention runs at full speed). */
#include "kv/policy.h"

#include <string.h>

static const kvl_policy_ops policy_full = {"full", NULL, NULL, NULL, NULL};

static const kvl_policy_ops *const policies[] = {&policy_full};

const kvl_policy_ops *kvl_policy_find(const char *name) {
    if (!name) return &policy_full;
    for (size_t i = 0; i < sizeof policies / sizeof policies[0]; i++)
        if (strcmp(policies[i]->name, name) == 0) return policies[i];
    return NULL;
}

const char *kvl_policy_list(void) { return "full"; }
