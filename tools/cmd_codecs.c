/* `kvlite codecs`: every KV codec with its format and exact bits per value
 * (a full page at --head-dim, default 64, and --page tokens, default 32).
 * `kvlite policies`: every KV eviction policy with its parameters. */
#include "cli.h"

#include <string.h>

int cmd_codecs(const cli_opts *o) {
    const int D = o->head_dim > 0 ? o->head_dim : 64, P = o->page_tokens > 0 ? o->page_tokens : 32;
    kvl_codec_info ci;
    if (o->json) {
        printf("{\"head_dim\": %d, \"page_tokens\": %d, \"codecs\": [", D, P);
        for (int i = 0; kvl_codec_info_get(i, D, P, &ci); i++) {
            printf("%s{\"name\": ", i ? ", " : "");
            cli_json_escape(stdout, ci.name);
            printf(", \"bits_k\": %.6g, \"bits_v\": %.6g, \"sealing\": %s, \"params\": ", ci.bits_k, ci.bits_v,
                   ci.sealing ? "true" : "false");
            cli_json_escape(stdout, ci.params);
            printf(", \"desc\": ");
            cli_json_escape(stdout, ci.desc);
            printf("}");
        }
        printf("]}\n");
        return CLI_EXIT_OK;
    }
    printf("KV codecs at head_dim %d, %d-token pages (bits per value of a full page, scales included;\n"
           "add +rot for a Hadamard rotation of K/Q and V; sealing codecs keep the newest r tokens in f16)\n\n",
           D, P);
    printf("%-10s %7s %7s  %-8s %s\n", "name", "K bits", "V bits", "params", "format");
    for (int i = 0; kvl_codec_info_get(i, D, P, &ci); i++)
        printf("%-10s %7.3f %7.3f  %-8s %s%s\n", ci.name, ci.bits_k, ci.bits_v, ci.params[0] ? ci.params : "-",
               ci.sealing ? "[sealing] " : "", ci.desc);
    return CLI_EXIT_OK;
}

int cmd_policies(const cli_opts *o) {
    kvl_policy_info pi;
    static const char *const stat_names[] = {"mass", "window", "last", "votes", "entropy"};
    if (o->json) {
        printf("{\"policies\": [");
        for (int i = 0; kvl_policy_info_get(i, &pi); i++) {
            printf("%s{\"name\": ", i ? ", " : "");
            cli_json_escape(stdout, pi.name);
            printf(", \"params\": ");
            cli_json_escape(stdout, pi.params);
            printf(", \"stats\": %u, \"desc\": ", pi.stats);
            cli_json_escape(stdout, pi.desc);
            printf("}");
        }
        printf("]}\n");
        return CLI_EXIT_OK;
    }
    printf("KV eviction policies (--kv-policy NAME[:key=value,...], budget --kv-keep N|P%% or --kv-budget)\n\n");
    printf("%-10s %-16s %-40s %s\n", "name", "statistics", "params", "what");
    for (int i = 0; kvl_policy_info_get(i, &pi); i++) {
        char st[64] = "";
        for (int b = 0; b < 5; b++)
            if (pi.stats & 1u << b) snprintf(st + strlen(st), sizeof st - strlen(st), "%s%s", st[0] ? "+" : "", stat_names[b]);
        printf("%-10s %-16s %-40s %s\n", pi.name, st[0] ? st : "-", pi.params[0] ? pi.params : "-", pi.desc);
    }
    return CLI_EXIT_OK;
}
