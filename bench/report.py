#!/usr/bin/env python3
"""Regenerate docs/RESULTS.md and docs/img/*.png from bench/results/*.json.

Reads every JSON file in the results folder and sorts them by kind:
  kind "peer"      written by bench/bench.py; the newest complete non-quick one
                   is reported (else the newest one; --peer FILE picks one)
  kind "kv-point"  extra points for the quality-vs-bytes (Pareto) chart and
                   table, e.g. from later KV techniques (schema in bench/README.md)
  retrieval        files baseline_retrieval_*.json, or any object with a "task"
                   key (the JSON of `kvlite eval needle|passkey|multikey --json`),
                   possibly a list of them
Uses only the stdlib and matplotlib (Agg).
"""
import argparse
import glob
import json
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PAIRS = [  # (kvlite label, llama.cpp label): side-by-side rows
    ("kvlite f16", "llama.cpp f16 FA"),
    ("kvlite f16", "llama.cpp f16 noFA"),
    ("kvlite int8", "llama.cpp q8_0 FA"),
    ("kvlite int8", "llama.cpp q4_0 FA"),
]
ORDER = ["kvlite f32", "kvlite f16", "kvlite int8", "llama.cpp f16 noFA", "llama.cpp f16 FA", "llama.cpp q8_0 FA",
         "llama.cpp q4_0 FA"]
STYLE = {  # label -> (color, linestyle, marker)
    "kvlite f32": ("#1f77b4", "-", "o"),
    "kvlite f16": ("#2ca02c", "-", "o"),
    "kvlite int8": ("#d62728", "-", "o"),
    "llama.cpp f16 noFA": ("#7f7f7f", "--", "s"),
    "llama.cpp f16 FA": ("#2ca02c", "--", "s"),
    "llama.cpp q8_0 FA": ("#d62728", "--", "s"),
    "llama.cpp q4_0 FA": ("#9467bd", "--", "s"),
}


def load_results(d):
    peers, points, retr = [], [], []
    for p in sorted(glob.glob(os.path.join(d, "*.json"))):
        name = os.path.basename(p)
        if name == "latest.json":
            continue
        try:
            with open(p) as f:
                obj = json.load(f)
        except (OSError, ValueError) as e:
            print("report: skipping %s: %s" % (p, e), file=sys.stderr)
            continue
        objs = obj if isinstance(obj, list) else (obj.get("results") if isinstance(obj, dict) and
                                                   isinstance(obj.get("results"), list) else [obj])
        for o in objs:
            if not isinstance(o, dict):
                continue
            o.setdefault("_file", name)
            if o.get("kind") == "peer":
                peers.append(o)
            elif o.get("kind") == "kv-point":
                for pt in o.get("points", []):
                    pt = dict(pt)
                    pt.setdefault("_file", name)
                    pt.setdefault("source", o.get("label") or name)
                    points.append(pt)
            elif ("task" in o or name.startswith("baseline_retrieval_")) and not o.get("quick"):
                retr.append(o)  # --quick retrieval results are development runs, not reported
    return peers, points, retr


def pick_peer(peers, explicit=None):
    if explicit:
        for p in peers:
            if p["_file"] == os.path.basename(explicit):
                return p
        sys.exit("report: %s not found among peer results" % explicit)
    good = [p for p in peers if p.get("complete") and not p.get("quick") and p.get("speed")]
    pool = good or peers
    return max(pool, key=lambda p: (p.get("started", ""), p["_file"])) if pool else None


# ---------------------------------------------------------------------------
# formatting helpers


def f_num(x, nd=1):
    if x is None:
        return "–"
    return "%.*f" % (nd, x)


def f_ratio(a, b):
    if not a or not b:
        return "–"
    r = a / b
    s = "%.2f×" % r
    return "**%s**" % s if r < 1 else s


def f_mib(b):
    return "–" if b is None else "%.0f" % (b / 2**20)


def f_sci(x):
    if x is None:
        return "–"
    if x == 0:
        return "0"
    return "%.2e" % x


def table(header, rows, align=None):
    out = ["| " + " | ".join(header) + " |"]
    al = align or (["l"] + ["r"] * (len(header) - 1))
    out.append("|" + "|".join(":--" if a == "l" else "--:" for a in al) + "|")
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


# ---------------------------------------------------------------------------
# plots


