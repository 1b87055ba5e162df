#!/usr/bin/env python3
"""Regenerate docs/RESULTS.md and docs/img/*.png from bench/results/*.json.

Reads every JSON file in the results folder and sorts them by kind:
  kind "peer"      written by bench/bench.py; the newest complete non-quick one
                   is reported (else the newest one; --peer FILE picks one)
  (a peer run's "codecs" / "codec_speed" / "codec_retrieval" results, from bench.py's codecs phase, make the
                   KV-codecs section and docs/img/kv_pareto.png)
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
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return "\n".join(out)


# ---------------------------------------------------------------------------
# plots


def plots(peer, points, retr, imgdir, qsrc=None, csrc=None):
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
    C = Codecs(csrc) if csrc and csrc.get("codecs") else None
    if C and any(x.get("kld_mean") is not None for x in C.rows):
        made["kv_pareto"] = kv_pareto_plot(C, imgdir, plt, qsrc)
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
# KV codecs (issue 8): bench.py's codecs phase

# Nominal payload bits of a codec family (the decode-speed goals speak of "4-bit" and "2-bit" codecs).
NOMINAL_BITS = {"f32": 32, "f16": 16, "int8": 8, "fp8": 8, "int4": 4, "int4g64": 4, "int4z": 4, "kivi4": 4, "oaken": 4,
                "kivi2": 2, "squat": 2}
LLAMA_ORDER = ["f16", "q8_0", "q5_0", "q4_1", "q4_0", "iq4_nl"]
GOAL_BITS_1, GOAL_BITS_2 = 4.5, 3.0


def codec_base(x):
    """'int4' for a plain spec config ('int4+rot', 'kivi2:r=64'); None for a mixed one (several flags)."""
    fl = x.get("flags") or []
    if len(fl) == 2 and fl[0] == "--kv":
        return re.split(r"[+:]", fl[1])[0]
    return None


class Codecs:
    """Index of a peer run's codecs-phase results."""

    def __init__(self, src):
        self.src = src
        rows = src.get("codecs", []) if src else []
        self.rows = rows
        self.q = {(x["label"], x["ctx"]): x for x in rows if not x.get("exact")}
        self.exact = [x for x in rows if x.get("exact")]
        self.ctxs = sorted({x["ctx"] for x in rows if not x.get("exact")})
        self.speed = {e["label"]: e for e in (src or {}).get("codec_speed", []) if e.get("runs")}
        self.retr = {}
        for r in (src or {}).get("codec_retrieval", []):
            self.retr[(r.get("config"), r["task"])] = r
        self.tasks = [t for t in ("needle", "passkey", "multikey") if any(k[1] == t for k in self.retr)]
        cfg = [c["label"] for c in (src or {}).get("codec_configs", [])]
        seen = cfg + [x["config"] for x in rows if x["engine"] == "kvlite" and x.get("config") not in cfg]
        self.kv_labels = []
        for c in seen:
            if c not in self.kv_labels:
                self.kv_labels.append(c)
        lk = {x["kv"] for x in rows if x["engine"] == "llama.cpp"}
        self.llama = [k for k in LLAMA_ORDER if k in lk] + sorted(lk - set(LLAMA_ORDER))

    def get(self, engine, name, ctx):
        return self.q.get(("%s %s" % (engine, name), ctx))

    def bits(self, engine, name, ctx=None):
        """bits/value as measured at ctx (residual included), else at any context, else the listed format's"""
        for c in ([ctx] if ctx else []) + self.ctxs[::-1]:
            x = self.get(engine, name, c)
            if x and x.get("bits_per_value"):
                return x["bits_per_value"]
        for c in (self.src or {}).get("codec_configs", []):
            if c["label"] == name:
                return c.get("bits_listed")
        return None

    def dppl_f16(self, x):
        """Δppl in % against kvlite f16 at the same context (kvlite rows; llama.cpp: against its f16 cache)."""
        if x is None or x.get("ppl") is None:
            return None
        if x["engine"] == "llama.cpp":
            return x.get("dppl_pct")
        f = self.get("kvlite", "f16", x["ctx"])
        # without a kvlite f16 row at this context: against the f32 cache of the same
        # eval kld run (f16 vs f32 differ by ~0.02% ppl on this model)
        return 100 * (x["ppl"] / f["ppl"] - 1) if f and f.get("ppl") else x.get("dppl_pct")

    def speed_of(self, label):
        return self.speed.get(label)


