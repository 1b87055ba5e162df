#!/usr/bin/env bash
# bench/report.py on a synthetic results folder (no llama.cpp, no model, no
# matplotlib needed): it must pick the newest complete non-quick peer run that
# has speed results (not a newer quick run, not a newer speed-less one), put
# the medians of its runs, the llama.cpp/kvlite ratios, the retrieval rows
# (score, cells, per-length scores), kv-point rows and bench/results/*.md text
# into the Markdown, and fail cleanly on an empty folder. A second folder checks
# the peer tables: per context and metric the best llama.cpp configuration
# (f16 wheel/native, flash attention on/off; q8_0 FA only) is picked and the
# ratios are against it, and quality from an older run is reused and named.
# Ends with "N passed, N failed"; exits non-zero on any failure.
set -u
cd "$(dirname "$0")/.."
TMP=$(mktemp -d "${TMPDIR:-/tmp}/kvl_rep.XXXXXX")
trap '[ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"' EXIT
if ! command -v python3 >/dev/null; then
    echo "skip: python3 not installed"
    echo "0 passed, 0 failed"
    exit 0
fi
python3 - "$TMP" <<'PY'
import json, os, subprocess, sys
tmp = sys.argv[1]
res = os.path.join(tmp, "results")
os.makedirs(res)
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what)


