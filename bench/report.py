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
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# kvlite config -> the llama.cpp KV type it is compared with (same bytes per element or close).
PEER_KV = [("kvlite f16", "f16"), ("kvlite int8", "q8_0")]
ORDER = ["kvlite f32", "kvlite f16", "kvlite int8",
         "llama.cpp f16 FA", "llama.cpp f16 noFA", "llama.cpp native f16 FA", "llama.cpp native f16 noFA",
         "llama.cpp q8_0 FA", "llama.cpp native q8_0 FA", "llama.cpp q4_0 FA"]
STYLE = {  # label -> (color, linestyle, marker)
    "kvlite f32": ("#1f77b4", "-", "o"),
    "kvlite f16": ("#2ca02c", "-", "o"),
    "kvlite int8": ("#d62728", "-", "o"),
    "llama.cpp f16 noFA": ("#7f7f7f", "--", "s"),
    "llama.cpp f16 FA": ("#2ca02c", "--", "s"),
    "llama.cpp q8_0 FA": ("#d62728", "--", "s"),
    "llama.cpp q4_0 FA": ("#9467bd", "--", "s"),
    "llama.cpp native f16 noFA": ("#000000", ":", "^"),
    "llama.cpp native f16 FA": ("#17becf", ":", "^"),
    "llama.cpp native q8_0 FA": ("#ff7f0e", ":", "^"),
}


def is_llama(e):
    return e.get("engine") == "llama.cpp"


def build_of(e):
    """'wheel' (llama-cpp-python, driven from Python) or 'native' (llama-bench); older files: wheel."""
    return e.get("build") or ("native" if " native " in e.get("label", "") else "wheel")


def short(e):
    """'wheel f16 noFA', 'native q8_0 FA'; kvlite entries: 'kvlite f16'."""
    if not is_llama(e):
        return e["label"]
    return "%s %s %s" % (build_of(e), e["kv"], "FA" if e.get("flash_attn") else "noFA")


def disp(e):
    """Column / legend name: 'llama.cpp wheel f16 FA', 'llama.cpp native f16 noFA', 'kvlite int8'."""
    return "llama.cpp " + short(e) if is_llama(e) else e["label"]


def peers_at(sp, c, kv=None):
    """llama.cpp entries measured at context c (with KV type kv, or any)."""
    return [e for (cc, _), e in sorted(sp.items(), key=lambda x: ORDER.index(x[0][1]) if x[0][1] in ORDER else 99)
            if cc == c and is_llama(e) and (kv is None or e["kv"] == kv)]


def best_of(es, metric):
    """The entry with the highest median of metric (None if es is empty)."""
    es = [e for e in es if e.get(metric)]
    return max(es, key=lambda e: e[metric]) if es else None


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


def pick_source(peers, peer, key):
    """peer itself if it holds `key` results (quality, baseline_ppl), else the newest complete non-quick peer run
    that does: quality does not depend on flash attention or on the build, so a speed-only run reuses them."""
    if peer.get(key):
        return peer
    good = [p for p in peers if p.get("complete") and not p.get("quick") and p.get(key)]
    return max(good, key=lambda p: (p.get("started", ""), p["_file"])) if good else peer


def reused_md(src, peer, what, A, why=None):
    if src is not peer:
        m0, m1 = src.get("machine", {}), peer.get("machine", {})
        other = "" if m0.get("cpu_model") == m1.get("cpu_model") else " on another machine (%s, %s cores)" % (
            m0.get("cpu_model"), m0.get("cores"))
        A("> Reused: these %s numbers come from the earlier run `bench/results/%s` (%s%s, command `%s`, kvlite "
          "commit `%s`), not from the speed run above: %s." % (
              what, src["_file"], (src.get("started") or "?")[:10], other, src.get("command"),
              (src.get("versions", {}).get("kvlite_commit") or "?")[:10],
              why or "they do not depend on the CPU beyond floating-point rounding"))
        A("")


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