def f_pct(x, nd=2, sign=True):
    return "–" if x is None else ("%+.*f%%" % (nd, x) if sign else "%.*f%%" % (nd, x))


def f_x(a, b):
    return "%.2f×" % (a / b) if a and b else "–"


def codecs_md(C, peer, made, imgrel, A):
    src = C.src
    A("## KV codecs")
    A("")
    reused_md(src, peer, "KV-codec", A, "they come from the codecs phase of that run")
    args = src.get("args", {})
    c1 = C.ctxs[0] if C.ctxs else None
    wins = {c: next((x["windows"] for x in C.rows if x["ctx"] == c and not x.get("exact") and x.get("windows")), "?")
            for c in C.ctxs}
    sp_f16 = C.speed_of("kvlite f16")
    sp_q4 = C.speed_of("llama.cpp q4_0 FA")
    sctx = next(iter(C.speed.values()))["ctx"] if C.speed else None
    sealing = {c["name"] for c in (src.get("codec_list") or {}).get("codecs", []) if c.get("sealing")}
    seal_chunk = next((x.get("chunk") for x in C.rows if not x.get("exact") and codec_base(x) in sealing
                       and x.get("chunk")), None)
    A("Every kvlite KV codec (`kvlite codecs`, plus rotated and mixed-precision configs) and llama.cpp's quantized "
      "KV types (flash attention on) on wikitext-2 `test.txt`, %s. kvlite: `kvlite eval kld FLAGS` (KLD, top-1 "
      "agreement and Δppl against its f32 cache on the same windows%s); llama.cpp: KLD / top-1 against its f16 cache. *bits/value*: codec bytes of "
      "the cache as stored at that context (scales, zero points, outliers and the f16 residual included) × 8 / "
      "(n_layer × n_kv_head × head_dim × 2); for llama.cpp the block format's exact size. Δppl: against kvlite f16 "
      "(llama.cpp: its f16 cache) at the same context.%s" % (
          ", ".join("ctx %d × %s windows" % (c, wins[c]) for c in C.ctxs) or "no quality rows",
          "; sealing codecs prefill %s tokens per call, one page, as decode sees them" % seal_chunk if seal_chunk
          else "",
          (" Speed: `kvlite bench FLAGS --prompt %d --gen %d` and llama.cpp (wheel) at ctx %d, median of %s run(s), "
           "configs alternating in one run; ratios are the config's decode tok/s over kvlite f16's and llama.cpp "
           "q4_0 FA's." % (next(iter(C.speed.values()))["prompt_tokens"], next(iter(C.speed.values()))["gen_tokens"],
                           sctx, "/".join(str(n) for n in sorted({e.get("reps") for e in C.speed.values()})))
           ) if C.speed else ""))
    A("")
    ks = lambda c: "%dK" % (c // 1024) if c >= 1024 and c % 1024 == 0 else str(c)
    head = ["engine", "config", "bits/value"]
    for c in C.ctxs:
        head += ["KLD %s" % ks(c), "Δppl %s" % ks(c), "top-1 %s" % ks(c)]
    if C.speed:
        head += ["decode %s tok/s" % ks(sctx), "× kvlite f16", "× llama q4_0", "prefill %s tok/s" % ks(sctx),
                 "prefill × f16"]
    head += C.tasks
    rows, errs = [], []
    items = [("kvlite", l) for l in C.kv_labels] + [("llama.cpp", k) for k in C.llama]
    for eng, name in items:
        r = [eng, "`%s`" % name if eng == "kvlite" else name + (" (reference)" if name == "f16" else "")]
        bb = [C.bits(eng, name, c) for c in C.ctxs] or [C.bits(eng, name)]
        bb = [b for b in bb if b]
        r.append("–" if not bb else "%.2f" % bb[-1] if max(bb) - min(bb) < 0.005 else
                 "/".join("%.2f" % b for b in bb))
        for c in C.ctxs:
            x = C.get(eng, name, c)
            if x and x.get("error"):
                errs.append("%s %s at ctx %d: %s" % (eng, name, c, x["error"].strip().splitlines()[-1][:300]))
                r += ["failed", "–", "–"]
                continue
            r += [f_sci(x.get("kld_mean")) if x else "–", f_pct(C.dppl_f16(x)) if x and
                  not (eng == "llama.cpp" and name == "f16") else "–",
                  "%.2f%%" % x["top1_agree_pct"] if x and x.get("top1_agree_pct") is not None else "–"]
        if C.speed:
            e = C.speed_of("%s %s" % (eng, name) if eng == "kvlite" else "llama.cpp %s FA" % name)
            r += [f_num(e["decode_tok_s"]) if e else "–", f_x(e and e["decode_tok_s"], sp_f16 and sp_f16["decode_tok_s"]),
                  f_x(e and e["decode_tok_s"], sp_q4 and sp_q4["decode_tok_s"]),
                  f_num(e["prefill_tok_s"]) if e else "–",
                  f_x(e and e["prefill_tok_s"], sp_f16 and sp_f16["prefill_tok_s"])]
        se = next((e for e in (src.get("codec_speed") or []) if e.get("error") and e["label"] == (
            "kvlite " + name if eng == "kvlite" else "llama.cpp %s FA" % name)), None)
        if se:
            errs.append("speed %s %s: %s" % (eng, name, se["error"].strip().splitlines()[-1][:300]))
        for t in C.tasks:
            x = C.retr.get((name, t)) if eng == "kvlite" else None
            r.append("failed" if x and x.get("error") else "%.1f%%" % (100 * x["score"]) if x else "–")
            if x and x.get("error"):
                errs.append("%s %s: %s" % (t, name, x["error"].strip().splitlines()[-1][:300]))
        rows.append(r)
    A(table(head, rows, ["l", "l"] + ["r"] * (len(head) - 2)))
    A("")
    flags = [(c["label"], c["flags"]) for c in src.get("codec_configs", []) if c["flags"] != ["--kv", c["label"]]]
    if flags:
        A("Configs with their own flags: " + "; ".join("`%s` = `%s`" % (l, " ".join(f)) for l, f in flags) + ".")
        A("")
    rq = sorted({x["label"] for x in C.rows if x.get("reused")})
    if rq:
        A("Reused from the quality phase of the same run (same context and windows): %s." % ", ".join(rq))
        A("")
    if C.retr:
        base = next((r for r in C.retr.values() if r.get("config") == "f16"), None)
        A("Retrieval: `kvlite eval needle|passkey|multikey FLAGS` on the retrieval phase's grid (%s); f16 is the "
          "retrieval phase's own baseline when it ran.%s" % (
              "prompt lengths %s" % args.get("retrieval_lengths") if args.get("retrieval_lengths") else
              "kvlite's default grid: lengths 1024–4096 × depths 0–100% × 2 seeds",
              " The ≤ 3-bit config picked for it (lowest KLD at ctx %s among formats of at most 3.0 bits/value): "
              "`%s`." % (c1, src["codec_best3"]) if src.get("codec_best3") else ""))
        A("")
    if errs:
        A("Not measured (the command's error): " + "; ".join(errs) + ".")
        A("")
    if made.get("kv_pareto"):
        A("![KLD and Δppl vs bits/value: kvlite codecs and llama.cpp KV types](%s/%s)" % (imgrel, made["kv_pareto"]))
        A("")
    if C.exact:
        A("With `--exact` (exact matmuls in both passes: no 8-bit-activation noise floor):")
        A("")
        fx = {x["ctx"]: x for x in C.exact if x.get("config") == "f16" and x.get("kld_mean") is not None}
        erows = []
        for x in C.exact:
            if x.get("error"):
                erows.append([x["config"], x["ctx"], x.get("windows"), "failed", "–", "–", "–"])
                continue
            f = fx.get(x["ctx"])
            erows.append(["`%s`" % x["config"], x["ctx"], x["windows"], f_sci(x["kld_mean"]), f_pct(x.get("dppl_pct")),
                          "%.2f%%" % x["top1_agree_pct"],
                          f_x(x["kld_mean"], f["kld_mean"]) if f and x is not f else "–"])
        A(table(["config", "ctx", "windows", "KLD vs f32", "Δppl vs f32", "top-1", "KLD / f16's"], erows,
                ["l", "r", "r", "r", "r", "r", "r"]))
        A("")
    ke = [x for x in src.get("codec_kverror", []) if "error" not in x]
    if ke:
        A("Per-layer error (`kvlite eval kv-error FLAGS --ctx %s`: relative K / V reconstruction error and "
          "attention-output error against f32 KV, means over layers; the worst layer by attention-output error, "
          "and the three worst):" % ke[0].get("ctx"))
        A("")
        krows = []
        for x in ke:
            ls = sorted(x.get("layers", []), key=lambda l: -l.get("attn_rel", 0))[:3]
            krows.append(["`%s`" % x["config"], f_sci(x.get("k_rel_mean")), f_sci(x.get("v_rel_mean")),
                          f_sci(x.get("attn_rel_mean")), x.get("worst_layer", "–"),
                          ", ".join("%d (%s)" % (l["layer"], f_sci(l.get("attn_rel"))) for l in ls) or "–"])
        A(table(["config", "K rel. error", "V rel. error", "attn-output rel. error", "worst layer",
                 "worst layers (attn error)"], krows, ["l", "r", "r", "r", "r", "l"]))
        A("")
    goals_md(C, A)


def _over(v, bar, what, pct=False):
    if v is None:
        return "%s not measured" % what
    if v <= bar:
        return ""
    return "%s %s is %s over the bar" % (what, f_pct(v) if pct else f_sci(v),
                                          ("%.2f pts" % (v - bar)) if pct else "%.1f×" % (v / bar))


def goals_md(C, A):
    """Issue 8's goals, each with the measured value and met / missed by how much."""
    G = []  # (goal, measured, verdict)
    kv = [l for l in C.kv_labels]

    def qual_goal(bits_max, dppl_max, kld_max, name):
        cand = []
        for l in kv:
            vals = []
            ok = True
            for c in C.ctxs:
                x = C.get("kvlite", l, c)
                if not x or x.get("error") or (C.bits("kvlite", l, c) or 99) > bits_max:
                    ok = False
                    break
                vals.append((c, C.dppl_f16(x), x.get("kld_mean") if kld_max else None))
            if ok and vals and all(v[1] is not None for v in vals):
                score = max(max(abs(d) / dppl_max for _, d, _ in vals),
                            max((k / kld_max for _, _, k in vals), default=0) if kld_max else 0)
                cand.append((score, l, vals))
        if not cand:
            G.append((name, "no kvlite config at ≤ %.1f bits/value measured at %s" % (
                bits_max, "/".join(str(c) for c in C.ctxs) or "any context"), "**missed** (nothing measured)"))
            return
        cand.sort(key=lambda t: t[0])
        score, l, vals = cand[0]
        bl = sorted({"%.2f" % C.bits("kvlite", l, c) for c in C.ctxs})
        meas = "best: `%s` (%s b/v): " % (l, "/".join(bl)) + "; ".join(
            "ctx %d Δppl %s%s" % (c, f_pct(d), ", KLD %s" % f_sci(k) if kld_max else "") for c, d, k in vals)
        if score <= 1:
            G.append((name, meas, "met"))
        else:
            why = [s for c, d, k in vals for s in (_over(abs(d), dppl_max, "ctx %d Δppl" % c, pct=True),
                                                    _over(k, kld_max, "ctx %d KLD" % c) if kld_max else "") if s]
            G.append((name, meas, "**missed**: " + "; ".join(why)))

    cs = " and ".join("%dK" % (c // 1024) if c % 1024 == 0 else str(c) for c in C.ctxs) or "1K and 4K"
    qual_goal(GOAL_BITS_1, 1.0, 0.01, "≤ 4.5 bits/value: Δppl ≤ 1%% vs f16 and KLD ≤ 0.01 at ctx %s" % cs)
    qual_goal(GOAL_BITS_2, 5.0, None, "≤ 3.0 bits/value: Δppl ≤ 5%% vs f16 (ctx %s)" % cs)
    # retrieval at <= 3 bits
    base = {t: C.retr.get(("f16", t)) for t in ("needle", "passkey")}
    cand = []
    for l in kv:
        b = C.bits("kvlite", l)
        rs = {t: C.retr.get((l, t)) for t in ("needle", "passkey")}
        if l == "f16" or b is None or b > GOAL_BITS_2 or not all(r and r.get("score") is not None for r in rs.values()):
            continue
        rel = {t: (rs[t]["score"] / base[t]["score"] if base[t] and base[t].get("score") else None) for t in rs}
        if None in rel.values():
            continue
        cand.append((min(rel.values()), l, rs, rel))
    name = "≤ 3.0 bits/value: needle and passkey ≥ 95% of f16's"
    if not cand:
        G.append((name, "no ≤ 3.0-bit config with needle and passkey results (and an f16 baseline)",
                  "**missed** (nothing measured)"))
    else:
        cand.sort(reverse=True)
        m, l, rs, rel = cand[0]
        meas = "best: `%s` (%.2f b/v): " % (l, C.bits("kvlite", l)) + "; ".join(
            "%s %.1f%% vs f16 %.1f%% (%.0f%%)" % (t, 100 * rs[t]["score"], 100 * base[t]["score"], 100 * rel[t])
            for t in rs)
        G.append((name, meas, "met" if m >= 0.95 else "**missed** by %.0f pts (worst task at %.0f%% of f16's)" % (
            100 * (0.95 - m), 100 * m)))
    # int8 / fp8 KLD within 10% of f16's
    for l in ("int8", "fp8"):
        if l not in C.kv_labels:
            G.append(("`%s` KLD within 10%% of f16's" % l, "not in this run (`kvlite codecs` of the build did not list "
                      "it)", "**missed** (not measured)"))
            continue
        for exact in (False, True):
            if exact and not C.exact:
                G.append(("`%s` KLD within 10%% of f16's with --exact" % l, "no --exact runs (`--exact-windows 0`?)",
                          "**missed** (not measured)"))
                continue
            pool = [x for x in C.rows if bool(x.get("exact")) == exact and "error" not in x]
            for c in sorted({x["ctx"] for x in pool}):
                x = next((y for y in pool if y.get("config") == l and y["ctx"] == c), None)
                f = next((y for y in pool if y.get("config") == "f16" and y["ctx"] == c), None)
                nm = "`%s` KLD within 10%% of f16's (ctx %d%s)" % (l, c, ", --exact" if exact else "")
                if not x or not f or x.get("kld_mean") is None or not f.get("kld_mean"):
                    G.append((nm, "not measured" if not x else "no f16 row to compare", "**missed** (not measured)"))
                    continue
                r = x["kld_mean"] / f["kld_mean"]
                G.append((nm, "%s vs f16 %s (%.2f×)" % (f_sci(x["kld_mean"]), f_sci(f["kld_mean"]), r),
                          "met" if r <= 1.10 else "**missed** by %.0f%% (%.2f× f16's)" % (100 * (r - 1.10), r)
                          if r < 3 else "**missed**: %.0f× f16's (%s)" % (
                              r, "with exact matmuls f16's KLD is almost 0, so any quantization error exceeds the "
                              "10% margin" if exact else "far above the bar")))
    # speed
    f16 = C.speed_of("kvlite f16")
    q4 = C.speed_of("llama.cpp q4_0 FA")
    if C.speed:
        sctx = next(iter(C.speed.values()))["ctx"]
        for l in kv:
            e = C.speed_of("kvlite " + l)
            x = next((y for y in C.rows if y.get("config") == l), None) or {"flags": ["--kv", l]}
            cfg = next((c for c in C.src.get("codec_configs", []) if c["label"] == l), x)
            nb = NOMINAL_BITS.get(codec_base(cfg))
            if not e or not f16 or l == "f16":
                continue
            d, p = e["decode_tok_s"] / f16["decode_tok_s"], e["prefill_tok_s"] / f16["prefill_tok_s"]
            if nb == 4:
                G.append(("4-bit `%s`: decode at ctx %d ≥ 1.2× kvlite f16" % (l, sctx), "%.1f vs %.1f tok/s (%.2f×)" % (
                    e["decode_tok_s"], f16["decode_tok_s"], d), "met" if d >= 1.2 else "**missed** (%.3f× < 1.2×)" % d))
                if q4:
                    dq = e["decode_tok_s"] / q4["decode_tok_s"]
                    G.append(("4-bit `%s`: decode at ctx %d ≥ 2× llama.cpp q4_0" % (l, sctx),
                              "%.1f vs %.1f tok/s (%.2f×)" % (e["decode_tok_s"], q4["decode_tok_s"], dq),
                              "met" if dq >= 2 else "**missed** (%.3f× < 2×)" % dq))
            elif nb == 2:
                G.append(("2-bit `%s`: decode at ctx %d ≥ 1.3× kvlite f16" % (l, sctx), "%.1f vs %.1f tok/s (%.2f×)" % (
                    e["decode_tok_s"], f16["decode_tok_s"], d), "met" if d >= 1.3 else "**missed** (%.3f× < 1.3×)" % d))
            G.append(("`%s`: prefill at ctx %d no more than 10%% slower than f16" % (l, sctx),
                      "%.1f vs %.1f tok/s (%.2f×)" % (e["prefill_tok_s"], f16["prefill_tok_s"], p),
                      "met" if p >= 0.9 else "**missed**: %.1f%% slower" % (100 * (1 - p))))
    else:
        G.append(("decode / prefill at ctx 8K vs kvlite f16 and llama.cpp q4_0", "no codec speed results",
                  "**missed** (not measured)"))
    A("### Issue 8 goals")
    A("")
    A("Measured values against each goal of issue 8 (bits/value as measured at that context; \"best\" = the "
      "config closest to the bar). Where a codec misses, `kvlite eval kv-error -m M -f FILE --kv SPEC --json` "
      "gives its per-layer K/V and attention-output error.")
    A("")
    A(table(["goal", "measured", "verdict"], [list(g) for g in G], ["l", "l", "l"]))
    A("")


def kv_pareto_plot(C, imgdir, plt, qsrc=None):
    """docs/img/kv_pareto.png: KLD (log) and Δppl% against bits/value, kvlite codecs (circles) and llama.cpp KV
    types (squares); the first context filled, the second hollow; labels on the first."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    col = {"kvlite": "#1f77b4", "llama.cpp": "#ff7f0e"}
    mk = {"kvlite": "o", "llama.cpp": "s"}
    allb = []
    stack = {}  # (panel, bits) -> [(y, label offset)] placed there
    for i, c in enumerate(C.ctxs[:2]):
        for x in C.rows:
            if x.get("exact") or x["ctx"] != c or x.get("error") or x.get("kld_mean") is None:
                continue
            eng = x["engine"]
            b = x.get("bits_per_value")
            if not b:
                continue
            allb.append(b)
            name = x.get("config") or x.get("kv")
            d = C.dppl_f16(x)
            for ax, y in ((axes[0], x["kld_mean"]), (axes[1], d)):
                if y is None or (ax is axes[0] and y <= 0):
                    continue
                kw = dict(color=col.get(eng, "#2ca02c"), s=46) if i == 0 else dict(
                    facecolors="none", edgecolors=col.get(eng, "#2ca02c"), s=46)
                ax.scatter([b], [y], marker=mk.get(eng, "^"), **kw)
                if i == 0:
                    # a label moves 9 points away (kvlite down, llama.cpp up) from labels already placed at the
                    # same bits/value whose points lie close in y (log panel: within 1.6x; linear: 1.2 pts)
                    placed = stack.setdefault((id(ax), round(b, 2)), [])
                    step = -9 if eng == "kvlite" else 9
                    off = -10 if eng == "kvlite" else 4

                    def near(y0):
                        return (max(y, y0) / max(min(y, y0), 1e-12) < 1.6) if ax is axes[0] else abs(y - y0) < 1.2
                    while any(near(y0) and abs(off - o0) < 8 for y0, o0 in placed):
                        off += step
                    placed.append((y, off))
                    ax.annotate(name, (b, y), fontsize=7, textcoords="offset points", xytext=(5, off))
    nf = [x for x in (qsrc or {}).get("quality", []) if (x.get("label") or "").endswith("noFA") and x.get("kld_mean")]
    if nf:
        axes[0].axhline(nf[0]["kld_mean"], color="#7f7f7f", linestyle=":", linewidth=1)
        axes[0].annotate("noise floor (llama.cpp f16 FA on/off)", (0.99, nf[0]["kld_mean"]),
                         xycoords=("axes fraction", "data"), fontsize=7, color="#555", ha="right",
                         textcoords="offset points", xytext=(0, 3))
    axes[0].axhline(0.01, color="#2ca02c", linestyle="--", linewidth=1)
    axes[0].annotate("goal KLD ≤ 0.01", (0.99, 0.01), xycoords=("axes fraction", "data"), fontsize=7, ha="right",
                     color="#2ca02c", textcoords="offset points", xytext=(0, 3))
    for v, t in ((1.0, "goal ≤ 1% (≤ 4.5 b/v)"), (5.0, "goal ≤ 5% (≤ 3.0 b/v)")):
        axes[1].axhline(v, color="#2ca02c", linestyle="--", linewidth=1)
        axes[1].annotate(t, (0.99, v), xycoords=("axes fraction", "data"), fontsize=7, ha="right",
                         color="#2ca02c", textcoords="offset points", xytext=(0, 3))
    axes[1].axhline(0, color="k", linewidth=0.6)
    from matplotlib.ticker import FixedLocator, NullLocator
    ticks = [2, 3, 4, 4.5, 5, 6, 8, 10, 16, 32]
    for ax in axes:
        ax.set_xscale("log", base=2)
        if allb:
            lo, hi = min(allb) / 1.15, max(allb) * 1.25
            ax.set_xlim(lo, hi)
            tk = [t for t in ticks if lo <= t <= hi]
            ax.xaxis.set_major_locator(FixedLocator(tk))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticklabels([("%g" % t) for t in tk])
        for v in (GOAL_BITS_2, GOAL_BITS_1):
            ax.axvline(v, color="#bbbbbb", linestyle=":", linewidth=1)
        ax.set_xlabel("bits per value (K and V, as stored)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("mean KLD vs own full-precision cache")
    axes[0].set_title("KLD vs bits/value (lower-left is better)", fontsize=10)
    axes[1].set_ylabel("Δ perplexity vs f16 (%)")
    axes[1].set_title("Δ perplexity vs bits/value", fontsize=10)
    from matplotlib.lines import Line2D
    ks = lambda c: "%dK" % (c // 1024) if c >= 1024 and c % 1024 == 0 else str(c)
    h = [Line2D([], [], marker="o", color=col["kvlite"], linestyle="", label="kvlite codec"),
         Line2D([], [], marker="s", color=col["llama.cpp"], linestyle="", label="llama.cpp KV type (FA)")]
    if C.ctxs:
        h.append(Line2D([], [], marker="o", color="#555", linestyle="", label="ctx %s (filled)" % ks(C.ctxs[0])))
    if len(C.ctxs) > 1:
        h.append(Line2D([], [], marker="o", markerfacecolor="none", color="#555", linestyle="",
                        label="ctx %s (hollow)" % ks(C.ctxs[1])))
    axes[0].legend(handles=h, fontsize=7, loc="upper right")
    fig.suptitle("KV codecs: quality vs size (%s, wikitext-2 test)" % ((C.src.get("model") or {}).get("file", "")),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(imgdir, "kv_pareto.png"), dpi=110)
    plt.close(fig)
    return "kv_pareto.png"


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


def build_md(peer, points, retr, made, imgrel, peer_file, results_dir=None, qsrc=None, bsrc=None, csrc=None):
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

    csrc = csrc or peer
    if csrc.get("codecs") or csrc.get("codec_speed"):
        codecs_md(Codecs(csrc), peer, made, imgrel, A)

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
    csrc = pick_source(peers, peer, "codecs")
    made = plots(peer, points, retr, a.img_dir, qsrc, csrc)
    imgrel = os.path.relpath(a.img_dir, os.path.dirname(os.path.abspath(a.out)))
    pf = os.path.join(os.path.abspath(a.results_dir), peer["_file"])
    if pf.startswith(ROOT + os.sep):
        pf = os.path.relpath(pf, ROOT)
    md = build_md(peer, points, retr, made, imgrel, pf, a.results_dir, qsrc, bsrc, csrc)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(md)
    print("report: wrote %s (%s) and %s" % (a.out, peer["_file"], ", ".join(made.values()) or "no plots"),
          file=sys.stderr)


if __name__ == "__main__":
    main()