def speed(label, engine, kv, ctx, pre, dec):
    runs = [{"prefill_tok_s": p, "decode_tok_s": d, "peak_rss_bytes": 100 << 20, "wall_s": 1.0, "cpu_s": 2.0,
             "contention": 0.01, "runq_wait_frac": 0.01} for p, d in zip(pre, dec)]
    s = sorted(pre), sorted(dec)
    return {"label": label, "engine": engine, "kv": kv, "flash_attn": True if engine == "llama.cpp" else None,
            "ctx": ctx, "prompt_tokens": ctx, "gen_tokens": 64, "n_ctx": ctx + 64, "threads": 2, "n_batch": 512,
            "runs": runs, "discarded_runs": [], "reps": len(runs),
            "prefill_tok_s": s[0][len(pre) // 2], "prefill_tok_s_min": s[0][0], "prefill_tok_s_max": s[0][-1],
            "decode_tok_s": s[1][len(dec) // 2], "decode_tok_s_min": s[1][0], "decode_tok_s_max": s[1][-1],
            "peak_rss_bytes": 100 << 20, "kv_bytes_per_token": 23040, "kv_bytes_peak": 23040 * ctx,
            "contention_median": 0.01, "contention_max": 0.01, "runq_wait_median": 0.01, "runq_wait_max": 0.01}


machine = {"cpu_model": "Test CPU", "cores": 2, "cpu_flags": ["avx2"], "mem_bytes": 8 << 30, "os": "Debian",
           "kernel": "6.1", "hostname": "t"}
model = {"path": "/m.gguf", "file": "m.gguf", "bytes": 1, "name": "M", "n_layer": 30, "n_head": 9, "n_head_kv": 3,
         "head_dim": 64, "n_embd": 576, "n_vocab": 49152, "n_ctx_train": 8192}


def peer(started, complete=True, quick=False, with_speed=True, pre=(300.0, 310.0, 290.0)):
    p = {"kind": "peer", "schema": 1, "quick": quick, "complete": complete, "started": started,
         "finished": started, "duration_s": 60.0, "command": "bench/run.sh", "args": {"reps": 3},
         "machine": machine, "versions": {"kvlite_commit": "abc"}, "model": model, "threads": 2, "notes": []}
    if with_speed:
        p["speed"] = [speed("kvlite f16", "kvlite", "f16", 1024, list(pre), [80.0, 82.0, 79.0]),
                      speed("llama.cpp f16 FA", "llama.cpp", "f16", 1024, [150.0, 100.0, 151.0], [90.0, 88.0, 91.0])]
    return p


def write(name, obj):
    with open(os.path.join(res, name), "w") as f:
        json.dump(obj, f)


write("peer-20261101-1000.json", peer("2026-11-01T10:00:00+00:00", pre=(300.0, 312.5, 290.0)))
write("peer-20261102-1000-quick.json", peer("2026-11-02T10:00:00+00:00", quick=True, pre=(999.0, 999.0, 999.0)))
write("peer-20261103-1000.json", peer("2026-11-03T10:00:00+00:00", with_speed=False))
write("peer-20261104-1000.json", peer("2026-11-04T10:00:00+00:00", complete=False, pre=(777.0, 777.0, 777.0)))
write("latest.json", peer("2026-11-05T10:00:00+00:00", pre=(555.0, 555.0, 555.0)))
write("baseline_retrieval_needle.json", {
    "kind": "retrieval", "task": "needle", "kv": "f16", "bytes_per_token": 23040, "kv_bytes_peak": 50 << 20,
    "score": 0.875, "correct": 7, "cells_total": 8, "depths": [0, 100], "seeds": 2, "seconds": 12.0,
    "by_length": {"2048": 0.75, "1024": 1.0}, "command": "kvlite eval needle --kv f16", "date": "2026-11-01"})
write("quick_retrieval_needle.json", {
    "kind": "retrieval", "quick": True, "task": "needle", "kv": "f16", "bytes_per_token": 23040, "score": 0.123,
    "correct": 1, "cells_total": 8, "by_length": {"512": 0.123}})
write("point.json", {"kind": "kv-point", "label": "test point", "points": [
    {"label": "kvlite int4-test", "engine": "kvlite", "kv": "int4", "ref_kv": "f32", "bytes_per_token": 6000,
     "kld_mean": 0.0123, "kld_max": 1.5, "top1_agree_pct": 91.25, "ppl": 22.5, "ppl_ref": 21.3}]})
with open(os.path.join(res, "extra.md"), "w") as f:
    f.write("### Hand-made section\n\nmeasured 42.5 things\n")
with open(os.path.join(res, "broken.json"), "w") as f:
    f.write("{not json")

out = os.path.join(tmp, "R.md")
env = dict(os.environ, MPLBACKEND="Agg")
r = subprocess.run([sys.executable, "bench/report.py", "--results-dir", res, "--out", out, "--img-dir",
                    os.path.join(tmp, "img")], capture_output=True, text=True, env=env)
check(r.returncode == 0, "report exit %d: %s" % (r.returncode, r.stderr[-500:]))
md = open(out).read() if os.path.exists(out) else ""
check("peer-20261101-1000.json" in md, "reports the complete non-quick peer run with speed results")
check("999.0" not in md and "777.0" not in md and "555.0" not in md, "quick, unfinished runs and latest.json ignored")
check("300.0" in md, "median prefill of kvlite f16 (300.0 of 290/300/312.5)")
check("150.0" in md, "median prefill of llama.cpp (150.0 of 100/150/151)")
check("2.00×" in md or "2.00x" in md, "prefill ratio kvlite/llama.cpp 300/150 = 2.00")
check("0.89×" in md or "0.89x" in md, "decode ratio 80/90 = 0.89 (where llama.cpp is faster)")
check("Where llama.cpp is faster" in md, "notes name where llama.cpp is faster")
check("Test CPU" in md, "machine in the setup table")
check("87.5%" in md and "7/8" in md, "retrieval score and cells")
check("12.3%" not in md and "quick_retrieval" not in md, "quick retrieval results not reported")
check("1024: 100%, 2048: 75%" in md, "retrieval per-length scores sorted by length")
check("`kvlite eval needle --kv f16`" in md, "retrieval command quoted")
check("kvlite int4-test" in md or "int4-test" in md, "kv-point row in the quality table")
check("measured 42.5 things" in md and "### Hand-made section" in md, "bench/results/*.md copied verbatim")
check("broken.json" in r.stderr, "unreadable JSON named on stderr")

# Best-configuration selection: a speed-only run with llama.cpp's f16 cache both ways (wheel and native) and
# q8_0 (FA only); an older complete run holds the quality numbers, which the report reuses and says so.
res2 = os.path.join(tmp, "results2")
os.makedirs(res2)


def lspeed(label, kv, fa, build, ctx, pre, dec):
    e = speed(label, "llama.cpp", kv, ctx, [pre], [dec])
    e.update({"flash_attn": fa, "build": build})
    return e


p2 = peer("2026-12-01T10:00:00+00:00", with_speed=False)
p2["speed"] = [
    speed("kvlite f16", "kvlite", "f16", 1024, [400.0], [100.0]),
    speed("kvlite int8", "kvlite", "int8", 1024, [380.0], [101.0]),
    lspeed("llama.cpp f16 FA", "f16", True, "wheel", 1024, 180.0, 60.0),
    lspeed("llama.cpp f16 noFA", "f16", False, "wheel", 1024, 220.0, 83.0),
    lspeed("llama.cpp native f16 FA", "f16", True, "native", 1024, 190.0, 64.0),
    lspeed("llama.cpp native f16 noFA", "f16", False, "native", 1024, 230.0, 125.0),
    lspeed("llama.cpp q8_0 FA", "q8_0", True, "wheel", 1024, 160.0, 68.0),
    lspeed("llama.cpp native q8_0 FA", "q8_0", True, "native", 1024, 150.0, 70.0),
    speed("kvlite f16", "kvlite", "f16", 4096, [270.0], [60.0]),
    lspeed("llama.cpp f16 FA", "f16", True, "wheel", 4096, 84.0, 29.0),
    lspeed("llama.cpp native f16 noFA", "f16", False, "native", 4096, 70.0, 40.0),
]
p2["versions"]["llama_bench"] = {"build_number": 6000, "build_commit": "4227c9b", "system_info": "AVX2 = 1",
                                 "stamp": "x\nllama.cpp commit: 4227c9be42"}
p1 = peer("2026-11-22T10:00:00+00:00")
p1["quality"] = [{"engine": "kvlite", "kv": "f32", "label": "kvlite f32", "flash_attn": None, "ref_kv": None,
                  "dataset": "wikitext-2/test.txt", "ctx": 1024, "windows": 40, "tokens_scored": 40920,
                  "ppl": 21.4303, "kv_bytes_per_token": 46080}]
with open(os.path.join(res2, "peer-20261201-1000.json"), "w") as f:
    json.dump(p2, f)
with open(os.path.join(res2, "peer-20261122-1000.json"), "w") as f:
    json.dump(p1, f)
out2 = os.path.join(tmp, "R2.md")
r = subprocess.run([sys.executable, "bench/report.py", "--results-dir", res2, "--out", out2, "--img-dir",
                    os.path.join(tmp, "img3")], capture_output=True, text=True, env=env)
check(r.returncode == 0, "report (best config) exit %d: %s" % (r.returncode, r.stderr[-500:]))
md2 = open(out2).read() if os.path.exists(out2) else ""
head = md2[md2.find("### kvlite vs llama.cpp's best"):md2.find("### llama.cpp f16 cache")]
row = next((l for l in head.splitlines() if l.startswith("| 1024 | kvlite f16 vs llama.cpp f16 |")), "")
check("230.0 (native f16 noFA)" in row and "1.74×" in row, "best f16 prefill at 1024: native noFA, 400/230 = 1.74: %r" % row)
check("125.0 (native f16 noFA)" in row and "**0.80×**" in row, "best f16 decode at 1024: native noFA, 100/125 = 0.80 in bold")
row = next((l for l in head.splitlines() if l.startswith("| 1024 | kvlite int8 vs llama.cpp q8_0 |")), "")
check("160.0 (wheel q8_0 FA)" in row and "70.0 (native q8_0 FA)" in row, "best q8_0 per metric: wheel prefill, native decode")
row = next((l for l in head.splitlines() if l.startswith("| 1024 | best vs best")), "")
check("400.0 (kvlite f16)" in row and "101.0 (kvlite int8)" in row and "125.0 (native f16 noFA)" in row,
      "best vs best: kvlite's faster cache vs llama.cpp's fastest of any cache: %r" % row)
row = next((l for l in head.splitlines() if l.startswith("| 4096 | kvlite f16 vs llama.cpp f16 |")), "")
check("84.0 (wheel f16 FA)" in row and "40.0 (native f16 noFA)" in row and "1.50×" in row,
      "best at 4096 from the configs measured there (prefill wheel FA, decode native noFA 60/40)")
check("| wheel f16 FA | wheel f16 noFA | native f16 FA | native f16 noFA |" in md2,
      "f16 table: FA on and off, wheel and native, side by side")
check("| 4096 | **84.0** | – | – | 70.0 |" in md2, "f16 prefill table marks the best, dashes where not measured")
check("ctx 1024 decode 1.67× → 0.80× (llama.cpp is faster" in md2, "plain sentence where the lead is lost")
check("needs flash attention" in md2, "quantized V cache needs FA: said")
check("llama.cpp native" in md2 and "`llama-bench`" in md2 and "4227c9be42" in md2, "native build described")
check("Reused" in md2 and "peer-20261122-1000.json" in md2 and "21.4303" in md2,
      "quality reused from the older complete run, named")
check("peer-20261201-1000.json" in md2.splitlines()[2], "speed from the newest run")
check("1.74× ¹" in md2 and "¹ one run per configuration" in md2, "single-run comparisons marked")
check(" †" not in md, "separated ranges are not marked as overlapping")

# KV-codecs section (bench.py's codecs phase): a run with only codec results; the table, the goals (met / missed
# by how much), failures named, and (with matplotlib) docs/img/kv_pareto.png.
res3 = os.path.join(tmp, "results3")
os.makedirs(res3)


def crow(engine, name, ctx, ppl, ppl_ref, kld, bits, top1=95.0, **kw):
    x = {"engine": engine, "label": "%s %s" % (engine, name), "kv": name, "ctx": ctx, "windows": 40 if ctx == 1024 else 10,
         "tokens_scored": 1000, "exact": False, "ppl": ppl, "ppl_ref": ppl_ref, "dppl_pct": 100 * (ppl / ppl_ref - 1),
         "kld_mean": kld, "kld_max": 10 * kld if kld else None, "top1_agree_pct": top1, "bits_per_value": bits}
    if engine == "kvlite":
        x.update({"config": name, "flags": kw.pop("flags", ["--kv", name]), "ref_kv": "f32", "chunk": 32})
    x.update(kw)
    return x


p3 = peer("2026-12-02T10:00:00+00:00", with_speed=False)
p3["codec_configs"] = [{"label": l, "flags": ["--kv", l], "bits_listed": b} for l, b in
                       (("f16", 16.0), ("int8", 8.5), ("int4", 5.0), ("kivi2", 3.0), ("oaken", 5.31))]
p3["codec_configs"].append({"label": "kivi2/int8@0,-1", "flags": ["--kv", "kivi2", "--kv-layers", "0,-1=int8"],
                            "bits_listed": None})
rows = []
for ctx, f32 in ((1024, 20.0), (4096, 18.0)):
    rows += [crow("kvlite", "f16", ctx, f32 * 1.001, f32, 0.004, 16.0),
             crow("kvlite", "int8", ctx, f32 * 1.002, f32, 0.0042, 8.5),
             crow("kvlite", "int4", ctx, f32 * 1.031, f32, 0.0345, 5.0),
             crow("kvlite", "kivi2", ctx, f32 * 1.041, f32, 0.05, 2.97),
             crow("kvlite", "kivi2/int8@0,-1", ctx, f32 * 1.021, f32, 0.03, 3.37,
                  flags=["--kv", "kivi2", "--kv-layers", "0,-1=int8"]),
             {"engine": "kvlite", "label": "kvlite oaken", "config": "oaken", "flags": ["--kv", "oaken"], "ctx": ctx,
              "windows": 40, "exact": False, "error": "kvlite eval kld --kv oaken failed (rc 1): kvlite: no calibration file"},
             crow("llama.cpp", "f16", ctx, f32 * 1.001, f32 * 1.001, None, 16.0, top1=None),
             crow("llama.cpp", "q4_0", ctx, f32 * 1.16, f32 * 1.001, 0.131, 4.5, top1=80.4),
             {"engine": "llama.cpp", "label": "llama.cpp iq4_nl", "kv": "iq4_nl", "ctx": ctx, "windows": 40,
              "exact": False, "bits_per_value": 4.5, "error": "ValueError: Failed to create llama_context"}]
rows[6].update({"ref_kv": None, "dppl_pct": None})
rows.append(dict(crow("kvlite", "int8", 1024, 20.1, 20.0, 0.0006, 8.5), exact=True, windows=1))
rows.append(dict(crow("kvlite", "f16", 1024, 20.05, 20.0, 0.0005, 16.0), exact=True, windows=1))
p3["codecs"] = rows
p3["codec_speed"] = [speed("kvlite f16", "kvlite", "f16", 8192, [100.0], [20.0]),
                     speed("kvlite int4", "kvlite", "int4", 8192, [95.0], [26.0]),
                     speed("kvlite kivi2", "kvlite", "kivi2", 8192, [80.0], [30.0]),
                     speed("llama.cpp q4_0 FA", "llama.cpp", "q4_0", 8192, [50.0], [12.0]),
                     {"label": "kvlite oaken", "engine": "kvlite", "kv": "oaken", "ctx": 8192, "runs": [],
                      "error": "kvlite oaken ctx 8192 failed (rc 1): kvlite: oaken: calibration file missing"}]
p3["codec_retrieval"] = [{"task": t, "config": c, "label": "kvlite " + c, "score": s, "by_length": {}}
                         for t, c, s in (("needle", "f16", 0.9), ("passkey", "f16", 1.0), ("needle", "kivi2", 0.88),
                                         ("passkey", "kivi2", 0.9))]
p3["codec_best3"] = "kivi2"
p3["codec_list"] = {"codecs": [{"name": "kivi2", "bits_k": 3.0, "bits_v": 3.0, "sealing": True}]}
p3["codec_kverror"] = [{"config": "kivi2", "flags": ["--kv", "kivi2"], "ctx": 1024, "k_rel_mean": 0.21, "v_rel_mean": 0.12,
                        "attn_rel_mean": 0.3, "worst_layer": 29,
                        "layers": [{"layer": i, "k_rel": 0.2, "v_rel": 0.1, "attn_rel": 0.01 * i} for i in range(30)]}]
with open(os.path.join(res3, "peer-20261202-1000.json"), "w") as f:
    json.dump(p3, f)
out3 = os.path.join(tmp, "R3.md")
img3 = os.path.join(tmp, "img4")
r = subprocess.run([sys.executable, "bench/report.py", "--results-dir", res3, "--out", out3, "--img-dir", img3],
                   capture_output=True, text=True, env=env)
check(r.returncode == 0, "report (codecs) exit %d: %s" % (r.returncode, r.stderr[-800:]))
md3 = open(out3).read() if os.path.exists(out3) else ""
sec = md3[md3.find("## KV codecs"):]
check("## KV codecs" in md3, "KV-codecs section present")
row = next((l for l in sec.splitlines() if l.startswith("| kvlite | `int4` |")), "")
check("| 5.00 |" in row and "3.45e-02" in row and "+3.00%" in row, "int4 row: bits, KLD, Δppl vs kvlite f16: %r" % row)
check("26.0" in row and "1.30×" in row and "2.17×" in row and "0.95×" in row,
      "int4 row: decode 26.0, ×f16 1.30, ×q4_0 2.17, prefill ×f16 0.95: %r" % row)
row = next((l for l in sec.splitlines() if l.startswith("| kvlite | `kivi2` |")), "")
check("88.0%" in row and "90.0%" in row and "2.97" in row, "kivi2 row: retrieval scores, measured bits: %r" % row)
row = next((l for l in sec.splitlines() if l.startswith("| llama.cpp | q4_0 |")), "")
check("| 4.50 |" in row and "1.31e-01" in row and "+15.88%" in row and "80.40%" in row,
      "llama.cpp q4_0 row: Δppl vs its f16 cache: %r" % row)
check("| llama.cpp | iq4_nl |" in sec and "Failed to create llama_context" in sec, "rejected llama.cpp type named")
check("sealing codecs prefill 32 tokens per call" in sec, "sealing codecs' prefill chunk said")
check("speed kvlite oaken: kvlite oaken ctx 8192 failed (rc 1)" in sec, "a failed speed config is named")
check("no calibration file" in sec, "a failed kvlite codec names its error")
check("`kivi2/int8@0,-1` = `--kv kivi2 --kv-layers 0,-1=int8`" in sec, "mixed config's flags shown")
check(any(l.startswith("| `kivi2` | 2.10e-01 |") and "29 (2.90e-01), 28 (2.80e-01), 27 (2.70e-01)" in l
          for l in sec.splitlines()), "kv-error table: means and the three worst layers")
goals = sec[sec.find("### Issue 8 goals"):]
check("### Issue 8 goals" in sec, "goals table present")
g = next((l for l in goals.splitlines() if l.startswith("| ≤ 4.5 bits/value")), "")
check("`kivi2/int8@0,-1`" in g and "**missed**" in g and "KLD" in g, "4.5-bit goal missed, best named: %r" % g)
g = next((l for l in goals.splitlines() if l.startswith("| ≤ 3.0 bits/value: Δppl")), "")
check("`kivi2`" in g and "| met |" in g, "3-bit Δppl goal met by kivi2 (+4.0%%): %r" % g)
g = next((l for l in goals.splitlines() if l.startswith("| ≤ 3.0 bits/value: needle")), "")
check("**missed** by 5 pts" in g and "90%" in g, "retrieval goal: passkey 90%% of f16 -> missed by 5 pts: %r" % g)
g = next((l for l in goals.splitlines() if "`int8` KLD within 10% of f16's (ctx 1024, --exact)" in l), "")
check("**missed**" in g and "1.20×" in g, "int8 --exact KLD 1.2x f16's: missed: %r" % g)
g = next((l for l in goals.splitlines() if "`int8` KLD within 10% of f16's (ctx 4096)" in l), "")
check("| met |" in g and "1.05×" in g, "int8 KLD 1.05x f16's at 4K: met: %r" % g)
check(any(l.startswith("| `fp8` KLD") and "not in this run" in l for l in goals.splitlines()),
      "fp8 not in the run: said")
check("(3.37 b/v)" in goals and "Δppl +2.00% is 1.00 pts over the bar" in goals, "how much a goal is missed by")
g = next((l for l in goals.splitlines() if l.startswith("| 4-bit `int4`: decode at ctx 8192 ≥ 1.2×")), "")
check("| met |" in g and "1.30×" in g, "int4 decode 1.3x f16: met: %r" % g)
g = next((l for l in goals.splitlines() if l.startswith("| 2-bit `kivi2`: decode")), "")
check("1.50×" in g and "| met |" in g, "kivi2 decode 1.5x f16: met: %r" % g)
g = next((l for l in goals.splitlines() if l.startswith("| `kivi2`: prefill")), "")
check("**missed**: 20.0% slower" in g, "kivi2 prefill 0.8x f16: 20%% slower: %r" % g)
try:
    import matplotlib  # noqa: F401
    check(os.path.exists(os.path.join(img3, "kv_pareto.png")) and "kv_pareto.png" in sec, "kv_pareto.png written and linked")
except ImportError:
    pass
check("## Speed" not in md3 and "## Quality" not in md3, "a run without speed/quality phases renders without them")

empty = os.path.join(tmp, "empty")
os.makedirs(empty)
r = subprocess.run([sys.executable, "bench/report.py", "--results-dir", empty, "--out", os.path.join(tmp, "E.md"),
                    "--img-dir", os.path.join(tmp, "img2")], capture_output=True, text=True, env=env)
check(r.returncode != 0 and "no peer results" in r.stderr, "empty folder: clear error, exit %d" % r.returncode)
check(not os.path.exists(os.path.join(tmp, "E.md")), "empty folder: no output written")
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
PY
