#!/usr/bin/env python3
"""Plot of `kvlite eval stream --json` output: for one trace, the bandwidth
over time (top) and the adaptive choice of every chunk of every request at
its start time (bottom: level 0..L-1, or text = recompute), with each
request's TTFT against the SLO. Needs matplotlib (the plot venv:
python3 -m venv ~/.cache/kvlite/plotvenv && ~/.cache/kvlite/plotvenv/bin/pip install matplotlib).

usage: stream_plot.py RESULT.json TRACE_INDEX OUT.png"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    res = json.load(open(sys.argv[1]))
    ti = int(sys.argv[2])
    tr = res["traces"][ti]
    step = 0.1
    bw = [float(x) for x in open(tr["trace"]) if x.strip() and not x.startswith("#")]
    t = [i * step for i in range(len(bw))]
    levels = [l["name"] for l in res["levels"] if l["name"] != "int8"]
    fig, ax = plt.subplots(3, 1, figsize=(9, 6.5), sharex=True, gridspec_kw={"height_ratios": [1, 1.4, 1]})
    ax[0].step(t, bw, where="post", color="tab:blue")
    ax[0].set_yscale("log")
    ax[0].set_ylabel("Mbit/s")
    ax[0].set_title("%s: %s, SLO %d ms, %d-token context" % (res["model"].split("/")[-1], tr["trace"].split("/")[-1],
                                                          tr.get("slo_ms", res["slo_ms"]), res["context_tokens"]))
    reqs = tr["adaptive_requests"]
    n_chunks = len(reqs[0]["choices"]) if reqs else 0
    span = tr["seconds"]
    w = span / max(len(reqs), 1)
    cmap = plt.get_cmap("viridis", len(levels) + 1)
    for r in reqs:
        for i, c in enumerate(r["choices"]):
            color = "tab:red" if c < 0 else cmap(c)
            ax[1].add_patch(plt.Rectangle((r["start_s"], i), w * 0.9, 0.9, color=color))
    ax[1].set_ylim(0, n_chunks)
    ax[1].set_ylabel("chunk of the request")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(k)) for k in range(len(levels))]
    handles.append(plt.Rectangle((0, 0), 1, 1, color="tab:red"))
    ax[1].legend(handles, levels + ["text (recompute)"], loc="upper right", fontsize=7, ncol=len(levels) + 1)
    ax[2].plot([r["start_s"] for r in reqs], [r["ttft_ms"] for r in reqs], ".", color="k", label="adaptive TTFT")
    ax[2].axhline(tr.get("slo_ms", res["slo_ms"]), color="tab:red", lw=1, label="SLO")
    ax[2].set_yscale("log")
    ax[2].set_ylabel("TTFT (ms)")
    ax[2].set_xlabel("request start (s into the trace)")
    ax[2].legend(fontsize=7)
    ax[2].set_xlim(0, span)
    fig.tight_layout()
    fig.savefig(sys.argv[3], dpi=110)


if __name__ == "__main__":
    main()