def plots(peer, points, retr, imgdir):
    try:
        import matplotlib
    except ImportError:
        print("report: matplotlib not installed, no plots (bench/run.sh installs it in the bench venv)",
              file=sys.stderr)
        return {}
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(imgdir, exist_ok=True)
    made = {}
    speed = [e for e in peer.get("speed", []) if e.get("runs")] if peer else []
    machine = peer["machine"]["cpu_model"] + ", %d threads" % peer.get("threads", 0) if peer else ""
    for metric, fname, title in (("decode_tok_s", "decode_vs_ctx.png", "Decode throughput vs context"),
                                 ("prefill_tok_s", "prefill_vs_ctx.png", "Prefill throughput vs context")):
        if not speed:
            break
        fig, ax = plt.subplots(figsize=(8, 5))
        labels = [l for l in ORDER if any(e["label"] == l for e in speed)]
        labels += sorted({e["label"] for e in speed} - set(labels))
        for lab in labels:
            es = sorted((e for e in speed if e["label"] == lab), key=lambda e: e["ctx"])
            xs = [e["ctx"] for e in es]
            ys = [e[metric] for e in es]
            lo = [e[metric] - e.get(metric + "_min", e[metric]) for e in es]
            hi = [e.get(metric + "_max", e[metric]) - e[metric] for e in es]
            c, ls, mk = STYLE.get(lab, (None, "-", "o"))
            ax.errorbar(xs, ys, yerr=[lo, hi], label=lab, color=c, linestyle=ls, marker=mk, capsize=3,
                        markerfacecolor="white" if lab.startswith("llama") else c)
        ax.set_xscale("log", base=2)
        ctxs = sorted({e["ctx"] for e in speed})
        ax.set_xticks(ctxs)
        ax.set_xticklabels([str(c) for c in ctxs])
        ax.set_xlabel("context (prompt tokens before the measurement)")
        ax.set_ylabel("tokens / s (median; bars: min–max)")
        ax.set_ylim(bottom=0)
        ax.set_title("%s\n%s" % (title, machine), fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        fig.savefig(os.path.join(imgdir, fname), dpi=110)
        plt.close(fig)
        made[metric] = fname

    # Pareto: quality vs KV bytes/token.
    pts = quality_points(peer, points)
    rpts = [r for r in retr if r.get("bytes_per_token") and r.get("score") is not None]
    if pts or rpts:
        n = 2 + (1 if rpts else 0)
        fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.8))
        ax = axes[0]
        kpos = [p["kld_mean"] for p in pts if p.get("kld_mean")]
        floor = min(kpos) / 10 if kpos else 1e-6
        for p in pts:
            eng = p.get("engine", "")
            c = "#1f77b4" if eng == "kvlite" else ("#ff7f0e" if eng == "llama.cpp" else "#2ca02c")
            mk = "o" if eng == "kvlite" else ("s" if eng == "llama.cpp" else "^")
            k = p.get("kld_mean")
            if k is None and p.get("is_ref"):
                ax.scatter([p["bytes_per_token"]], [floor], marker=mk, facecolors="none", edgecolors=c, s=60)
                ax.annotate(p["name"] + "\n(reference, KLD 0)", (p["bytes_per_token"], floor), fontsize=7,
                            textcoords="offset points", xytext=(-6, 4), ha="right")
            elif k is not None:
                ax.scatter([p["bytes_per_token"]], [max(k, floor)], marker=mk, color=c, s=50)
                ax.annotate(p["name"], (p["bytes_per_token"], max(k, floor)), fontsize=7, textcoords="offset points",
                            xytext=_off(p))
        allx = [p["bytes_per_token"] for p in pts] + [r["bytes_per_token"] for r in rpts]
        _bytes_axis(ax, allx)
        nofa = [p for p in pts if p["name"].endswith("noFA") and p.get("kld_mean")]
        if nofa:
            ax.axhline(nofa[0]["kld_mean"], color="#7f7f7f", linestyle=":", linewidth=1)
            ax.annotate("noise floor", (0.02, nofa[0]["kld_mean"]),
                        xycoords=("axes fraction", "data"), fontsize=7, color="#555555", textcoords="offset points",
                        xytext=(0, -10), ha="left")
        ax.set_yscale("log")
        ax.set_xlabel("KV bytes per token")
        ax.set_ylabel("mean KLD vs own full-precision cache")
        ax.set_title("KLD vs KV size (lower-left is better)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax = axes[1]
        for p in pts:
            if p.get("ppl") is None or p["name"].endswith("noFA"):
                continue
            eng = p.get("engine", "")
            c = "#1f77b4" if eng == "kvlite" else ("#ff7f0e" if eng == "llama.cpp" else "#2ca02c")
            mk = "o" if eng == "kvlite" else ("s" if eng == "llama.cpp" else "^")
            ax.scatter([p["bytes_per_token"]], [p["ppl"]], marker=mk, color=c, s=50)
            ax.annotate(p["name"], (p["bytes_per_token"], p["ppl"]), fontsize=7, textcoords="offset points",
                        xytext=_off(p))
        ref = peer.get("reference") if peer else None
        if ref:
            ax.axhline(ref["ppl"], color="k", linestyle=":", linewidth=1)
            ax.annotate("transformers fp32 %.3f" % ref["ppl"], (0.02, ref["ppl"]), xycoords=("axes fraction", "data"),
                        fontsize=7, textcoords="offset points", xytext=(0, 3))
        _bytes_axis(ax, allx)
        ax.set_xlabel("KV bytes per token")
        ax.set_ylabel("perplexity (wikitext-2 test, ctx %s)" % (ref["ctx"] if ref else "?"))
        ax.set_title("Perplexity vs KV size", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if rpts:
            ax = axes[2]
            for r in rpts:
                ax.scatter([r["bytes_per_token"]], [100 * r["score"]], color="#2ca02c", s=50)
                ax.annotate("%s %s" % (r.get("task", "?"), r.get("kv", "?")), (r["bytes_per_token"], 100 * r["score"]),
                            fontsize=7, textcoords="offset points", xytext=(5, 4))
            _bytes_axis(ax, allx)
            ax.set_ylim(-5, 105)
            ax.set_xlabel("KV bytes per token")
            ax.set_ylabel("retrieval score (%)")
            ax.set_title("Retrieval vs KV size (kvlite)", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
        from matplotlib.lines import Line2D
        handles = [Line2D([], [], marker="o", color="#1f77b4", linestyle="", label="kvlite"),
                   Line2D([], [], marker="s", color="#ff7f0e", linestyle="", label="llama.cpp")]
        if any(p.get("engine") not in ("kvlite", "llama.cpp") for p in pts):
            handles.append(Line2D([], [], marker="^", color="#2ca02c", linestyle="", label="other"))
        axes[0].legend(handles=handles, fontsize=8, loc="upper right")
        fig.suptitle("Quality vs KV bytes per token (%s)" % (peer["model"]["file"] if peer else ""), fontsize=10)
        fig.tight_layout()
        fig.savefig(os.path.join(imgdir, "pareto.png"), dpi=110)
        plt.close(fig)
        made["pareto"] = "pareto.png"
    return made


def _off(p):
    """Label offset (points): kvlite below the marker, llama.cpp above, others right."""
    e = p.get("engine")
    return (5, -11) if e == "kvlite" else ((5, 5) if e == "llama.cpp" else (6, -3))


def _bytes_axis(ax, xs):
    from matplotlib.ticker import FixedLocator, NullLocator
    ax.set_xscale("log", base=2)
    xs0 = sorted({int(round(x)) for x in xs if x})
    xs = []
    for x in xs0:  # drop ticks too close to the previous one (labels would collide)
        if not xs or x > xs[-1] * 1.25:
            xs.append(x)
    if xs:
        ax.xaxis.set_major_locator(FixedLocator(xs))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(x) for x in xs], rotation=45, fontsize=7)
        ax.set_xlim(min(xs0) / 1.4, max(xs0) * 1.6)


def kvname(x):
    """KV column text of a quality row: its label without the engine ("f16-noFA"), else the kv type."""
    lab = x.get("label") or ""
    return lab[len(x["engine"]) + 1:] if lab.startswith(x["engine"] + " ") else x["kv"]


def quality_points(peer, points):
    pts = []
    for q in (peer or {}).get("quality", []):
        pts.append({"name": q.get("label") or "%s %s" % (q["engine"], q["kv"]), "engine": q["engine"], "kv": q["kv"],
                    "bytes_per_token": q.get("kv_bytes_per_token"), "kld_mean": q.get("kld_mean"),
                    "top1_agree_pct": q.get("top1_agree_pct"), "ppl": q.get("ppl"), "is_ref": q.get("ref_kv") is None,
                    "source": "peer", "windows": q.get("windows"), "ctx": q.get("ctx")})
    for p in points:
        pts.append({"name": p.get("label") or "%s %s" % (p.get("engine", "?"), p.get("kv", "?")),
                    "engine": p.get("engine", "other"), "kv": p.get("kv"), "bytes_per_token": p.get("bytes_per_token"),
                    "kld_mean": p.get("kld_mean"), "top1_agree_pct": p.get("top1_agree_pct"), "ppl": p.get("ppl"),
                    "is_ref": False, "source": p.get("source"), "windows": p.get("windows"), "ctx": p.get("ctx")})
    return [p for p in pts if p.get("bytes_per_token")]


# ---------------------------------------------------------------------------
# markdown


def reps_text(sp):
    """'5 runs' or '5 runs at ctx 128/1024, 3 at ctx 4096/8192'."""
    by = {}
    for (c, _), e in sp.items():
        by.setdefault(e.get("reps", len(e["runs"])), set()).add(c)
    if len(by) == 1:
        return "%d runs" % next(iter(by))
    parts = ["%d at ctx %s" % (n, "/".join(str(c) for c in sorted(cs))) for n, cs in
             sorted(by.items(), key=lambda kv: min(kv[1]))]
    return "its runs: " + ", ".join(parts)


def speed_index(peer):
    return {(e["ctx"], e["label"]): e for e in peer.get("speed", []) if e.get("runs")}


def build_md(peer, points, retr, made, imgrel, peer_file, results_dir=None):
    """peer_file: path of the reported results file, relative to the repo when inside it."""
    L = []
    A = L.append
    A("# kvlite results")
    A("")
    A("Generated by `bench/report.py` from `%s`; do not edit by hand — rerun `bench/run.sh` "
      "(or `bench/report.py` to re-render). Numbers are from one machine and one run; see the notes at the end." % peer_file)
    A("")
    m = peer["machine"]
    v = peer.get("versions", {})
    md = peer.get("model", {})
    A("## Setup")
    A("")
    A("| | |")
    A("|:--|:--|")
    A("| machine | %s, %s cores (%s), %.0f GiB RAM, %s, Linux %s |" % (
        m.get("cpu_model"), m.get("cores"), " ".join(m.get("cpu_flags", [])), (m.get("mem_bytes") or 0) / 2**30,
        m.get("os"), m.get("kernel")))
    A("| date | %s → %s (%.0f min) |" % (peer.get("started"), peer.get("finished", "unfinished"),
                                       (peer.get("duration_s") or 0) / 60))
    A("| command | `%s` |" % peer.get("command"))
    A("| model | `%s` (%s, %s layers, %s KV heads × %s head dim, vocab %s) |" % (
        md.get("file"), md.get("name"), md.get("n_layer"), md.get("n_head_kv"), md.get("head_dim"), md.get("n_vocab")))
    A("| threads | %s for both engines; llama.cpp n_batch 512 (kvlite's default batch is 512 too) |" % peer.get("threads"))
    pbo = peer.get("priority_boost") or {}
    if pbo.get("autogroup_nice") is not None:
        A("| scheduling | every measured process (%s phases, both engines) in its own session / scheduler autogroup "
          "at nice %d, so background jobs on the machine yield to it |" % (
              ", ".join(pbo.get("phases", [])), pbo["autogroup_nice"]))
    A("| kvlite | commit `%s` |" % (v.get("kvlite_commit") or "?"))
    A("| llama.cpp | llama-cpp-python %s (built from source by pip; %s) |" % (
        v.get("llama_cpp_python"), (v.get("llama_cpp_system_info") or "").replace("|", "/")))
    A("")
    tc = peer.get("tokenizer_check", {})
    if tc:
        bits = []
        for k, c in tc.items():
            bits.append("%s: %s (%d tokens%s)" % (k, "identical" if c["identical"] else
                                                 "differ at token %s" % c["first_difference"], c["kvlite_tokens"],
                                                 ", transformers %s" % c["transformers_tokens"]
                                                 if c.get("transformers_tokens") else ""))
        A("Tokenizers (kvlite vs llama.cpp): " + "; ".join(bits) + ". Both engines are fed the same token ids "
          "(kvlite's).")
        A("")

    sp = speed_index(peer)
    if sp:
        ctxs = sorted({c for c, _ in sp})
        labels = [l for l in ORDER if any(l == lab for _, lab in sp)]
        e0 = next(iter(sp.values()))
        e_max = next(e for (c, _), e in sp.items() if c == max(ctxs))
        A("## Speed")
        A("")
        A("Each run is a fresh process: a prompt of *ctx* tokens (BOS + the `kvlite bench` paragraph repeated; at "
          "ctx %d the prompt is %d tokens so that it and the decode fit in n_ctx %d) is prefilled in one call "
          "(batches of 512), then %d tokens are decoded greedily one at a time. Runs alternate between kvlite and "
          "llama.cpp; each cell is the median of %s. FA = llama.cpp flash attention. Ratios are "
          "kvlite / llama.cpp (**bold** where kvlite is slower)." % (
              max(ctxs), e_max["prompt_tokens"], e_max["n_ctx"],
              e0["gen_tokens"], reps_text(sp)))
        A("")
        skipped = sorted({c for c in ctxs for l in labels if (c, l) not in sp})
        if skipped:
            lc = peer.get("args", {}).get("long_configs")
            A("A dash: not measured at that context (%s)." % (
                "at contexts >= %s only %s run (`--long-configs`), since one llama.cpp run with a q4_0 cache or "
                "without flash attention takes minutes there" % (peer["args"].get("long_ctx"), ", ".join(lc))
                if lc else "not in this run's configurations"))
            A("")
        allw = sorted(r.get("runq_wait_frac", r["contention"]) for e in sp.values() for r in e["runs"])
        thr = peer.get("args", {}).get("quiet_threshold", 0.1)
        if allw and allw[len(allw) // 2] > thr:
            A("> **Warning: the speed runs were disturbed by other work on this machine** (their threads waited "
              "for a CPU a median %.0f%% of the time, see the notes). Under contention llama.cpp's spinning thread "
              "barriers lose far more than kvlite, so these ratios overstate kvlite's advantage; rerun "
              "`bench/run.sh` on a quieter machine before quoting them." % (100 * allw[len(allw) // 2]))
            A("")
        A("### kvlite vs llama.cpp")
        A("")
        rows = []
        for c in ctxs:
            for kl, ll in PAIRS:
                a, b = sp.get((c, kl)), sp.get((c, ll))
                if not a or not b:
                    continue
                rows.append([c, "%s vs %s" % (kl, ll), f_num(a["prefill_tok_s"]), f_num(b["prefill_tok_s"]),
                             f_ratio(a["prefill_tok_s"], b["prefill_tok_s"]), f_num(a["decode_tok_s"]),
                             f_num(b["decode_tok_s"]), f_ratio(a["decode_tok_s"], b["decode_tok_s"])])
        A(table(["ctx", "configs", "prefill kvlite", "prefill llama.cpp", "ratio", "decode kvlite", "decode llama.cpp",
                 "ratio"], rows, ["r", "l", "r", "r", "r", "r", "r", "r"]))
        A("")
        for metric, name in (("prefill_tok_s", "Prefill tokens/s"), ("decode_tok_s", "Decode tokens/s")):
            A("### %s (median, [min–max])" % name)
            A("")
            rows = []
            for c in ctxs:
                r = [c]
                for l in labels:
                    e = sp.get((c, l))
                    r.append("%s [%s–%s]" % (f_num(e[metric]), f_num(e[metric + "_min"], 0), f_num(e[metric + "_max"], 0))
                             if e else "–")
                rows.append(r)
            A(table(["ctx"] + labels, rows))
            A("")
        if made.get("decode_tok_s") or made.get("prefill_tok_s"):
            for k in ("decode_tok_s", "prefill_tok_s"):
                if made.get(k):
                    A("![%s](%s/%s)" % (k, imgrel, made[k]))
            A("")
        A("### Peak resident memory (MiB, max over runs)")
        A("")
        A("ru_maxrss of each run's process. llama.cpp runs inside Python: its numbers include the interpreter, "
          "numpy and llama_cpp (the *import* row is the RSS after `import llama_cpp`, before the model loads).")
        A("")
        rows = []
        for c in ctxs:
            rows.append([c] + [f_mib(sp[(c, l)]["peak_rss_bytes"]) if (c, l) in sp else "–" for l in labels])
        imp = [f_mib(sp[(ctxs[0], l)].get("rss_after_import_bytes")) if l.startswith("llama") and (ctxs[0], l) in sp
               else "–" for l in labels]
        rows.append(["import"] + imp)
        A(table(["ctx"] + labels, rows))
        A("")
        A("### KV cache bytes per token")
        A("")
        A("kvlite: reported by `kvlite bench --json` (codec bytes per token, K+V, all layers and heads). llama.cpp: "
          "n_layer × n_kv_head × head_dim × 2 × bytes per element (f16 2, q8_0 34/32, q4_0 18/32).")
        A("")
        rows = []
        seen = set()
        for l in labels:
            e = next((sp[(c, l)] for c in ctxs if (c, l) in sp), None)
            if not e or e["kv"] + e["engine"] in seen and e["engine"] == "llama.cpp":
                continue
            seen.add(e["kv"] + e["engine"])
            bpt = e.get("kv_bytes_per_token")
            em = sp.get((max(ctxs), l))
            rows.append([e["engine"], e["kv"], f_num(bpt, 0), "%.2f" % (bpt / (md.get("n_layer", 1) * md.get(
                "n_head_kv", 1) * md.get("head_dim", 1) * 2)) if bpt else "–",
                         "%.1f" % (em["kv_bytes_peak"] / 2**20) if em and em.get("kv_bytes_peak") else "–"])
        A(table(["engine", "KV", "bytes/token", "bytes/element", "KV MiB at ctx %d (peak)" % max(ctxs)], rows,
                ["l", "l", "r", "r", "r"]))
        A("")

    q = peer.get("quality", [])
    ref = peer.get("reference")
    kpts = [p for p in points if p.get("kld_mean") is not None]
    if q:
        ctx, W = q[0]["ctx"], q[0]["windows"]
        A("## Quality")
        A("")
        A("wikitext-2 `test.txt`, tokenized without BOS, non-overlapping windows of %d tokens "
          "(`tokens[w*%d:(w+1)*%d]`), first %d windows, each scored on positions 1..%d (%d tokens); "
          "the same method and windows as the transformers reference in `tests/data/ref_ppl.json`. "
          "llama.cpp gets kvlite's token ids, flash attention on." % (ctx, ctx, ctx, W, ctx - 1, q[0]["tokens_scored"]))
        A("")
        rows = []
        if ref:
            rows.append(["transformers (fp32, eager)", "fp32", "–", "%.4f" % ref["ppl"], "–"])
        for x in q:
            d = "%+.2f%%" % (100 * (x["ppl"] / ref["ppl"] - 1)) if ref else "–"
            rows.append([x["engine"], kvname(x), f_num(x.get("kv_bytes_per_token"), 0), "%.4f" % x["ppl"], d])
        A(table(["engine", "KV cache", "bytes/token", "perplexity", "vs transformers"], rows,
                ["l", "l", "r", "r", "r"]))
        A("")
        A("The GGUF weights are Q4_1, so both engines differ from the fp32 transformers model by weight "
          "quantization; the KV cache adds its own error on top.")
        A("")
    if q or kpts:
        if not q:
            A("## Quality")
            A("")
        A("### KL divergence vs each engine's own full-precision cache")
        A("")
        A("Mean over all scored positions of KL(P_ref || P_kv) of the next-token distributions, and how often the "
          "arg-max token agrees. kvlite's reference is its f32 cache (`kvlite eval kld`); llama.cpp's is its f16 cache "
          "(all-position logits with `logits_all=True`, KL in float64 with numpy).")
        A("")
        nf = [x for x in q if (x.get("label") or "").endswith("noFA") and x.get("kld_mean") is not None]
        if nf:
            A("The `f16-noFA` row is llama.cpp's f16 cache without flash attention against the same cache with it: "
              "nothing is quantized differently, only the order of floating-point operations changes, so its KLD "
              "(%.2e) is the noise floor of this model — any perturbation of the attention output (rounding order, "
              "an f16 vs f32 cache) moves the next-token distributions by about this much, and differences between "
              "KV codecs below it are not meaningful." % nf[0]["kld_mean"])
            A("")
        rows = []
        for x in q:
            if x.get("ref_kv") is None:
                continue
            rows.append([x["engine"], kvname(x), x["ref_kv"], f_num(x.get("kv_bytes_per_token"), 0), f_sci(x["kld_mean"]),
                         f_sci(x.get("kld_max")), "%.2f%%" % x["top1_agree_pct"], "%.4f" % x["ppl"],
                         "%.4f" % x["ppl_ref"]])
        extra = [p for p in points if p.get("kld_mean") is not None]
        for p in extra:
            lab = p.get("label") or p.get("kv") or "?"
            if lab.startswith(p.get("engine", "?") + " "):
                lab = lab[len(p.get("engine", "?")) + 1:]
            rows.append([p.get("engine", "?"), "%s (`%s`)" % (lab, p.get("_file", "?")), p.get("ref_kv", "?"),
                         f_num(p.get("bytes_per_token"), 0), f_sci(p["kld_mean"]), f_sci(p.get("kld_max")),
                         "%.2f%%" % p["top1_agree_pct"] if p.get("top1_agree_pct") is not None else "–",
                         "%.4f" % p["ppl"] if p.get("ppl") else "–", "%.4f" % p["ppl_ref"] if p.get("ppl_ref") else "–"])
        A(table(["engine", "KV", "reference", "bytes/token", "mean KLD", "max KLD", "top-1 agree", "ppl", "ppl (ref)"],
                rows, ["l", "l", "l", "r", "r", "r", "r", "r", "r"]))
        A("")
        if made.get("pareto"):
            A("![quality vs KV bytes per token](%s/%s)" % (imgrel, made["pareto"]))
            A("")
            A("Later KV techniques add points to this chart by writing `bench/results/*.json` files of kind "
              "`kv-point` (see `bench/README.md`).")
            A("")

    b = peer.get("baseline_ppl", [])
    if b:
        A("## Baseline perplexity (kvlite, f16 KV cache)")
        A("")
        A("Full f16 cache, non-overlapping windows from the start of each file (tokenized without BOS), each window "
          "a fresh sequence scored on positions 1..ctx-1. Later KV techniques compare against these on the same "
          "windows (`kvlite eval ppl --ctx C --max-windows W`).")
        A("")
        rows = [[x["dataset"], x["ctx"], x["windows"], x["tokens_scored"], "%.4f" % x["ppl"], "%.0f" % x["seconds"]]
                for x in b]
        A(table(["dataset", "ctx", "windows", "tokens scored", "perplexity", "seconds"], rows,
                ["l", "r", "r", "r", "r", "r"]))
        A("")

    A("## Retrieval")
    A("")
    if retr:
        A("`kvlite eval needle|passkey|multikey` (greedy answers, exact match; grid of prompt lengths × needle depths "
          "0..100% × seeds; question through the chat template). Baselines use the full f16 cache: the 100% that "
          "compressed caches are compared to. *wrong key*: multikey answers that hold another key's value.")
        A("")
        rows = []
        for r in sorted(retr, key=lambda r: (r.get("task", ""), -(r.get("bytes_per_token") or 0))):
            bl = r.get("by_length") or {}
            bls = ", ".join("%s: %.0f%%" % (k, 100 * v) for k, v in sorted(bl.items(), key=lambda kv: int(kv[0])))
            rows.append([r.get("task", "?"), r.get("kv", "?"), f_num(r.get("bytes_per_token"), 0),
                         "%.1f%%" % (100 * r["score"]) if r.get("score") is not None else "–",
                         "%s/%s" % (r.get("correct", "?"), r.get("cells_total", "?")),
                         str(sum(1 for c in r.get("cells", []) if c.get("distractor"))) if r.get("task") == "multikey"
                         else "–",
                         bls or "–", "%s × %s" % (len(r.get("depths") or []) or "?", r.get("seeds", "?")),
                         "%.1f" % (r["kv_bytes_peak"] / 2**20) if r.get("kv_bytes_peak") else "–",
                         "%.0f" % r["seconds"] if r.get("seconds") is not None else "–",
                         "`%s`" % r["_file"]])
        A(table(["task", "KV", "bytes/token", "score", "cells", "wrong key", "score by prompt length (tokens)",
                 "depths × seeds", "KV MiB peak", "seconds", "file"], rows,
                ["l", "l", "r", "r", "r", "r", "l", "r", "r", "r", "l"]))
        A("")
        cmds = [(r.get("task"), r.get("command"), r.get("date")) for r in retr if r.get("command")]
        if cmds:
            A("Commands: " + "; ".join("`%s` (%s)" % (c, d) for _, c, d in sorted(cmds)) + ".")
            A("")
        for r in sorted(retr, key=lambda r: r.get("task", "")):
            plot = r.get("plot")
            if plot and os.path.exists(os.path.join(ROOT, plot)):
                rel = os.path.relpath(os.path.join(ROOT, plot), os.path.join(ROOT, "docs"))
                A("![%s heat map, %s KV (depth × length)](%s)" % (r.get("task"), r.get("kv"), rel))
                A("")
    else:
        A("No retrieval results yet (`bench/results/baseline_retrieval_*.json`).")
        A("")

    extra = sorted(glob.glob(os.path.join(results_dir or os.path.join(ROOT, "bench", "results"), "*.md")))
    if extra:
        A("## Recorded outside bench/run.sh")
        A("")
        A("Kept verbatim from `bench/results/*.md`: measurements made by tests or one-off commands named in each.")
        A("")
        for p in extra:
            with open(p) as f:
                A(f.read().rstrip("\n"))
            A("")

    A("## Notes")
    A("")
    for n in notes(peer):
        A("- " + n)
    A("")
    return "\n".join(L)


def notes(peer):
    out = []
    sp = speed_index(peer)
    slow, fast = [], []
    # kvlite f16 against llama.cpp's faster f16 config (FA or not) per metric; int8 against q8_0.
    for kl, lls in (("kvlite f16", ("llama.cpp f16 FA", "llama.cpp f16 noFA")), ("kvlite int8", ("llama.cpp q8_0 FA",))):
        for c in sorted({c for c, _ in sp}):
            a = sp.get((c, kl))
            bs = [sp[(c, l)] for l in lls if (c, l) in sp]
            if not a or not bs:
                continue
            for m, name in (("prefill_tok_s", "prefill"), ("decode_tok_s", "decode")):
                b = max(bs, key=lambda e: e[m])
                r = a[m] / b[m] if b[m] else 0
                (slow if r < 1 else fast).append((r, "%s %s at ctx %d: %.2f× %s (%.1f vs %.1f tok/s)" % (
                    kl, name, c, r, b["label"], a[m], b[m])))
    if slow:
        out.append("Where llama.cpp is faster (kvlite f16 vs the faster of llama.cpp f16 with and without flash attention; int8 vs q8_0): " + "; ".join(s for _, s in sorted(slow)) + ".")
    if fast:
        out.append("Where kvlite is faster: " + "; ".join(s for _, s in sorted(fast, reverse=True)) + ".")
    thr = peer.get("args", {}).get("quiet_threshold", 0.1)
    runs = [r for e in sp.values() for r in e["runs"]]
    if runs:
        w = sorted(r.get("runq_wait_frac", 0) for r in runs)
        c = sorted(r["contention"] for r in runs)
        boost = peer.get("speed_priority_boost")
        out.append("Disturbance: %sother processes used a median %.0f%% (max %.0f%%) of the machine's CPU while a "
                   "speed run was measured; the runs' own threads sat runnable but waiting for a CPU a median %.1f%% "
                   "(max %.1f%%) of the time (`/proc/PID/task/*/schedstat`); %d runs above %.0f%% were redone." % (
                       "each measured process ran in its own scheduler autogroup at nice %d (`--priority-boost`), so "
                       "background jobs yield to it; " % boost if boost is not None else "",
                       100 * c[len(c) // 2], 100 * c[-1], 100 * w[len(w) // 2], 100 * w[-1],
                       sum(len(e.get("discarded_runs", [])) for e in sp.values()), 100 * thr))
        bad = [e for e in sp.values() if e.get("runq_wait_median", 0) > thr]
        if bad:
            out.append("Disturbed configs (median run-queue wait above %.0f%%; llama.cpp's spinning barriers suffer "
                       "most when a core is taken away): " % (100 * thr) +
                       ", ".join("%s ctx %d (%.0f%%)" % (e["label"], e["ctx"], 100 * e["runq_wait_median"])
                                 for e in sorted(bad, key=lambda e: (e["ctx"], e["label"]))) + ".")
    q = peer.get("quality", [])
    ref = peer.get("reference")
    if q and ref:
        for x in q:
            if x.get("ref_kv") is None:
                out.append("%s %s perplexity is %+.2f%% from transformers' %.4f on the same %d windows." % (
                    x["engine"], x["kv"], 100 * (x["ppl"] / ref["ppl"] - 1), ref["ppl"], ref["windows"]))
    for n in peer.get("notes", []):
        out.append(n)
    if not peer.get("complete"):
        out.append("This run did not finish (partial results).")
    if peer.get("quick"):
        out.append("This is a --quick run (fewer contexts, repetitions and windows).")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results-dir", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "RESULTS.md"))
    ap.add_argument("--img-dir", default=os.path.join(ROOT, "docs", "img"))
    ap.add_argument("--peer", default=None, help="report this peer result file instead of the newest")
    a = ap.parse_args()
    peers, points, retr = load_results(a.results_dir)
    peer = pick_peer(peers, a.peer)
    if not peer:
        sys.exit("report: no peer results in %s (run bench/run.sh)" % a.results_dir)
    made = plots(peer, points, retr, a.img_dir)
    imgrel = os.path.relpath(a.img_dir, os.path.dirname(os.path.abspath(a.out)))
    pf = os.path.join(os.path.abspath(a.results_dir), peer["_file"])
    if pf.startswith(ROOT + os.sep):
        pf = os.path.relpath(pf, ROOT)
    md = build_md(peer, points, retr, made, imgrel, pf, a.results_dir)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(md)
    print("report: wrote %s (%s) and %s" % (a.out, peer["_file"], ", ".join(made.values()) or "no plots"),
          file=sys.stderr)


if __name__ == "__main__":
    main()
