#!/usr/bin/env python3
"""Tables and heat maps of the KV eviction policy benchmark (bench/policies.sh).

Reads the JSON files in bench/results/policies/ (one `kvlite eval ... --json`
object per run, named TASK__POLICY__KEEP__MODE[__CODEC].json, tune__*.json,
ppl__*.json) and writes bench/results/policies.md (kept verbatim in
docs/RESULTS.md by bench/report.py) and docs/img/policy_*.png heat maps
(matplotlib if importable). Missing runs show as "-".
  python3 bench/policy_report.py [--dir bench/results/policies] [--out bench/results/policies.md]
"""
import argparse
import glob
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICIES = ["streaming", "h2o", "tova", "snapkv", "pyramidkv", "veda", "cake"]


def load(d):
    runs = {}
    for f in sorted(glob.glob(os.path.join(d, "*.json"))):
        try:
            runs[os.path.basename(f)[:-5]] = json.load(open(f))
        except (OSError, ValueError):
            pass
    return runs


def pct(x):
    return "-" if x is None else "%.0f%%" % (100 * x)


def ratio(a, b):
    return "-" if a is None or not b else "%.0f%%" % (100 * a / b)


def mib(b):
    return "-" if b is None else "%.1f" % (b / 1048576.0)


def score(runs, tag):
    r = runs.get(tag)
    return r.get("score") if r else None


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def heatmaps(runs, full, imgdir, keep, mode, title, names):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    sel = [(n, runs.get("needle__%s__%s__%s" % (n.replace(":", "_").replace("=", "_").replace(",", "_"), keep, mode)))
           for n in names]
    sel = [(n, r) for n, r in sel if r]
    if full:
        sel = [("full cache", full)] + sel
    if not sel:
        return None
    fig, axes = plt.subplots(1, len(sel), figsize=(2.1 * len(sel), 2.6), squeeze=False)
    for ax, (name, r) in zip(axes[0], sel):
        lengths, depths = r["lengths"], r["depths"]
        grid = [[0.0] * len(lengths) for _ in depths]
        cnt = [[0] * len(lengths) for _ in depths]
        for c in r["cells"]:
            i, j = depths.index(c["depth"]), lengths.index(c["length"])
            grid[i][j] += 1.0 if c["correct"] else 0.0
            cnt[i][j] += 1
        for i in range(len(depths)):
            for j in range(len(lengths)):
                grid[i][j] = grid[i][j] / cnt[i][j] if cnt[i][j] else float("nan")
        ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(range(len(lengths)))
        ax.set_xticklabels([str(x // 1024) + "K" for x in lengths], fontsize=7)
        ax.set_yticks(range(len(depths)))
        ax.set_yticklabels([str(d) for d in depths], fontsize=7)
        ax.set_title("%s\n%.0f%%" % (name, 100 * r["score"]), fontsize=8)
    axes[0][0].set_ylabel("needle depth %", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fn = "policy_needle_%s_%s.png" % (keep, mode)
    fig.savefig(os.path.join(imgdir, fn), dpi=110)
    plt.close(fig)
    return fn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=os.path.join(ROOT, "bench", "results", "policies"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "policies.md"))
    ap.add_argument("--img", default=os.path.join(ROOT, "docs", "img"))
    a = ap.parse_args()
    runs = load(a.dir)
    A = []
    full = runs.get("needle__full__100__qa")
    fs = full["score"] if full else None
    grid = ""
    if full:
        grid = "lengths %s x depths %s x %d seed(s) = %d cells" % (
            ",".join(map(str, full["lengths"])), ",".join(map(str, full["depths"])), full["seeds"], full["cells_total"])
    A.append("### KV eviction policies (issue 9)")
    A.append("")
    A.append("Command: `bench/policies.sh` (JSON per run in `bench/results/policies/`, tables by "
             "`bench/policy_report.py`); SmolLM2-135M-Instruct Q4_1, f16 KV unless noted, 2-core x86 CPU, "
             "needle grid %s (reduced from the 1K-4K x 11 depths x 2 seeds default to fit the machine: a "
             "cell is 1/%s of the score). Keep = cached tokens per (layer, kv-head) as a fraction of the prompt "
             "(`--kv-keep 10%%`). Question-aware: the whole prompt in one forward call, each layer evicted right "
             "after its attention; query-agnostic: haystack compressed first, question appended after." %
             (grid or "-", full["cells_total"] if full else "?"))
    A.append("")
    tuned = {}
    for p in ("snapkv", "cake"):
        f = os.path.join(a.dir, "tuned_pool_%s.txt" % p)
        if os.path.exists(f):
            tuned[p] = open(f).read().strip()
    names = list(POLICIES) + ["%s:pool=%s" % (p, k) for p, k in tuned.items()]

    def tag(task, n, keep, mode, suffix=""):
        return "%s__%s__%s__%s%s" % (task, n.replace(":", "_").replace("=", "_").replace(",", "_"), keep, mode, suffix)

    rows = []
    for n in names:
        cells = [n + (" (pool tuned on valid)" if ":pool=" in n else "")]
        for keep, mode in (("5", "qa"), ("10", "qa"), ("25", "qa"), ("50", "qa"), ("10", "qagn"), ("25", "qagn")):
            s = score(runs, tag("needle", n, keep, mode))
            cells.append("-" if s is None else "%s (%s)" % (pct(s), ratio(s, fs)))
        rows.append(cells)
    A.append("Needle score (share of the full cache's %s in parentheses):" % pct(fs))
    A.append("")
    A += table(["policy", "5% qa", "10% qa", "25% qa", "50% qa", "10% query-agn.", "25% query-agn."], rows)
    A.append("")
    # KV bytes
    r10 = [runs.get(tag("needle", n, "10", "qa")) for n in POLICIES]
    if full and any(r10):
        A.append("KV bytes (max over cells) at 10%% kept, question-aware: full cache peak %s MiB / end %s MiB; " %
                 (mib(full["kv_bytes_peak"]), mib(full["kv_bytes_end"])) +
                 ", ".join("%s %s / %s" % (n, mib(r["kv_bytes_peak"]), mib(r["kv_bytes_end"])) for n, r in
                           zip(POLICIES, r10) if r) +
                 " (peak = the 10% of every layer plus one layer's whole prompt during the one-call prefill; "
                 "end = after the answer).")
        A.append("")
    # tuning
    tr = [(k, runs.get("tune__%s_pool%s__10" % (p, k)), p) for p in ("snapkv", "cake") for k in ("7", "15", "31", "63")]
    if any(r for _, r, _ in tr):
        tf = runs.get("tune__full")
        A.append("Pooling kernel tuned on valid prompts (`--seed-base 1000`, disjoint from the reported ones), "
                 "needle at 10%% kept, question-aware (full cache there: %s):" % pct(tf["score"] if tf else None))
        A.append("")
        A += table(["policy", "pool 7", "pool 15", "pool 31", "pool 63", "chosen"],
                   [[p] + [pct(score(runs, "tune__%s_pool%s__10" % (p, k))) for k in ("7", "15", "31", "63")] +
                    [tuned.get(p, "-")] for p in ("snapkv", "cake")])
        A.append("")
    # heat maps
    os.makedirs(a.img, exist_ok=True)
    for keep, mode, title in (("10", "qa", "needle, 10% kept, question-aware"),
                              ("25", "qagn", "needle, 25% kept, query-agnostic")):
        fn = heatmaps(runs, full, a.img, keep, mode, title, names)
        if fn:
            A.append("![%s](img/%s)" % (title, fn))
            A.append("")
    # other tasks
    for task in ("passkey", "multikey"):
        tf = runs.get("%s__full__100__qa" % task)
        if not tf:
            continue
        A.append("%s at 10%% kept, question-aware (full cache %s): " % (task, pct(tf["score"])) +
                 ", ".join("%s %s" % (n, pct(score(runs, tag(task, n, "10", "qa")))) for n in POLICIES))
        A.append("")
    # ppl
    pf = runs.get("ppl__full")
    if pf:
        rows = []
        for n in ["full"] + POLICIES:
            r = runs.get("ppl__" + n)
            if not r:
                continue
            rows.append([n, "%.3f" % r["ppl"], "-" if n == "full" else "%+.1f%%" % (100 * (r["ppl"] / pf["ppl"] - 1)),
                         mib(r.get("kv_bytes_peak")), mib(r.get("kv_bytes_end")), r.get("kv_tokens_end", "-")])
        A.append("Perplexity of %d windows of %d tokens (wikitext-2 test), `--kv-keep 1024` (chunks of %d tokens):" %
                 (pf["windows"], pf["ctx"], pf["chunk"]))
        A.append("")
        A += table(["policy", "ppl", "vs full", "KV peak MiB", "KV end MiB", "tokens kept"], rows)
        A.append("")
    # codecs
    cr = []
    for c in ("kivi3z_fit_mse", "kivi2z_rot"):
        cands = [("full", "100")] + [(n, k) for n in ["snapkv", "cake"] + ["%s:pool=%s" % (p, v) for p, v in tuned.items()]
                                     for k in ("10", "25")]
        for n, keep in cands:
            r = runs.get(tag("needle", n, keep, "qa", "__" + c))
            if r and full:
                cr.append([c.replace("_fit_mse", ":fit=mse").replace("_rot", "+rot"), n + ("" if n == "full" else " %s%%" % keep),
                           pct(r["score"]), ratio(r["score"], fs), mib(r["kv_bytes_end"]),
                           ratio(r["kv_bytes_end"], full["kv_bytes_end"])])
    if cr:
        A.append("Codec x policy (needle, question-aware): score, share of the f16 full cache's score, KV bytes after "
                 "the answer and their share of the f16 full cache's:")
        A.append("")
        A += table(["codec", "policy", "score", "of f16 full", "KV end MiB", "of f16 bytes"], cr)
        A.append("")
    # decode speed at 8K
    sf = runs.get("speed__full")
    if sf:
        rows = []
        for n in ["full", "streaming", "h2o", "snapkv", "cake"]:
            r = runs.get("speed__" + n)
            if r:
                rows.append([n if n == "full" else n + " 10%", "%.1f" % r["decode_tok_s"],
                             " / ".join("%.1f" % x for x in r["decode_tok_s_all"]),
                             "%.2fx" % (r["decode_tok_s"] / sf["decode_tok_s"]), "%.0f" % r["prefill_tok_s"]])
        A.append("Decode after an 8192-token prompt, 64 tokens, 2 reps (`kvlite bench --prompt 8192 --gen 64 --reps 2 "
                 "[--kv-policy P --kv-keep 10%]`; the machine was shared with other work, so reps vary: both are listed):")
        A.append("")
        A += table(["config", "decode tok/s (median)", "reps", "vs full", "prefill tok/s"], rows)
        A.append("")
    # KLD at ctx 1024 -> table + kv-point file for the quality-vs-bytes chart
    kf = runs.get("kld__full")
    krows, pts = [], []
    for n in ("streaming", "h2o", "snapkv", "cake"):
        for keep in ("25", "50"):
            r = runs.get("kld__%s__%s" % (n, keep))
            if not r:
                continue
            eff = r["bytes_per_token"] * r.get("kv_tokens_end", r["ctx"]) / float(r["ctx"])
            krows.append(["%s %s%%" % (n, keep), "%.4f" % r["kld_mean"], "%.1f%%" % r["top1_agree_pct"],
                          "%.3f" % r["ppl_codec"], "%.0f" % eff])
            pts.append({"label": "kvlite f16 + %s %s%%" % (n, keep), "engine": "kvlite", "kv": "f16+%s%s" % (n, keep),
                        "ref_kv": "f32", "bytes_per_token": eff, "kld_mean": r["kld_mean"], "kld_max": r["kld_max"],
                        "top1_agree_pct": r["top1_agree_pct"], "ppl": r["ppl_codec"], "ppl_ref": r["ppl_f32"],
                        "dataset": "wikitext-2/test.txt", "ctx": r["ctx"], "windows": r["windows"]})
    if krows:
        A.append("KL divergence against the f32 full cache, wikitext-2 test, %d windows of %d tokens (chunks of %d: "
                 "the policy evicts as the window streams through); bytes/token = KV bytes held at the end / tokens "
                 "seen (full f16 cache: %s):" % (krows and runs[[k for k in runs if k.startswith("kld__") and k != "kld__full"][0]]["windows"],
                                                     1024, 256, "KLD %.4f" % kf["kld_mean"] if kf else "not run here; f16 KV alone is 3.7e-3 at ctx 256 on valid, README"))
        A.append("")
        A += table(["policy, keep", "KLD", "top-1 agree", "ppl", "bytes/token"], krows)
        A.append("")
        json.dump({"kind": "kv-point", "label": "eviction policies (f16)", "points": pts},
                  open(os.path.join(os.path.dirname(a.out), "kvpoint_policies.json"), "w"), indent=1)
    open(a.out, "w").write("\n".join(A) + "\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
