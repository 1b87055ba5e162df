/* kvlite calibrate: offline profiling for the oaken KV codec. Runs prefill
 * with an f32 KV cache over a text and writes per-layer K/V thresholds to a
 * small file, by default next to the model (<model>.oaken, where the oaken
 * codec looks for it).
 *   kvlite calibrate -m MODEL [--text FILE] [--tokens N] [--window N] [-t N] [-o FILE]
 * Default text: ../shared/data/wikitext-2/train.txt if present, else
 * valid.txt (calibration text; never the test split). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "engine/calibrate.h"

int cmd_calibrate(int argc, char **argv) {
    const char *model = NULL, *text = NULL, *out = NULL;
    int n_tokens = 8192, n_window = 512, n_threads = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: kvlite calibrate -m MODEL [--text FILE] [--tokens N] [--window N] [-t N] [-o FILE]\n"
                   "  oaken KV thresholds per layer from an f32-KV prefill over FILE\n"
                   "  (default ../shared/data/wikitext-2/train.txt, else valid.txt); -o default MODEL.oaken\n");
            return 0;
        }
        if (i + 1 >= argc) cli_die(CLI_EXIT_USAGE, "calibrate: %s needs a value", a);
        const char *v = argv[++i];
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--text") || !strcmp(a, "-f")) text = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--tokens")) {
            if (cli_parse_int(v, 1, 1 << 24, &n_tokens)) cli_die(CLI_EXIT_USAGE, "calibrate: bad --tokens '%s'", v);
        } else if (!strcmp(a, "--window")) {
            if (cli_parse_int(v, 16, 1 << 16, &n_window)) cli_die(CLI_EXIT_USAGE, "calibrate: bad --window '%s'", v);
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (cli_parse_int(v, 0, 4096, &n_threads)) cli_die(CLI_EXIT_USAGE, "calibrate: bad --threads '%s'", v);
        } else
            cli_die(CLI_EXIT_USAGE, "calibrate: unknown flag '%s' (see kvlite calibrate --help)", a);
    }
    if (!model) cli_die(CLI_EXIT_USAGE, "calibrate: -m MODEL is required");
    if (!text) {
        text = "../shared/data/wikitext-2/train.txt";
        if (access(text, R_OK) != 0) text = "../shared/data/wikitext-2/valid.txt";
    }
    char def_out[4096];
    if (!out) {
        snprintf(def_out, sizeof def_out, "%s.oaken", model);
        out = def_out;
    }
    size_t len = 0;
    char *buf = cli_read_file(text, &len);
    kvl_model *m = cli_load_model(model);
    fprintf(stderr, "calibrate: text %s\n", text);
    kvl_calib_params p = {.n_tokens = n_tokens, .n_window = n_window, .n_threads = n_threads, .log = stderr};
    char err[512] = "";
    kvl_status s = kvl_calibrate_oaken(m, buf, len, &p, out, err, sizeof err);
    free(buf);
    kvl_model_free(m);
    if (s) cli_die(CLI_EXIT_RUNTIME, "%s", err);
    return 0;
}