def plots(peer, points, retr, imgdir, qsrc=None):
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
            ax.errorbar(xs, ys, yerr=[lo, hi], label=disp(es[0]), color=c, linestyle=ls, marker=mk, capsize=3,
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
    qsrc = qsrc or peer
    pts = quality_points(qsrc, points)
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
        ref = qsrc.get("reference") if qsrc else None
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
        fig.suptitle("Quality vs KV bytes per token (%s)" % (qsrc["model"]["file"] if qsrc else ""), fontsize=10)
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
        n = next(iter(by))
        return "%d run%s" % (n, "" if n == 1 else "s")
    parts = ["%d at ctx %s" % (n, "/".join(str(c) for c in sorted(cs))) for n, cs in
             sorted(by.items(), key=lambda kv: min(kv[1]))]
    return "its runs: " + ", ".join(parts)


def speed_index(peer):
    return {(e["ctx"], e["label"]): e for e in peer.get("speed", []) if e.get("runs")}


def build_md(peer, points, retr, made, imgrel, peer_file, results_dir=None, qsrc=None, bsrc=None):
    """peer_file: path of the reported results file, relative to the repo when inside it. qsrc / bsrc: the peer
    runs whose quality / baseline results are shown (default: peer)."""
    qsrc = qsrc or peer
    bsrc = bsrc or peer
    L = []
    A = L.append
    A("# kvlite results")
    A("")
    A("Generated by `bench/report.py` from `%s`; do not edit by hand — rerun `bench/run.sh` "
      "(or `bench/report.py` to re-render). Numbers are from one machine and one run%s; see the notes at the end." % (
          peer_file, "" if qsrc is peer and bsrc is peer else
          " (quality and baseline perplexity reused from an earlier run where marked)"))
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
    A("| llama.cpp (wheel) | llama-cpp-python %s (built from source by pip; %s) |" % (
        v.get("llama_cpp_python"), (v.get("llama_cpp_system_info") or "").replace("|", "/")))
    lb = v.get("llama_bench")
    if lb:
        A("| llama.cpp (native) | `llama-bench` build %s (commit `%s`) from `bench/build_llama_native.sh`: the same "
          "vendored source, cmake `-DGGML_NATIVE=ON`; %s |" % (
              lb.get("build_number"), lb.get("build_commit"),
              (lb.get("system_info") or lb.get("cpu_info") or "").replace("|", "/")))
    ll = sorted({e["label"] for e in peer.get("speed", []) if e.get("runs")},
                key=lambda l: ORDER.index(l) if l in ORDER else 99)
    if ll:
        A("| measured in this run | %s |" % ", ".join(
            disp(next(e for e in peer["speed"] if e["label"] == l)) for l in ll))
    A("")
    tc = dict(qsrc.get("tokenizer_check", {}))
    tc.update(peer.get("tokenizer_check", {}))
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
        heads = [disp(next(e for (_, lab), e in sp.items() if lab == l)) for l in labels]
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
        builds_md(peer, sp, A)
        skipped = sorted({c for c in ctxs for l in labels if (c, l) not in sp})
        if skipped:
            lc = peer.get("args", {}).get("long_configs")
            left = [l for l in labels if any((c, l) not in sp for c in ctxs)]
            A("A dash: not measured at that context (%s)." % (
                "at contexts >= %s only `--long-configs` run; %s %s left out there, since one such run takes "
                "minutes at long contexts" % (peer["args"].get("long_ctx"), ", ".join(left),
                                               "is" if len(left) == 1 else "are")
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
        headline_md(sp, ctxs, A)
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
            A(table(["ctx"] + heads, rows))
            A("")
        if made.get("decode_tok_s") or made.get("prefill_tok_s"):
            for k in ("decode_tok_s", "prefill_tok_s"):
                if made.get(k):
                    A("![%s](%s/%s)" % (k, imgrel, made[k]))
            A("")
        A("### Peak resident memory (MiB, max over runs)")
        A("")
        A("ru_maxrss of each run's process. The llama.cpp wheel runs inside Python: its numbers include the "
          "interpreter, numpy and llama_cpp (the *import* row is the RSS after `import llama_cpp`, before the model "
          "loads); native llama-bench is a plain C++ process.")
        A("")
        rows = []
        for c in ctxs:
            rows.append([c] + [f_mib(sp[(c, l)]["peak_rss_bytes"]) if (c, l) in sp else "–" for l in labels])
        imp = [f_mib(sp[(ctxs[0], l)].get("rss_after_import_bytes")) if l.startswith("llama") and (ctxs[0], l) in sp
               else "–" for l in labels]
        rows.append(["import"] + imp)
        A(table(["ctx"] + heads, rows))
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

    q = qsrc.get("quality", [])
    ref = qsrc.get("reference")
    kpts = [p for p in points if p.get("kld_mean") is not None]
    if q:
        ctx, W = q[0]["ctx"], q[0]["windows"]
        A("## Quality")
        A("")
        reused_md(qsrc, peer, "perplexity and KLD", A,
                  "perplexity and KLD do not depend on the llama.cpp build or the CPU beyond floating-point "
                  "rounding, and the f16-noFA row measures what flash attention changes")
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

    b = bsrc.get("baseline_ppl", [])
    if b:
        A("## Baseline perplexity (kvlite, f16 KV cache)")
        A("")
        reused_md(bsrc, peer, "baseline perplexity", A)
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
    for n in notes(peer, qsrc):
        A("- " + n)
    A("")
    return "\n".join(L)


def builds_md(peer, sp, A):
    """What the llama.cpp builds are and how each is timed."""
    v = peer.get("versions", {})
    lb = v.get("llama_bench")
    builds = {build_of(e) for e in sp.values() if is_llama(e)}
    if "native" not in builds:
        return
    stamp = (lb or {}).get("stamp") or ""
    commit = re.search(r"llama.cpp commit: (\w+)", stamp)
    A("llama.cpp runs as two builds of the same source, the `vendor/llama.cpp` of the pinned llama-cpp-python %s "
      "sdist (llama.cpp commit `%s`, build %s):" % (
          v.get("llama_cpp_python"), (commit.group(1)[:10] if commit else (lb or {}).get("build_commit") or "?"),
          (lb or {}).get("build_number", "?")))
    A("")
    A("- **wheel** (`llama.cpp wheel …`; its results-file labels have no *wheel*): llama-cpp-python compiled by pip on this machine (llama.cpp's "
      "CMake default `GGML_NATIVE=ON` applies there too), driven from Python: prefill = one `Llama.eval(prompt)` "
      "call, decode = %d `eval([token])` calls with a numpy arg-max over the logits in between." % (
          next(iter(sp.values()))["gen_tokens"]))
    A("- **native** (`llama.cpp native …`): `llama-bench` built by `bench/build_llama_native.sh` "
      "(cmake `-DGGML_NATIVE=ON`, Release; %s), one process per run: `llama-bench -m MODEL -t %s -b 512 -ub 512 "
      "-p 0 -n %d -d P -fa 0|1 -ctk T -ctv T -r 1 --no-warmup -o json -v`. Decode = its `tg%d @ dP` result; "
      "prefill = llama.cpp's own perf counter (`llama_perf_context_print`, *prompt eval time … / P tokens*) for "
      "that test's untimed depth run, which prefills the P-token context from an empty cache in batches of 512 — "
      "the same work as the other engines' prefill (its token ids are random; speed does not depend on them)." % (
          (lb or {}).get("system_info", "").replace("|", "/") or (lb or {}).get("cpu_info") or "?",
          peer.get("threads"), next(iter(sp.values()))["gen_tokens"], next(iter(sp.values()))["gen_tokens"]))
    A("- llama.cpp's quantized V cache needs flash attention (`V cache quantization requires flash_attn`), so its "
      "q8_0 and q4_0 configurations run with FA only; only the f16 cache can be measured both ways.")
    A("")


def headline_md(sp, ctxs, A):
    """kvlite vs llama.cpp's best configuration per context and metric, then the f16 FA on/off table."""
    A("### kvlite vs llama.cpp's best configuration")
    A("")
    A("For each context and each metric separately, kvlite is compared with the fastest llama.cpp configuration "
      "measured there with the same cache precision (f16: wheel and native, flash attention on and off; kvlite int8 "
      "vs llama.cpp q8_0, 8.5 bits, FA only), and in the *best vs best* row kvlite's faster cache vs llama.cpp's "
      "fastest configuration of any cache type. Picking the best per metric favours llama.cpp: no single llama.cpp "
      "configuration need reach both its best prefill and its best decode.")
    A("")
    rows = []
    marks = {}
    for c in ctxs:
        pairs = [(kl, sp.get((c, kl)), peers_at(sp, c, kv), "%s vs llama.cpp %s" % (kl, kv)) for kl, kv in PEER_KV]
        ks = [sp[(c, kl)] for kl, _ in PEER_KV if (c, kl) in sp]
        pairs.append(("best", ks, peers_at(sp, c), "best vs best (any cache)"))
        for kl, a, bs, name in pairs:
            if not a or not bs:
                continue
            r = [c, name]
            for m in ("prefill_tok_s", "decode_tok_s"):
                ea = best_of(a, m) if isinstance(a, list) else a
                eb = best_of(bs, m)
                who = "" if not isinstance(a, list) else " (%s)" % short(ea)
                mark = ""
                if overlap(ea, eb, m):
                    mark, marks["†"] = " †", True
                elif min(ea.get("reps", 0), eb.get("reps", 0)) < 2:
                    mark, marks["¹"] = " ¹", True
                r += ["%s%s" % (f_num(ea[m]), who), "%s (%s)" % (f_num(eb[m]), short(eb)),
                      f_ratio(ea[m], eb[m]) + mark]
            rows.append(r)
    A(table(["ctx", "comparison", "prefill kvlite", "prefill llama.cpp best", "ratio", "decode kvlite",
             "decode llama.cpp best", "ratio"], rows, ["r", "l", "r", "r", "r", "r", "r", "r"]))
    A("")
    if marks.get("†"):
        A("† the min–max ranges of the two configurations' runs overlap: this run does not resolve the difference "
          "(see the spread in the full tables below).")
        A("")
    if marks.get("¹"):
        A("¹ one run per configuration at this context: no spread to judge the difference by.")
        A("")
    # f16 cache: every llama.cpp configuration, FA on and off, wheel and native.
    f16 = [l for l in ORDER if any(l == lab for (_, lab), e in sp.items() if is_llama(e) and e["kv"] == "f16")]
    if not f16:
        return
    A("### llama.cpp f16 cache: flash attention on and off, wheel and native")
    A("")
    A("Medians (tok/s) of every llama.cpp configuration with an f16 cache, the best of them, and kvlite f16 against "
      "that best and against wheel f16 FA alone (the configuration earlier versions of this page compared with).")
    A("")
    for m, name in (("prefill_tok_s", "prefill"), ("decode_tok_s", "decode")):
        rows = []
        for c in ctxs:
            es = [sp.get((c, l)) for l in f16]
            k = sp.get((c, "kvlite f16"))
            b = best_of([e for e in es if e], m)
            fa = sp.get((c, "llama.cpp f16 FA"))
            rows.append([c] + ["**%s**" % f_num(e[m]) if e is b else f_num(e[m]) if e else "–" for e in es] +
                        ["%s (%s)" % (f_num(b[m]), short(b)) if b else "–", f_num(k[m]) if k else "–",
                         f_ratio(k[m], b[m]) if k and b else "–", f_ratio(k[m], fa[m]) if k and fa else "–"])
        A("%s, tok/s (**bold**: llama.cpp's best at that context):" % name.capitalize())
        A("")
        A(table(["ctx"] + [short(next(e for (_, lab), e in sp.items() if lab == l)) for l in f16] +
                ["llama.cpp best", "kvlite f16", "kvlite / best", "kvlite / wheel FA"], rows))
        A("")
    shrink = lead_changes(sp, ctxs)
    if shrink:
        A("Against the best llama.cpp configuration instead of wheel f16 FA: " + "; ".join(shrink) + ".")
        A("")


def overlap(a, b, m):
    """True if both entries have >= 2 runs and their [min, max] ranges of metric m overlap."""
    if min(a.get("reps", 0), b.get("reps", 0)) < 2:
        return False
    return a.get(m + "_min", a[m]) <= b.get(m + "_max", b[m]) and b.get(m + "_min", b[m]) <= a.get(m + "_max", a[m])


def lead_changes(sp, ctxs):
    """Plain sentences: where comparing with llama.cpp's best f16 config shrinks kvlite f16's lead."""
    out = []
    for c in ctxs:
        k = sp.get((c, "kvlite f16"))
        fa = sp.get((c, "llama.cpp f16 FA"))
        if not k or not fa:
            continue
        for m, name in (("prefill_tok_s", "prefill"), ("decode_tok_s", "decode")):
            b = best_of(peers_at(sp, c, "f16"), m)
            if b is None or b is fa or not b[m]:
                continue
            r0, r1 = k[m] / fa[m], k[m] / b[m]
            verdict = "llama.cpp is faster" if r1 < 1 else "the lead shrinks"
            out.append("ctx %d %s %.2f× → %.2f× (%s; llama.cpp %s %.1f tok/s vs wheel f16 FA %.1f)" % (
                c, name, r0, r1, verdict, short(b), b[m], fa[m]))
    return out


def notes(peer, qsrc=None):
    qsrc = qsrc or peer
    out = []
    sp = speed_index(peer)
    slow, fast = [], []
    # kvlite f16 against llama.cpp's fastest f16 config (wheel/native, FA or not) per metric; int8 against q8_0.
    for kl, kv in PEER_KV:
        for c in sorted({c for c, _ in sp}):
            a = sp.get((c, kl))
            bs = peers_at(sp, c, kv)
            if not a or not bs:
                continue
            for m, name in (("prefill_tok_s", "prefill"), ("decode_tok_s", "decode")):
                b = best_of(bs, m)
                r = a[m] / b[m] if b[m] else 0
                (slow if r < 1 else fast).append((r, "%s %s at ctx %d: %.2f× llama.cpp %s (%.1f vs %.1f tok/s)" % (
                    kl, name, c, r, short(b), a[m], b[m])))
    if slow:
        out.append("Where llama.cpp is faster (kvlite f16 vs llama.cpp's fastest f16 configuration, wheel or native, "
                   "with or without flash attention; int8 vs the fastest q8_0): " +
                   "; ".join(s for _, s in sorted(slow)) + ".")
    if fast:
        out.append("Where kvlite is faster (same comparison): " + "; ".join(s for _, s in sorted(fast, reverse=True)) + ".")
    spr = sorted((e[m + "_max"] - e[m + "_min"]) / e[m] for e in sp.values() if e.get("reps", 0) >= 2
                 for m in ("prefill_tok_s", "decode_tok_s") if e.get(m))
    if spr:
        out.append("Run-to-run spread: (max − min) / median of a configuration's runs is a median %.0f%% (largest "
                   "%.0f%%) over the configurations and metrics with 2 or more runs; ratios closer to 1 than that are "
                   "not resolved by this run." % (100 * spr[len(spr) // 2], 100 * spr[-1]))
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
    q = qsrc.get("quality", [])
    ref = qsrc.get("reference")
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
    qsrc, bsrc = pick_source(peers, peer, "quality"), pick_source(peers, peer, "baseline_ppl")
    made = plots(peer, points, retr, a.img_dir, qsrc)
    imgrel = os.path.relpath(a.img_dir, os.path.dirname(os.path.abspath(a.out)))
    pf = os.path.join(os.path.abspath(a.results_dir), peer["_file"])
    if pf.startswith(ROOT + os.sep):
        pf = os.path.relpath(pf, ROOT)
    md = build_md(peer, points, retr, made, imgrel, pf, a.results_dir, qsrc, bsrc)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(md)
    print("report: wrote %s (%s) and %s" % (a.out, peer["_file"], ", ".join(made.values()) or "no plots"),
          file=sys.stderr)


if __name__ == "__main__":
    main()
