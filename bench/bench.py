#!/usr/bin/env python3
"""kvlite vs llama.cpp side by side on this machine: llama.cpp as the pinned
llama-cpp-python wheel (driven from Python) and as a native llama-bench of the
same source (bench/build_llama_native.sh), f16 cache with and without flash
attention, q8_0 / q4_0 with it.

Run through bench/run.sh (which creates the bench venv, builds kvlite and
fetches the model). Phases:
  speed     prefill / decode tokens/s at several contexts, every run in its own
            process (peak RSS = the child's ru_maxrss from wait4), kvlite and
            llama.cpp runs alternating, median over --reps runs per config
  quality   perplexity at ctx 1024 over the first --ppl-windows windows of
            wikitext-2 test, KLD + top-1 agreement of each quantized KV type
            against its own engine's full-precision cache
  baseline  kvlite f16 perplexity at ctx 1024/4096/8192 on wikitext-2 and
            tinyshakespeare (limited windows)
Results: bench/results/peer-YYYYMMDD-HHMM[-quick].json and bench/results/latest.json;
schema in bench/README.md. Only the stdlib here; llama_cpp and numpy are
imported by the llama.cpp child processes.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = 1
DEFAULT_MODEL = os.path.expanduser("~/.cache/kvlite/SmolLM2-135M-Instruct.Q4_1.gguf")
REF_PPL = os.path.join(ROOT, "tests", "data", "ref_ppl.json")

# llama.cpp KV cache types: ggml type id and bytes per element (block bytes / 32 values: bits/value = 8x).
LLAMA_KV = {"f32": (0, 4.0), "f16": (1, 2.0), "q8_0": (8, 34 / 32), "q5_0": (6, 22 / 32), "q4_1": (3, 20 / 32),
            "q4_0": (2, 18 / 32), "iq4_nl": (20, 18 / 32)}

# codecs phase (bench/README.md): kvlite codec configs are (label, flags); a plain spec S is ("S", ["--kv", S]).
# Defaults: every codec `kvlite codecs --json` lists except f32, plus these rotated ones and mixed-precision configs.
CODEC_EXTRA = ["int4+rot", "kivi2+rot"]
CODEC_MIXED = ["kivi2/int8@0,1,-2,-1=--kv kivi2 --kv-layers 0,1,-2,-1=int8"]
LLAMA_CODEC_KVS = ["q8_0", "q5_0", "q4_1", "q4_0", "iq4_nl"]  # flash attention on; KLD vs llama.cpp's f16 cache
# Nominal payload bits of a codec family (for the decode-speed goals: "4-bit" / "2-bit" codecs).
NOMINAL_BITS = {"f32": 32, "f16": 16, "int8": 8, "fp8": 8, "int4": 4, "int4g64": 4, "int4z": 4, "kivi4": 4, "oaken": 4,
                "kivi2": 2, "squat": 2}

# Speed configs, in the order they run inside one repetition (kvlite and
# llama.cpp alternate). (label, engine, kv, flash_attn, build): build "wheel" is
# the pinned llama-cpp-python (driven from Python, as before), "native" is
# llama-bench from bench/build_llama_native.sh (the same llama.cpp source,
# cmake -DGGML_NATIVE=ON). llama.cpp's quantized V cache needs flash attention,
# so q8_0 / q4_0 run with FA only.
SPEED_CONFIGS = [
    ("kvlite f16", "kvlite", "f16", None, None),
    ("llama.cpp f16 FA", "llama.cpp", "f16", True, "wheel"),
    ("llama.cpp native f16 noFA", "llama.cpp", "f16", False, "native"),
    ("kvlite int8", "kvlite", "int8", None, None),
    ("llama.cpp q8_0 FA", "llama.cpp", "q8_0", True, "wheel"),
    ("llama.cpp native f16 FA", "llama.cpp", "f16", True, "native"),
    ("kvlite f32", "kvlite", "f32", None, None),
    ("llama.cpp f16 noFA", "llama.cpp", "f16", False, "wheel"),
    ("llama.cpp native q8_0 FA", "llama.cpp", "q8_0", True, "native"),
    ("llama.cpp q4_0 FA", "llama.cpp", "q4_0", True, "wheel"),
]
LONG_CONFIGS = ["kvlite f16", "llama.cpp f16 FA", "llama.cpp f16 noFA", "llama.cpp native f16 FA",
                "llama.cpp native f16 noFA", "kvlite int8", "llama.cpp q8_0 FA", "llama.cpp native q8_0 FA"]
DEFAULT_LLAMA_BENCH = os.path.expanduser("~/.cache/kvlite/llama-native-0.3.16/bin/llama-bench")


def log(msg):
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def now_iso():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


# ---------------------------------------------------------------------------
# machine / environment


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    fl = line.split(":", 1)[1].split()
                    return [x for x in ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vnni", "avx_vnni")
                            if x in fl]
    except OSError:
        pass
    return []


def mem_total_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def os_release():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def git_commit():
    """Commit of the work tree, read from .git files (no git command)."""
    try:
        gd = os.path.join(ROOT, ".git")
        if os.path.isfile(gd):  # a worktree: .git says "gitdir: PATH"
            with open(gd) as f:
                gd = os.path.join(ROOT, f.read().split(":", 1)[1].strip())
        common = gd
        if os.path.exists(os.path.join(gd, "commondir")):  # branch refs live in the main repository
            with open(os.path.join(gd, "commondir")) as f:
                common = os.path.join(gd, f.read().strip())
        with open(os.path.join(gd, "HEAD")) as f:
            head = f.read().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(None, 1)[1]
        for d in (gd, common):
            p = os.path.join(d, ref)
            if os.path.exists(p):
                with open(p) as f:
                    return f.read().strip()
        with open(os.path.join(common, "packed-refs")) as f:
            for line in f:
                if line.strip().endswith(ref):
                    return line.split()[0]
    except OSError:
        pass
    return None


def machine_info():
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "mem_bytes": mem_total_bytes(),
        "os": os_release(),
        "kernel": platform.release(),
        "hostname": platform.node(),
    }


# ---------------------------------------------------------------------------
# CPU contention: other processes' CPU use while one of our children runs


HZ = os.sysconf("SC_CLK_TCK")


def cpu_stat():
    """(busy_seconds, total_seconds) summed over all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    busy = sum(v[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / HZ, (busy + idle) / HZ


def busy_frac(seconds):
    b0, t0 = cpu_stat()
    time.sleep(seconds)
    b1, t1 = cpu_stat()
    return (b1 - b0) / max(t1 - t0, 1e-9)


def wait_quiet(threshold, max_wait):
    """Wait (up to max_wait s) until the machine's CPU use over 2 s is below threshold.
    Returns the seconds waited."""
    if max_wait <= 0:
        return 0.0
    t0 = time.time()
    frac = busy_frac(2.0)
    announced = False
    while frac > threshold and time.time() - t0 < max_wait:
        if not announced:
            log("machine busy (%.0f%% CPU by other processes); waiting up to %ds" % (100 * frac, max_wait))
            announced = True
        frac = busy_frac(2.0)
    return time.time() - t0


def _preexec(nice, autogroup_nice):
    """Child setup: nice increment; with autogroup_nice, a new session (hence its own
    scheduler autogroup) whose nice is set to autogroup_nice."""
    if not nice and autogroup_nice is None:
        return None

    def f():
        if autogroup_nice is not None:
            try:
                os.setsid()
                with open("/proc/self/autogroup", "w") as fh:
                    fh.write(str(autogroup_nice))
            except OSError:
                pass
        if nice:
            os.nice(nice)
    return f


def autogroup_boost_works(autogroup_nice):
    """True if a child started with _preexec(0, autogroup_nice) really runs in an
    autogroup of that nice (needs sched_autogroup_enabled and, for < 0, root)."""
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            if f.read().strip() != "1":
                return False
        r = subprocess.run(["cat", "/proc/self/autogroup"], capture_output=True, text=True,
                           preexec_fn=_preexec(0, autogroup_nice))
        return r.stdout.split()[-1:] == [str(autogroup_nice)]
    except (OSError, IndexError):
        return False


def _sample_sched(pid, acc):
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return
    for t in tids:
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                v = f.read().split()
            acc[t] = (int(v[0]), int(v[1]))
        except (OSError, ValueError, IndexError):
            pass


def run_child(cmd, env=None, nice=0, timeout=None, autogroup_nice=None):
    """Run cmd in its own process; return dict(rc, stdout, stderr, wall_s, maxrss_bytes,
    cpu_s, contention) where contention = fraction of the machine's CPU time used by
    other processes during the run."""
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    b0, tt0 = cpu_stat()
    t0 = time.perf_counter()
    pre = _preexec(nice, autogroup_nice)
    p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, preexec_fn=pre)
    deadline = time.time() + timeout if timeout else None
    sched = {}  # tid -> (run_ns, runqueue_wait_ns) from /proc/PID/task/TID/schedstat
    try:
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                break
            if deadline and time.time() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                break
            _sample_sched(p.pid, sched)
            time.sleep(0.1)
    except BaseException:  # e.g. Ctrl-C: the child is in its own session and would not see it
        p.kill()
        os.wait4(p.pid, 0)
        raise
    wall = time.perf_counter() - t0
    b1, tt1 = cpu_stat()
    p.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    so = out.read().decode("utf-8", "replace")
    se = err.read().decode("utf-8", "replace")
    cpu = ru.ru_utime + ru.ru_stime
    ncpu = os.cpu_count() or 1
    others = max(0.0, (b1 - b0) - cpu)
    runq_wait = sum(w for _, w in sched.values()) / 1e9
    return {
        "runq_wait_s": runq_wait,
        "rc": p.returncode,
        "stdout": so,
        "stderr": se,
        "wall_s": wall,
        "maxrss_bytes": ru.ru_maxrss * 1024,
        "cpu_s": cpu,
        "contention": min(1.0, others / max(ncpu * wall, 1e-9)),
    }


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON object in output: %r" % text[-500:])


# ---------------------------------------------------------------------------
# tokens


def bench_paragraph():
    """The paragraph `kvlite bench` repeats (BENCH_TEXT in tools/cmd_bench.c)."""
    with open(os.path.join(ROOT, "tools", "cmd_bench.c")) as f:
        src = f.read()
    m = re.search(r'BENCH_TEXT\[\]\s*=\s*((?:\s*"(?:[^"\\]|\\.)*")+)\s*;', src)
    if not m:
        raise RuntimeError("cannot find BENCH_TEXT in tools/cmd_bench.c")
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1))
    return "".join(parts).encode("latin-1").decode("unicode_escape").encode("latin-1").decode("utf-8")


def kvlite_tokenize(kv, model, text=None, path=None):
    cmd = [kv, "tokenize", "-m", model]
    cmd += ["-f", path] if path else ["-p", text]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return [int(x) for x in r.stdout.split()]


def llama_tokcheck(py, model, texts):
    """Tokenize texts {name: path} with llama.cpp's tokenizer (vocab only) in a child."""
    with tempfile.TemporaryDirectory() as td:
        spec = os.path.join(td, "spec.json")
        with open(spec, "w") as f:
            json.dump({"model": model, "texts": texts, "outdir": td}, f)
        r = run_child([py, os.path.abspath(__file__), "--child", "llama-tok", spec])
        if r["rc"] != 0:
            raise RuntimeError("llama tokenizer child failed: " + r["stderr"][-2000:])
        res = last_json(r["stdout"])
        for name in texts:
            with open(os.path.join(td, name + ".ids")) as f:
                res["ids"][name] = json.load(f)
        return res


def compare_ids(a, b):
    n = min(len(a), len(b))
    first = next((i for i in range(n) if a[i] != b[i]), None)
    if first is None and len(a) != len(b):
        first = n
    return {"kvlite_tokens": len(a), "llama_tokens": len(b), "identical": a == b, "first_difference": first}


# ---------------------------------------------------------------------------
# llama.cpp children (run as: bench.py --child NAME SPEC.json)


def _vmrss():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def child_llama_tok(spec):
    import llama_cpp

    llm = llama_cpp.Llama(spec["model"], vocab_only=True, verbose=False)
    md = dict(llm.metadata)
    res = {"ids": {}, "bos": llm.token_bos(), "n_vocab": llm.n_vocab(), "version": llama_cpp.__version__,
           "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
           "metadata": {k: v for k, v in md.items() if not k.startswith("tokenizer.")}}
    for name, path in spec["texts"].items():
        with open(path, "rb") as f:
            data = f.read()
        ids = llm.tokenize(data, add_bos=False, special=False)
        with open(os.path.join(spec["outdir"], name + ".ids"), "w") as f:
            json.dump(ids, f)
    print(json.dumps(res))


def _llama(spec, kv, fa, n_ctx, logits_all=False):
    import llama_cpp

    t = LLAMA_KV[kv][0]
    return llama_cpp.Llama(spec["model"], n_ctx=n_ctx, n_threads=spec["threads"], n_threads_batch=spec["threads"],
                           n_batch=spec.get("n_batch", 512), flash_attn=fa, type_k=t, type_v=t,
                           logits_all=logits_all, verbose=False)


def child_llama_speed(spec):
    import numpy as np
    import llama_cpp

    rss0 = _vmrss()
    with open(spec["tokens"]) as f:
        prompt = json.load(f)[: spec["prompt"]]
    t0 = time.perf_counter()
    llm = _llama(spec, spec["kv"], spec["flash_attn"], spec["n_ctx"])
    t1 = time.perf_counter()
    rss1 = _vmrss()
    nv = llm.n_vocab()
    llm.eval(prompt)
    t2 = time.perf_counter()
    gen = []
    for _ in range(spec["gen"]):
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(nv,))
        tok = int(logits.argmax())
        gen.append(tok)
        llm.eval([tok])
    t3 = time.perf_counter()
    print(json.dumps({
        "prefill_tok_s": len(prompt) / (t2 - t1),
        "decode_tok_s": spec["gen"] / (t3 - t2) if spec["gen"] else 0.0,
        "load_s": t1 - t0,
        "n_ctx_actual": llm.n_ctx(),
        "rss_after_import_bytes": rss0,
        "rss_after_load_bytes": rss1,
        "gen_ids_head": gen[:8],
    }))


def child_llama_quality(spec):
    """ppl of every KV type, KLD / top-1 agreement of each against spec['ref'],
    windows of spec['ctx'] tokens (scoring positions 0..ctx-2 -> targets 1..ctx-1).
    A KV type whose context cannot be created (llama.cpp rejects the type) is reported under "errors" and
    left out; the reference must work. With logits_all every context holds n_ctx x n_vocab floats twice
    (llama.cpp's output buffer and llama-cpp-python's scores: 1.6 GB at ctx 4096 here), so above
    spec['keep_ctx'] (default 2048) only the reference stays loaded and the others are created per window."""
    import gc
    import numpy as np

    with open(spec["tokens"]) as f:
        toks = json.load(f)
    ctx, W, ref = spec["ctx"], spec["windows"], spec["ref"]
    kvs = [ref] + [k for k in spec["kvs"] if k != ref]
    keep = ctx <= spec.get("keep_ctx", 2048)
    errors = {}

    # "f16" = KV type f16 with flash attention; "f16-noFA" = without.
    def make(k):
        return _llama(spec, k.split("-")[0], not k.endswith("-noFA"), ctx, logits_all=True)

    models = {}
    for k in kvs:
        try:
            m = make(k)
        except Exception as e:  # e.g. ValueError: Failed to create llama_context
            if k == ref:
                raise
            errors[k] = "%s: %s" % (type(e).__name__, e)
            sys.stderr.write("llama quality: KV type %s rejected: %s\n" % (k, errors[k]))
            continue
        if keep or k == ref:
            models[k] = m
        else:
            del m
            gc.collect()
    kvs = [k for k in kvs if k not in errors]
    nll = {k: [] for k in kvs}
    kl_sum = {k: 0.0 for k in kvs}
    kl_max = {k: 0.0 for k in kvs}
    agree = {k: 0 for k in kvs}
    scored = 0
    secs = {k: 0.0 for k in kvs}
    chunk = 128

    def logsoftmax(x):
        x = x.astype(np.float64)
        m = x.max(axis=1, keepdims=True)
        x -= m
        x -= np.log(np.exp(x).sum(axis=1, keepdims=True))
        return x

    for w in range(W):
        win = toks[w * ctx:(w + 1) * ctx]
        if len(win) < ctx:
            break
        tgt = np.asarray(win[1:], dtype=np.int64)
        t0 = time.perf_counter()
        models[ref].reset()
        models[ref].eval(win)
        secs[ref] += time.perf_counter() - t0
        # reference log-probs and arg-max per chunk of rows, kept for the window (float64: 8 x rows x vocab)
        lrs = []
        wn = {k: 0.0 for k in kvs}
        for r0 in range(0, ctx - 1, chunk):
            r1 = min(ctx - 1, r0 + chunk)
            lr = logsoftmax(models[ref].scores[r0:r1])
            wn[ref] += float(-lr[np.arange(r1 - r0), tgt[r0:r1]].sum())
            lrs.append(lr.astype(np.float32) if not keep else lr)
        for k in kvs[1:]:
            m = models[k] if k in models else make(k)
            t0 = time.perf_counter()
            m.reset()
            m.eval(win)
            secs[k] += time.perf_counter() - t0
            for i, r0 in enumerate(range(0, ctx - 1, chunk)):
                r1 = min(ctx - 1, r0 + chunk)
                rows = np.arange(r1 - r0)
                lr = lrs[i].astype(np.float64)
                pr = np.exp(lr)
                lq = logsoftmax(m.scores[r0:r1])
                wn[k] += float(-lq[rows, tgt[r0:r1]].sum())
                kl = np.maximum((pr * (lr - lq)).sum(axis=1), 0.0)
                kl_sum[k] += float(kl.sum())
                kl_max[k] = max(kl_max[k], float(kl.max()))
                agree[k] += int((lq.argmax(axis=1) == lr.argmax(axis=1)).sum())
            if k not in models:
                del m
                gc.collect()
        for k in kvs:
            nll[k].append(wn[k])
        scored += ctx - 1
        sys.stderr.write("llama quality: ctx %d window %d/%d\n" % (ctx, w + 1, W))
        sys.stderr.flush()
    out = {"windows": len(nll[ref]), "tokens_scored": scored, "ref": ref, "ctx": ctx, "kv": {}, "errors": errors}
    for k in kvs:
        tot = sum(nll[k])
        e = {"ppl": float(np.exp(tot / scored)), "nll_mean": tot / scored, "window_nll_sum": nll[k],
             "seconds": secs[k]}
        if k != ref:
            e.update({"kld_mean": kl_sum[k] / scored, "kld_max": kl_max[k], "top1_agree_pct": 100.0 * agree[k] / scored})
        out["kv"][k] = e
    print(json.dumps(out))


CHILDREN = {"llama-tok": child_llama_tok, "llama-speed": child_llama_speed, "llama-quality": child_llama_quality}


# ---------------------------------------------------------------------------
# driver


class Bench:
    def __init__(self, a):
        self.a = a
        self.kvlite = os.path.join(ROOT, a.build, "kvlite")
        self.py = sys.executable
        self.tmp = tempfile.mkdtemp(prefix="kvl-bench-")
        self.res = None
        self.path = None

    # -- results file ---------------------------------------------------------
    def save(self, complete=False):
        self.res["complete"] = complete
        self.res["updated"] = now_iso()
        self.res["duration_s"] = round(time.time() - self.t_start, 1)
        os.makedirs(self.a.results_dir, exist_ok=True)
        for p in (self.path, os.path.join(self.a.results_dir, "latest.json")):
            tmp = p + ".part"
            with open(tmp, "w") as f:
                json.dump(self.res, f, indent=1)
                f.write("\n")
            os.replace(tmp, p)

    def resume(self):
        """Continue an unfinished run: its file, settings and finished measurements."""
        a = self.a
        path = a.resume
        if path == "latest":
            path = os.path.join(a.results_dir, "latest.json")
        with open(path) as f:
            res = json.load(f)
        if res.get("kind") != "peer" or (res.get("complete") and "phases" not in a.explicit):
            sys.exit("bench: %s is not an unfinished peer run (to add phases to a finished one, name them with "
                     "--phases)" % path)
        res["complete"] = False
        keep = {"resume", "results_dir"} | set(a.explicit)  # flags given now override the file's
        if "quality_codecs" not in res["args"]:  # before the codecs phase --kvlite-codecs was the quality phase's
            res["args"]["quality_codecs"] = res["args"].pop("kvlite_codecs", a.quality_codecs)
        for k, v in res["args"].items():
            if k not in keep and k != "explicit":
                setattr(a, k, v)
        res["args"] = {k: v for k, v in vars(a).items() if k != "explicit"}
        self.res = res
        self.path = os.path.join(a.results_dir, res.get("file") or os.path.basename(path))
        self.t_start = time.time() - (res.get("duration_s") or 0)
        res.setdefault("resumed", []).append("%s (phases %s)" % (now_iso(), ",".join(a.phases)))
        log("resuming %s" % self.path)

    def start(self):
        a = self.a
        if a.resume:
            return self.resume()
        self.t_start = time.time()
        stamp = time.strftime("%Y%m%d-%H%M")
        name = "peer-%s%s.json" % (stamp, "-quick" if a.quick else "")
        self.path = os.path.join(a.results_dir, name)
        self.res = {
            "kind": "peer",
            "schema": SCHEMA,
            "file": name,
            "quick": bool(a.quick),
            "started": now_iso(),
            "command": os.environ.get("KVL_BENCH_CMD") or " ".join(shlex.quote(x) for x in sys.argv),
            "args": {k: v for k, v in vars(a).items() if k not in ("child", "explicit")},
            "machine": machine_info(),
            "versions": {"python": platform.python_version(), "kvlite_commit": git_commit()},
            "model": {"path": a.model, "file": os.path.basename(a.model), "bytes": os.path.getsize(a.model)},
            "threads": a.threads,
            "notes": [],
        }

    # -- setup: tokens, model shape -------------------------------------------
    def setup(self):
        a = self.a
        para = bench_paragraph()
        para_path = os.path.join(self.tmp, "para.txt")
        with open(para_path, "w") as f:
            f.write(para)
        texts = {"para": para_path}
        if {"quality", "codecs"} & set(a.phases):
            texts["wikitext"] = self.wikitext
        log("tokenizing with kvlite and llama.cpp (vocab only)")
        kv_para = kvlite_tokenize(self.kvlite, a.model, path=para_path)
        lt = llama_tokcheck(self.py, a.model, texts)
        md = lt["metadata"]
        n_layer = int(md["llama.block_count"])
        n_head = int(md["llama.attention.head_count"])
        n_head_kv = int(md.get("llama.attention.head_count_kv", n_head))
        n_embd = int(md["llama.embedding_length"])
        head_dim = int(md.get("llama.attention.key_length", n_embd // n_head))
        self.shape = {"n_layer": n_layer, "n_head": n_head, "n_head_kv": n_head_kv, "head_dim": head_dim,
                      "n_embd": n_embd, "n_vocab": lt["n_vocab"], "n_ctx_train": int(md.get("llama.context_length", 0)),
                      "name": md.get("general.name", "")}
        self.res["model"].update(self.shape)
        self.res["versions"].update({"llama_cpp_python": lt["version"], "llama_cpp_system_info": lt["system_info"]})
        try:
            import importlib.metadata as im
            self.res["versions"]["numpy"] = im.version("numpy")
        except Exception:
            pass
        tc = {"bench_paragraph": compare_ids(kv_para, lt["ids"]["para"])}
        # The speed prompt: BOS then the paragraph repeated, as `kvlite bench` builds it.
        bos = lt["bos"]
        plen = max([self.prompt_len(c) for c in a.contexts] +
                   ([self.prompt_len(a.codec_speed_ctx)] if "codecs" in a.phases else []) + [0])
        prompt = ([bos] if bos is not None and bos >= 0 else [])
        while len(prompt) < plen:
            prompt.extend(kv_para)
        self.prompt_path = os.path.join(self.tmp, "prompt.json")
        with open(self.prompt_path, "w") as f:
            json.dump(prompt[:plen], f)
        if {"quality", "codecs"} & set(a.phases):
            kv_wiki = kvlite_tokenize(self.kvlite, a.model, path=self.wikitext)
            tc["wikitext_test"] = compare_ids(kv_wiki, lt["ids"]["wikitext"])
            try:
                with open(REF_PPL) as f:
                    ref = json.load(f)
                tc["wikitext_test"]["transformers_tokens"] = ref.get("tokens_in_file")
            except OSError:
                pass
            self.wiki_ids_path = os.path.join(self.tmp, "wiki.json")
            with open(self.wiki_ids_path, "w") as f:
                json.dump(kv_wiki, f)
        self.res["tokenizer_check"] = tc
        for k, v in tc.items():
            log("tokenizer check %s: %s" % (k, v))
            if not v["identical"] and not any(n.startswith("tokenizers differ on %s " % k) for n in self.res["notes"]):
                self.res["notes"].append("tokenizers differ on %s (first difference at token %s); "
                                         "llama.cpp is fed kvlite's token ids" % (k, v["first_difference"]))

    def llama_bpt(self, kv):
        s = self.shape
        return s["n_layer"] * s["n_head_kv"] * s["head_dim"] * 2 * LLAMA_KV[kv][1]

    def reps_for(self, c):
        at = getattr(self.a, "reps_at", None) or {}
        if str(c) in at:
            return at[str(c)]
        return self.a.reps_long if c >= self.a.long_ctx else self.a.reps

    def cfgs_for(self, c):
        """Speed configs measured at context c (the long contexts run only --long-configs)."""
        names = self.a.speed_configs
        if c >= self.a.long_ctx and getattr(self.a, "long_configs", None) is not None:
            names = [n for n in names if n in self.a.long_configs]
        return [x for x in SPEED_CONFIGS if x[0] in names]

    def prompt_len(self, c):
        lim = self.a.max_ctx
        return c if c + self.a.gen <= lim else lim - self.a.gen

    # -- speed ----------------------------------------------------------------
    def speed_run(self, cfg, c):
        a = self.a
        label, engine, kv, fa, build = cfg[:5]
        flags = cfg[5] if len(cfg) > 5 else ["--kv", kv]  # codecs phase: a config's own flags (--kv-layers, ...)
        P = self.prompt_len(c)
        n_ctx = P + a.gen
        if engine == "kvlite":
            cmd = [self.kvlite, "bench", "-m", a.model, "--prompt", str(P), "--gen", str(a.gen), "--ctx", str(n_ctx),
                   "--reps", "1", "--threads", str(a.threads), "--json"] + flags
        elif build == "native":
            cmd = self.llama_bench_cmd(kv, fa, P)
        else:
            spec = os.path.join(self.tmp, "speed.json")
            with open(spec, "w") as f:
                json.dump({"model": a.model, "tokens": self.prompt_path, "prompt": P, "gen": a.gen, "n_ctx": n_ctx,
                           "kv": kv, "flash_attn": fa, "threads": a.threads, "n_batch": 512}, f)
            cmd = [self.py, os.path.abspath(__file__), "--child", "llama-speed", spec]
        r = run_child(cmd, nice=a.nice, timeout=a.run_timeout, autogroup_nice=self.pb("speed"))
        if r["rc"] != 0:
            raise RuntimeError("%s ctx %d failed (rc %d): %s" % (label, c, r["rc"], r["stderr"][-2000:]))
        j = self.parse_llama_bench(r, P) if build == "native" else last_json(r["stdout"])
        run = {"prefill_tok_s": j["prefill_tok_s"], "decode_tok_s": j["decode_tok_s"],
               "peak_rss_bytes": r["maxrss_bytes"], "wall_s": round(r["wall_s"], 3), "cpu_s": round(r["cpu_s"], 3),
               "contention": round(r["contention"], 4),
               # time our threads sat runnable but not running, per thread (2) and second of the run
               "runq_wait_frac": round(r["runq_wait_s"] / (a.threads * max(r["wall_s"], 1e-9)), 4)}
        if engine == "kvlite":
            run.update({"kv_bytes_per_token": j.get("kv_bytes_per_token"), "kv_bytes_peak": j.get("kv_bytes_peak")})
        elif build == "native":
            run.update({"prefill_ms": j["prefill_ms"], "decode_ns": j["decode_ns"]})
        else:
            run.update({"rss_after_import_bytes": j.get("rss_after_import_bytes"), "load_s": round(j["load_s"], 3),
                        "n_ctx_actual": j.get("n_ctx_actual")})
        return run

    def llama_bench_cmd(self, kv, fa, P):
        """One llama-bench test: tg<gen> at depth P (n_ctx = P + gen, batches of 512, --threads), one
        repetition, no warm-up (every run is a fresh process, like the other engines). Its untimed depth run
        prefills P tokens from an empty cache; llama.cpp's own perf counters (printed with -v) time that
        prefill, llama-bench times the decode."""
        a = self.a
        return [self.llama_bench, "-m", a.model, "-t", str(a.threads), "-b", "512", "-ub", "512",
                "-p", "0", "-n", str(a.gen), "-d", str(P), "-fa", "1" if fa else "0", "-ctk", kv, "-ctv", kv,
                "-r", "1", "--no-warmup", "-o", "json", "-v"]

    def parse_llama_bench(self, r, P):
        """decode tok/s from llama-bench's JSON (avg_ts of its tg test at depth P); prefill tok/s from
        llama_perf_context_print's 'prompt eval time = X ms / N tokens' (N must be P: only the depth run
        evaluates more than one token at a time)."""
        a = self.a
        tests = json.loads(r["stdout"][r["stdout"].index("["):])
        t = tests[-1]
        if t.get("n_depth") != P or t.get("n_gen") != a.gen or t.get("n_prompt") != 0:
            raise RuntimeError("llama-bench ran another test: %s" % {k: t.get(k) for k in ("n_prompt", "n_gen", "n_depth")})
        m = re.findall(r"prompt eval time =\s*([0-9.]+) ms /\s*(\d+) tokens", r["stderr"])
        if not m or int(m[-1][1]) != P:
            raise RuntimeError("llama-bench: no prompt eval time for %d tokens in its log: %s" % (P, m))
        pre_ms = float(m[-1][0])
        dec_ns = t["samples_ns"][0]
        if "llama_bench" not in self.res["versions"]:
            info = {k: t.get(k) for k in ("build_commit", "build_number", "cpu_info", "backends", "model_type")}
            info["path"] = self.llama_bench
            stamp = os.path.join(os.path.dirname(os.path.dirname(self.llama_bench)), "STAMP")
            if os.path.exists(stamp):
                with open(stamp) as f:
                    info["stamp"] = f.read().strip()
            sysinfo = re.search(r"system_info: (.*)", r["stderr"])
            if sysinfo:
                info["system_info"] = sysinfo.group(1).strip()
            self.res["versions"]["llama_bench"] = info
        return {"prefill_tok_s": P / (pre_ms / 1e3), "decode_tok_s": a.gen / (dec_ns / 1e9),
                "prefill_ms": round(pre_ms, 2), "decode_ns": dec_ns}

    def phase_speed(self):
        a = self.a
        entries = {}
        for c in a.contexts:
            for cfg in self.cfgs_for(c):
                label, engine, kv, fa, build = cfg
                P = self.prompt_len(c)
                e = {"label": label, "engine": engine, "build": build, "kv": kv, "flash_attn": fa, "ctx": c,
                     "prompt_tokens": P,
                     "gen_tokens": a.gen, "n_ctx": P + a.gen, "threads": a.threads, "n_batch": 512, "runs": [],
                     "discarded_runs": []}
                if engine == "llama.cpp":
                    e["kv_bytes_per_token"] = self.llama_bpt(kv)
                entries[(c, label)] = e
        for old in self.res.get("speed", []):  # --resume: keep finished runs
            if (old["ctx"], old["label"]) in entries:
                entries[(old["ctx"], old["label"])] = old
        self.res["speed"] = list(entries.values())
        self.wait_left = a.wait_budget
        self.measure_speed(entries, [(c, self.reps_for(c), self.cfgs_for(c)) for c in a.contexts], "speed")

    def measure_speed(self, entries, plan, key, tolerate=False):
        """Run plan [(ctx, reps, configs)]: within a repetition the configs alternate; entries[(ctx, label)] gets
        the runs; self.res[key] (the list of those entries) is summarized and saved after every run. With
        tolerate, a config whose run fails gets the error in its entry and is left out of the later repetitions."""
        a = self.a
        total = sum(reps * len(cfgs) for _, reps, cfgs in plan)
        done = 0
        t0 = time.time()
        for c, reps, cfgs in plan:
            for rep in range(reps):
                for cfg in cfgs:
                    e = entries[(c, cfg[0])]
                    if len(e["runs"]) > rep or (tolerate and e.get("error")):  # done before --resume, or failed
                        done += 1
                        continue
                    retries = a.retries
                    while True:
                        if self.wait_left > 0:
                            self.wait_left -= wait_quiet(a.quiet_threshold, min(a.max_wait, self.wait_left))
                        try:
                            run = self.speed_run(cfg, c)
                        except RuntimeError as err:
                            if not tolerate:
                                raise
                            run = None
                            e["error"] = str(err).strip()
                            log("  %s" % e["error"][-500:])
                            break
                        if run["runq_wait_frac"] > a.quiet_threshold and retries > 0 and self.wait_left > 0:
                            retries -= 1
                            e["discarded_runs"].append(run)
                            log("  %s ctx %d: threads waited for a CPU %.0f%% of the time, rerunning" % (
                                cfg[0], c, 100 * run["runq_wait_frac"]))
                            continue
                        break
                    if run is None:
                        self.save()
                        done += 1
                        continue
                    e["runs"].append(run)
                    self.summarize_speed(key)
                    self.res[key + "_wait_s"] = round(a.wait_budget - self.wait_left, 1)
                    self.save()
                    done += 1
                    el = time.time() - t0
                    log("speed ctx %5d rep %d/%d %-26s prefill %8.1f tok/s  decode %6.1f tok/s  rss %5.0f MiB  "
                        "others %3.0f%% runq-wait %3.0f%%  [%d/%d, %.0f s elapsed]" % (
                            c, rep + 1, reps, cfg[0], run["prefill_tok_s"], run["decode_tok_s"],
                            run["peak_rss_bytes"] / 2**20, 100 * run["contention"], 100 * run["runq_wait_frac"],
                            done, total, el))

    def summarize_speed(self, key="speed"):
        for e in self.res[key]:
            runs = e["runs"]
            if not runs:
                continue
            for k in ("prefill_tok_s", "decode_tok_s"):
                vals = [r[k] for r in runs]
                e[k] = statistics.median(vals)
                e[k + "_min"] = min(vals)
                e[k + "_max"] = max(vals)
            e["reps"] = len(runs)
            e["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in runs)
            e["contention_median"] = statistics.median(r["contention"] for r in runs)
            e["contention_max"] = max(r["contention"] for r in runs)
            e["runq_wait_median"] = statistics.median(r.get("runq_wait_frac", 0) for r in runs)
            e["runq_wait_max"] = max(r.get("runq_wait_frac", 0) for r in runs)
            if e["engine"] == "kvlite":
                e["kv_bytes_per_token"] = runs[-1].get("kv_bytes_per_token")
                e["kv_bytes_peak"] = runs[-1].get("kv_bytes_peak")
            else:
                if e.get("build") != "native":  # llama-bench is no Python process
                    e["rss_after_import_bytes"] = statistics.median(r["rss_after_import_bytes"] or 0 for r in runs)
                e["kv_bytes_peak"] = e["kv_bytes_per_token"] * e["n_ctx"]

    # -- quality --------------------------------------------------------------
    def pb(self, phase):
        """Autogroup nice for this phase's children (None = normal priority)."""
        return self.boost if phase in self.a.boost_phases else None

    def phase_quality(self):
        a = self.a
        ctx, W = a.ppl_ctx, a.ppl_windows
        q = self.res.setdefault("quality", [])  # --resume: rows already measured stay
        try:
            with open(REF_PPL) as f:
                ref = json.load(f)
            wn = ref["window_nll_sum"]
            if ref["ctx"] == ctx and W <= len(wn):
                n = W * (ctx - 1)
                self.res["reference"] = {"engine": "transformers", "ppl": __import__("math").exp(sum(wn[:W]) / n),
                                         "windows": W, "tokens_scored": n, "ctx": ctx, "dataset": ref["dataset"],
                                         "ppl_40_windows": ref["ppl"], "versions": ref.get("versions"),
                                         "settings": ref.get("settings"), "method": ref.get("method")}
        except (OSError, KeyError, ValueError):
            pass
        ds = "wikitext-2/test.txt"
        # kvlite: `eval kld --kv X` runs f32 (reference) and X on the same windows.
        for kv in a.quality_codecs:
            if kv == "f32" or any(x.get("label") == "kvlite " + kv for x in q):
                continue
            log("quality: kvlite eval kld --kv %s, ctx %d, %d windows" % (kv, ctx, W))
            cmd = [self.kvlite, "eval", "kld", "-m", a.model, "-f", self.wikitext, "--ctx", str(ctx), "--kv", kv,
                   "--max-windows", str(W), "--threads", str(a.threads), "--json"]
            r = run_child(cmd, autogroup_nice=self.pb("quality"))
            if r["rc"] != 0:
                raise RuntimeError("kvlite eval kld failed: " + r["stderr"][-2000:])
            j = last_json(r["stdout"])
            if not any(x["engine"] == "kvlite" and x["kv"] == "f32" for x in q):
                q.append({"engine": "kvlite", "kv": "f32", "label": "kvlite f32", "flash_attn": None, "ref_kv": None, "dataset": ds,
                          "ctx": ctx, "windows": j["windows"], "tokens_scored": j["tokens_scored"],
                          "ppl": j["ppl_f32"], "kv_bytes_per_token": self.kvlite_bpt("f32")})
            q.append({"engine": "kvlite", "kv": kv, "label": "kvlite " + kv, "flash_attn": None, "ref_kv": "f32", "dataset": ds, "ctx": ctx,
                      "windows": j["windows"], "tokens_scored": j["tokens_scored"], "ppl": j["ppl_codec"],
                      "ppl_ref": j["ppl_f32"], "kld_mean": j["kld_mean"], "kld_max": j["kld_max"],
                      "top1_agree_pct": j["top1_agree_pct"], "seconds": j["seconds"],
                      "kv_bytes_per_token": self.kvlite_bpt(kv), "peak_rss_bytes": r["maxrss_bytes"]})
            log("  ppl f32 %.4f  %s %.4f  KLD %.3g  top1 %.2f%%  (%.0f s)" % (
                j["ppl_f32"], kv, j["ppl_codec"], j["kld_mean"], j["top1_agree_pct"], r["wall_s"]))
            self.save()
        if any(x["engine"] == "llama.cpp" for x in q):
            return
        log("quality: llama.cpp %s (flash attention), ctx %d, %d windows" % ("/".join(a.llama_kvs), ctx, W))
        spec = os.path.join(self.tmp, "quality.json")
        with open(spec, "w") as f:
            json.dump({"model": a.model, "tokens": self.wiki_ids_path, "ctx": ctx, "windows": W, "ref": a.llama_kvs[0],
                       "kvs": a.llama_kvs, "threads": a.threads, "n_batch": 512}, f)
        r = run_child([self.py, os.path.abspath(__file__), "--child", "llama-quality", spec],
                      autogroup_nice=self.pb("quality"))
        if r["rc"] != 0:
            raise RuntimeError("llama quality child failed: " + r["stderr"][-2000:])
        j = last_json(r["stdout"])
        for key, err in j.get("errors", {}).items():
            self.res["notes"].append("quality: llama.cpp rejected KV type %s: %s" % (key, err))
            log("  llama.cpp %-8s rejected: %s" % (key, err))
        for key, e in j["kv"].items():
            kv = key.split("-")[0]
            x = {"engine": "llama.cpp", "kv": kv, "label": "llama.cpp " + key, "flash_attn": not key.endswith("-noFA"),
                 "ref_kv": None if key == j["ref"] else j["ref"] + " FA", "dataset": ds, "ctx": ctx, "windows": j["windows"], "tokens_scored": j["tokens_scored"],
                 "ppl": e["ppl"], "window_nll_sum": [round(v, 4) for v in e["window_nll_sum"]],
                 "seconds": e["seconds"], "kv_bytes_per_token": self.llama_bpt(kv)}
            if "kld_mean" in e:
                x.update({"ppl_ref": j["kv"][j["ref"]]["ppl"], "kld_mean": e["kld_mean"], "kld_max": e["kld_max"],
                          "top1_agree_pct": e["top1_agree_pct"]})
            q.append(x)
            log("  llama.cpp %-8s ppl %.4f%s" % (key, e["ppl"], "  KLD %.3g  top1 %.2f%%" % (
                e["kld_mean"], e["top1_agree_pct"]) if "kld_mean" in e else ""))
        self.save()

    def kvlite_bpt(self, kv):
        # kvlite reports bytes/token in `bench --json`; take it from the speed
        # phase when present, else ask a tiny bench run.
        for e in self.res.get("speed", []):
            if e["engine"] == "kvlite" and e["kv"] == kv and e.get("kv_bytes_per_token"):
                return e["kv_bytes_per_token"]
        cache = self.__dict__.setdefault("_bpt", {})
        if kv not in cache:
            r = run_child([self.kvlite, "bench", "-m", self.a.model, "--prompt", "8", "--gen", "1", "--reps", "1",
                           "--kv", kv, "--threads", str(self.a.threads), "--json"])
            cache[kv] = last_json(r["stdout"]).get("kv_bytes_per_token") if r["rc"] == 0 else None
        return cache[kv]

    # -- KV codecs (issue 8) --------------------------------------------------
    def codec_configs(self):
        """The kvlite codec configs [(label, flags)]: --kvlite-codecs specs (auto = every codec `kvlite codecs
        --json` lists except f32, plus CODEC_EXTRA) and --kvlite-mixed LABEL=FLAGS configs. A config naming a codec
        the build does not list is skipped with a note (another engineer's codec not merged yet)."""
        a = self.a
        r = subprocess.run([self.kvlite, "codecs", "--json"], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("kvlite codecs --json failed (rc %d): %s" % (r.returncode, r.stderr[-500:]))
        cl = json.loads(r.stdout)
        self.res["codec_list"] = cl
        listed = [c["name"] for c in cl["codecs"]]
        specs = []
        for s in a.kvlite_codecs:
            for x in ([n for n in listed if n != "f32"] + CODEC_EXTRA if s == "auto" else [s]):
                if x not in specs:
                    specs.append(x)
        cfgs = [(s, ["--kv", s]) for s in specs]
        for m in a.kvlite_mixed:
            if m == "none":
                continue
            if "=" not in m:
                sys.exit("bench: --kvlite-mixed %r: expected LABEL=FLAGS, e.g. %r" % (m, CODEC_MIXED[0]))
            lab, fl = m.split("=", 1)
            cfgs.append((lab.strip(), shlex.split(fl)))
        out, skipped = [], []
        for lab, flags in cfgs:
            bases = []
            for i, f in enumerate(flags[:-1]):
                v = flags[i + 1]
                if f in ("--kv", "--kv-k", "--kv-v"):
                    bases.append(v)
                elif f == "--kv-layers":
                    bases += [x.split("=", 1)[1] for x in v.split(";") if "=" in x]
            bases = [re.split(r"[+:]", b)[0] for b in bases]
            miss = [b for b in bases if b not in listed]
            if miss or not bases:
                skipped.append("%s (%s)" % (lab, "needs " + ", ".join(miss) if miss else "no --kv flag"))
            else:
                out.append((lab, flags))
        if skipped:
            note = "codecs: skipped %s: not listed by `kvlite codecs` of this build (%s)" % (
                "; ".join(skipped), ", ".join(listed))
            if note not in self.res["notes"]:
                self.res["notes"].append(note)
            log(note)
        bits = {c["name"]: (c["bits_k"] + c["bits_v"]) / 2 for c in cl["codecs"]}
        self.codec_bits = {lab: bits.get(re.split(r"[+:]", flags[1])[0]) if len(flags) == 2 else None
                           for lab, flags in out}
        self.res["codec_configs"] = [{"label": lab, "flags": flags, "bits_listed": self.codec_bits[lab]}
                                     for lab, flags in out]
        return out

    def phase_codecs(self):
        a = self.a
        cfgs = self.codec_configs()
        log("codecs: %d kvlite configs (%s); llama.cpp %s; steps %s" % (
            len(cfgs), ", ".join(l for l, _ in cfgs), ",".join(a.llama_codec_kvs), ",".join(a.codec_steps)))
        if "quality" in a.codec_steps:
            self.codec_quality(cfgs)
        if "exact" in a.codec_steps and a.exact_windows > 0:
            self.codec_exact(cfgs)
        if "kverror" in a.codec_steps:
            self.codec_kverror(cfgs)
        if "speed" in a.codec_steps:
            self.codec_speed(cfgs)
        if "retrieval" in a.codec_steps:
            self.codec_retrieval(cfgs)

    def kvlite_kld(self, flags, ctx, W, exact=False):
        """One `kvlite eval kld` run: (json, run_child result); raises with the command's own error line."""
        a = self.a
        cmd = [self.kvlite, "eval", "kld", "-m", a.model, "-f", self.wikitext, "--ctx", str(ctx),
               "--max-windows", str(W), "--threads", str(a.threads), "--json"] + flags + (["--exact"] if exact else [])
        r = run_child(cmd, autogroup_nice=self.pb("codecs"))
        if r["rc"] != 0:
            raise RuntimeError("kvlite eval kld %s failed (rc %d): %s" % (" ".join(flags), r["rc"],
                                                                         r["stderr"].strip()[-1000:]))
        return last_json(r["stdout"]), r

    def codec_row(self, label, flags, ctx, W, exact=False):
        try:
            j, r = self.kvlite_kld(flags, ctx, W, exact)
        except RuntimeError as e:
            log("  %s" % e)
            return {"engine": "kvlite", "label": "kvlite " + label, "config": label, "flags": flags, "ctx": ctx,
                    "windows": W, "exact": exact, "error": str(e)}
        x = {"engine": "kvlite", "label": "kvlite " + label, "config": label, "flags": flags,
             "kv": j.get("kv_codec", label), "ref_kv": "f32", "dataset": "wikitext-2/test.txt", "ctx": ctx,
             "windows": j["windows"], "tokens_scored": j["tokens_scored"], "exact": exact, "chunk": j.get("chunk"),
             "ppl": j["ppl_codec"], "ppl_ref": j["ppl_f32"], "dppl_pct": 100 * (j["ppl_codec"] / j["ppl_f32"] - 1),
             "kld_mean": j["kld_mean"], "kld_max": j["kld_max"], "top1_agree_pct": j["top1_agree_pct"],
             "bits_per_value": j.get("bits_per_value"), "bits_listed": self.codec_bits.get(label),
             "bytes_per_token": j.get("bytes_per_token"), "seconds": j["seconds"], "wall_s": round(r["wall_s"], 1),
             "peak_rss_bytes": r["maxrss_bytes"]}
        log("  kvlite %-22s ctx %d%s: %.2f b/v  ppl %.4f (f32 %.4f, %+.2f%%)  KLD %.3g  top1 %.2f%%  (%.0f s)" % (
            label, ctx, " exact" if exact else "", x["bits_per_value"] or 0, x["ppl"], x["ppl_ref"], x["dppl_pct"],
            x["kld_mean"], x["top1_agree_pct"], r["wall_s"]))
        return x

    def codec_quality(self, cfgs):
        """eval kld per kvlite config and the llama.cpp KV types at each --codec-ctx (windows: --ppl-windows at
        the first, --ppl4-windows at the second); rows of the quality phase with the same ctx and windows are
        reused instead of measured again."""
        a = self.a
        rows = self.res.setdefault("codecs", [])
        qrows = self.res.get("quality", [])
        for ctx, W in zip(a.codec_ctx, [a.ppl_windows, a.ppl4_windows]):
            def have(lab, errors_too=False):
                """measured at this ctx (a llama.cpp rejection of a KV type counts: it is deterministic)"""
                return any(x["label"] == lab and x["ctx"] == ctx and not x.get("exact") and
                           (errors_too or "error" not in x) for x in rows)

            def reuse(lab, need_kld=True):
                """a copy of the quality phase's row for lab at this ctx and number of windows, or None"""
                for x in qrows:
                    if x.get("label") == lab and x["ctx"] == ctx and x.get("windows") == W and \
                            (x.get("kld_mean") is not None or not need_kld):
                        y = {k: v for k, v in x.items() if k != "window_nll_sum"}
                        y.update({"reused": "quality", "exact": False, "bytes_per_token": x.get("kv_bytes_per_token")})
                        if x.get("ppl_ref"):
                            y["dppl_pct"] = 100 * (x["ppl"] / x["ppl_ref"] - 1)
                        return y
                return None
            for label, flags in cfgs:
                lab = "kvlite " + label
                if have(lab):
                    continue
                rows[:] = [x for x in rows if not (x["label"] == lab and x["ctx"] == ctx and not x.get("exact"))]
                x = reuse(lab) if flags == ["--kv", label] else None
                if x:
                    x.update({"config": label, "flags": flags, "bits_listed": self.codec_bits.get(label),
                              "bits_per_value": 8 * x["bytes_per_token"] / self.values_per_token()
                              if x.get("bytes_per_token") else None})
                    log("  kvlite %s ctx %d: reused from the quality phase" % (label, ctx))
                else:
                    log("codecs: kvlite eval kld %s, ctx %d, %d windows" % (" ".join(flags), ctx, W))
                    x = self.codec_row(label, flags, ctx, W)
                rows.append(x)
                self.save()
            need = [k for k in a.llama_codec_kvs if not have("llama.cpp " + k, errors_too=True)]
            for k in (["f16"] + list(need)) if a.llama_codec_kvs else []:
                if have("llama.cpp " + k):
                    continue
                x = reuse("llama.cpp " + k, need_kld=(k != "f16"))
                if x:
                    x["bits_per_value"] = 8 * LLAMA_KV[k][1]
                    rows.append(x)
                    if k in need:
                        need.remove(k)
                    log("  llama.cpp %s ctx %d: reused from the quality phase" % (k, ctx))
            if a.llama_codec_kvs and (need or not have("llama.cpp f16")):
                self.llama_codec_child(ctx, W, need)
            self.save()

    def llama_codec_child(self, ctx, W, kvs):
        a = self.a
        rows = self.res["codecs"]
        log("codecs: llama.cpp f16 (reference) %s, flash attention, ctx %d, %d windows" % (" ".join(kvs), ctx, W))
        spec = os.path.join(self.tmp, "codec_quality.json")
        with open(spec, "w") as f:
            json.dump({"model": a.model, "tokens": self.wiki_ids_path, "ctx": ctx, "windows": W, "ref": "f16",
                       "kvs": kvs, "threads": a.threads, "n_batch": 512}, f)
        r = run_child([self.py, os.path.abspath(__file__), "--child", "llama-quality", spec],
                      autogroup_nice=self.pb("codecs"))
        if r["rc"] != 0:
            raise RuntimeError("llama quality child failed: " + r["stderr"][-2000:])
        j = last_json(r["stdout"])
        for k, err in j.get("errors", {}).items():
            rows[:] = [x for x in rows if not (x["label"] == "llama.cpp " + k and x["ctx"] == ctx)]
            rows.append({"engine": "llama.cpp", "label": "llama.cpp " + k, "kv": k, "flash_attn": True, "ctx": ctx,
                         "windows": W, "exact": False, "bits_per_value": 8 * LLAMA_KV[k][1], "error": err})
            log("  llama.cpp %-8s ctx %d rejected: %s" % (k, ctx, err))
        for k, e in j["kv"].items():
            if k == "f16" and any(x["label"] == "llama.cpp f16" and x["ctx"] == ctx for x in rows):
                continue
            x = {"engine": "llama.cpp", "label": "llama.cpp " + k, "kv": k, "flash_attn": True,
                 "ref_kv": None if k == "f16" else "f16 FA", "dataset": "wikitext-2/test.txt", "ctx": ctx,
                 "windows": j["windows"], "tokens_scored": j["tokens_scored"], "exact": False, "ppl": e["ppl"],
                 "seconds": e["seconds"], "bits_per_value": 8 * LLAMA_KV[k][1], "bytes_per_token": self.llama_bpt(k)}
            if "kld_mean" in e:
                ppl_ref = j["kv"]["f16"]["ppl"]
                x.update({"ppl_ref": ppl_ref, "dppl_pct": 100 * (e["ppl"] / ppl_ref - 1), "kld_mean": e["kld_mean"],
                          "kld_max": e["kld_max"], "top1_agree_pct": e["top1_agree_pct"]})
            rows.append(x)
            log("  llama.cpp %-8s ctx %d: ppl %.4f%s" % (k, ctx, e["ppl"], "  KLD %.3g  top1 %.2f%%  %+.2f%%" % (
                e["kld_mean"], e["top1_agree_pct"], x["dppl_pct"]) if "kld_mean" in e else " (reference)"))

    def values_per_token(self):
        s = self.shape
        return s["n_layer"] * s["n_head_kv"] * s["head_dim"] * 2

    def codec_exact(self, cfgs):
        """eval kld --exact (exact matmuls in both passes: no 8-bit-activation KLD floor) for --exact-codecs at
        --exact-ctx, --exact-windows windows."""
        a = self.a
        rows = self.res.setdefault("codecs", [])
        ctx, W = a.exact_ctx, a.exact_windows
        for label, flags in cfgs:
            if label not in a.exact_codecs or any(x["label"] == "kvlite " + label and x["ctx"] == ctx and
                                                  x.get("exact") and "error" not in x for x in rows):
                continue
            rows[:] = [x for x in rows if not (x["label"] == "kvlite " + label and x["ctx"] == ctx and x.get("exact"))]
            log("codecs: kvlite eval kld --exact %s, ctx %d, %d windows" % (" ".join(flags), ctx, W))
            rows.append(self.codec_row(label, flags, ctx, W, exact=True))
            self.save()

    def codec_kverror(self, cfgs):
        """`kvlite eval kv-error FLAGS --ctx C` per config (C = the first --codec-ctx, on wikitext-2 test): per-layer
        K/V reconstruction and attention-output error, so a quality loss can be traced to a layer (seconds each)."""
        a = self.a
        ke = self.res.setdefault("codec_kverror", [])
        ctx = a.codec_ctx[0]
        for lab, flags in cfgs:
            if any(x["config"] == lab and "error" not in x for x in ke):
                continue
            ke[:] = [x for x in ke if x["config"] != lab]
            cmd = [self.kvlite, "eval", "kv-error", "-m", a.model, "-f", self.wikitext, "--ctx", str(ctx),
                   "--threads", str(a.threads), "--json"] + flags
            r = run_child(cmd, autogroup_nice=self.pb("codecs"))
            if r["rc"] != 0:
                err = "kvlite eval kv-error %s failed (rc %d): %s" % (" ".join(flags), r["rc"], r["stderr"].strip()[-500:])
                log("  " + err)
                ke.append({"config": lab, "ctx": ctx, "error": err})
                continue
            lines = [json.loads(l) for l in r["stdout"].splitlines() if l.strip().startswith("{")]
            x = dict(lines[0], config=lab, flags=flags)
            x["layers"] = lines[1]["layers"] if len(lines) > 1 else []
            ke.append(x)
            log("  kv-error %-22s K %.2e  V %.2e  attn %.2e  worst layer %s" % (
                lab, x.get("k_rel_mean", 0), x.get("v_rel_mean", 0), x.get("attn_rel_mean", 0), x.get("worst_layer")))
        self.save()

    def codec_speed(self, cfgs):
        """kvlite bench per config and llama.cpp wheel --codec-speed-llama (FA) at --codec-speed-ctx, alternating,
        --codec-speed-reps runs each (median), with the speed phase's machinery (own process, run-queue check)."""
        a = self.a
        c = a.codec_speed_ctx
        P = self.prompt_len(c)
        kl = [("kvlite " + lab, "kvlite", lab, None, None, flags) for lab, flags in cfgs]
        ll = [("llama.cpp %s FA" % k, "llama.cpp", k, True, "wheel") for k in a.codec_speed_llama]
        order = []
        step = max(1, len(kl) // max(1, len(ll)))
        for i, x in enumerate(kl):  # spread the (slow) llama.cpp runs among the kvlite ones
            order.append(x)
            if i % step == 0 and ll:
                order.append(ll.pop(0))
        order += ll
        entries = {}
        for label, engine, kv, fa, build, *rest in order:
            e = {"label": label, "engine": engine, "build": build, "kv": kv, "flash_attn": fa, "ctx": c,
                 "prompt_tokens": P, "gen_tokens": a.gen, "n_ctx": P + a.gen, "threads": a.threads, "n_batch": 512,
                 "runs": [], "discarded_runs": []}
            if rest:
                e["flags"] = rest[0]
            if engine == "llama.cpp":
                e["kv_bytes_per_token"] = self.llama_bpt(kv)
            entries[(c, label)] = e
        for old in self.res.get("codec_speed", []):  # --resume: keep finished runs
            if (old["ctx"], old["label"]) in entries:
                entries[(old["ctx"], old["label"])] = old
        self.res["codec_speed"] = list(entries.values())
        if not hasattr(self, "wait_left"):
            self.wait_left = a.wait_budget
        log("codecs: speed at ctx %d (prompt %d + %d decoded), %d runs of %d configs" % (
            c, P, a.gen, a.codec_speed_reps, len(order)))
        for e in entries.values():  # --resume: a failed config is tried again
            e.pop("error", None)
        self.measure_speed(entries, [(c, a.codec_speed_reps, order)], "codec_speed", tolerate=True)
        vpt = self.values_per_token()
        for e in self.res["codec_speed"]:
            if e.get("kv_bytes_per_token"):
                e["bits_per_value"] = 8 * e["kv_bytes_per_token"] / vpt
        self.save()

    def best3(self, cfgs):
        """The '≤ 3-bit' config for retrieval: among configs whose format is at most 3.0 bits/value (`kvlite codecs`),
        the one with the lowest KLD at the first --codec-ctx; without quality rows, the first such config."""
        a = self.a
        small = [lab for lab, _ in cfgs if (self.codec_bits.get(lab) or 99) <= 3.0]
        kl = {x["config"]: x["kld_mean"] for x in self.res.get("codecs", []) if x["engine"] == "kvlite" and
              x["ctx"] == a.codec_ctx[0] and not x.get("exact") and x.get("kld_mean") is not None}
        scored = sorted((kl[l], l) for l in small if l in kl)
        return scored[0][1] if scored else (small[0] if small else None)

    def codec_retrieval(self, cfgs):
        """kvlite eval needle|passkey|... per --retrieval-codecs config on the retrieval phase's grid; f16 is taken
        from the retrieval phase of this run when it has that task."""
        a = self.a
        byl = dict(cfgs)
        names = []
        for n in a.retrieval_codecs:
            if n == "best3":
                n = self.best3(cfgs)
                if n:
                    log("codecs: best <= 3-bit config for retrieval: %s" % n)
                    self.res["codec_best3"] = n
                else:
                    log("codecs: no config of at most 3.0 bits/value for retrieval (best3)")
            if n and n in byl and n not in names:
                names.append(n)
            elif n and n not in byl:
                log("codecs: retrieval config %s is not among this run's configs, skipped" % n)
        rr = self.res.setdefault("codec_retrieval", [])
        outdir = os.path.join(a.results_dir, "codec_retrieval")
        for task in a.codec_retrieval_tasks:
            for lab in names:
                if any(x["task"] == task and x["config"] == lab and "error" not in x for x in rr):
                    continue
                rr[:] = [x for x in rr if not (x["task"] == task and x["config"] == lab)]
                base = next((x for x in self.res.get("retrieval", []) if x["task"] == task), None)
                if lab == "f16" and byl[lab] == ["--kv", "f16"] and base:
                    rr.append(dict(base, config="f16", label="kvlite f16", reused="retrieval",
                                   bytes_per_token=self.kvlite_bpt("f16")))
                    log("  %s f16: reused from the retrieval phase (%.1f%%)" % (task, 100 * base["score"]))
                    self.save()
                    continue
                cmd = [self.kvlite, "eval", task, "-m", a.model, "--threads", str(a.threads), "--json"] + byl[lab]
                if task != "passkey":
                    cmd += ["--haystack", os.path.join(a.data_dir, "pg_essays")]
                if a.retrieval_lengths:
                    cmd += ["--lengths", a.retrieval_lengths]
                if a.retrieval_seeds:
                    cmd += ["--seeds", str(a.retrieval_seeds)]
                log("codecs: kvlite eval %s %s" % (task, " ".join(cmd[cmd.index("--json") + 1:])))
                r = run_child(cmd, autogroup_nice=self.pb("codecs"))
                if r["rc"] != 0:
                    err = "kvlite eval %s %s failed (rc %d): %s" % (task, " ".join(byl[lab]), r["rc"],
                                                                   r["stderr"].strip()[-1000:])
                    log("  " + err)
                    rr.append({"task": task, "config": lab, "label": "kvlite " + lab, "error": err})
                    self.save()
                    continue
                j = json.loads(r["stdout"])
                x = {"task": task, "config": lab, "label": "kvlite " + lab, "flags": byl[lab], "score": j["score"],
                     "correct": j.get("correct"), "cells_total": j.get("cells_total"), "by_length": j["by_length"],
                     "bytes_per_token": j.get("bytes_per_token"), "seconds": j["seconds"],
                     "peak_rss_bytes": r["maxrss_bytes"]}
                if j.get("bytes_per_token"):
                    x["bits_per_value"] = 8 * j["bytes_per_token"] / self.values_per_token()
                if not a.quick:  # the full answer of every cell, kept beside the peer file
                    os.makedirs(outdir, exist_ok=True)
                    out = os.path.join(outdir, "%s_%s.json" % (task, re.sub(r"[^A-Za-z0-9_.+-]+", "_", lab)))
                    j.update({"kind": "codec-retrieval", "date": now_iso(), "flags": byl[lab],
                              "kvlite_commit": self.res["versions"].get("kvlite_commit")})
                    with open(out + ".tmp", "w") as f:
                        json.dump(j, f, indent=1)
                        f.write("\n")
                    os.replace(out + ".tmp", out)
                    x["file"] = os.path.relpath(out, ROOT)
                rr.append(x)
                log("  %s %s: score %.1f%% %s (%.0f s)" % (task, lab, 100 * j["score"], j["by_length"], j["seconds"]))
                self.save()

    # -- baselines ------------------------------------------------------------
    def phase_baseline(self):
        a = self.a
        b = self.res.setdefault("baseline_ppl", [])  # --resume: rows already measured stay
        for name, path in (("wikitext-2/test.txt", self.wikitext), ("tinyshakespeare/input.txt", self.shakespeare)):
            for ctx in a.baseline_ctx:
                if any(x["dataset"] == name and x["ctx"] == ctx for x in b):
                    continue
                W = max(1, a.baseline_tokens // ctx)
                log("baseline: kvlite eval ppl --kv f16 %s ctx %d, %d windows" % (name, ctx, W))
                cmd = [self.kvlite, "eval", "ppl", "-m", a.model, "-f", path, "--ctx", str(ctx), "--kv", "f16",
                       "--max-windows", str(W), "--threads", str(a.threads), "--json"]
                r = run_child(cmd, autogroup_nice=self.pb("baseline"))
                if r["rc"] != 0:
                    raise RuntimeError("kvlite eval ppl failed: " + r["stderr"][-2000:])
                j = last_json(r["stdout"])
                b.append({"engine": "kvlite", "kv": "f16", "dataset": name, "ctx": ctx, "windows": j["windows"],
                          "tokens_scored": j["tokens_scored"], "ppl": j["ppl"], "nll_mean": j["nll_mean"],
                          "seconds": j["seconds"], "peak_rss_bytes": r["maxrss_bytes"]})
                log("  ppl %.4f (%d tokens, %.0f s)" % (j["ppl"], j["tokens_scored"], j["seconds"]))
                self.save()

    # -- retrieval baselines ---------------------------------------------------
    def phase_retrieval(self):
        """kvlite eval needle|passkey|multikey with the full f16 cache on the default grid (or --retrieval-lengths /
        --retrieval-seeds): bench/results/baseline_retrieval_<task>.json + docs/img/retrieval_<task>.png."""
        a = self.a
        rr = self.res.setdefault("retrieval", [])  # --resume: tasks already measured stay
        for task in a.retrieval_tasks:
            if any(x["task"] == task for x in rr):
                continue
            if a.quick:  # development runs must not overwrite the recorded baselines and heat maps
                out = os.path.join(a.results_dir, "quick_retrieval_%s.json" % task)
                png = os.path.join(a.results_dir, "quick_retrieval_%s.png" % task)
            else:
                out = os.path.join(a.results_dir, "baseline_retrieval_%s.json" % task)
                png = os.path.join(ROOT, "docs", "img", "retrieval_%s.png" % task)
            os.makedirs(os.path.dirname(png), exist_ok=True)
            cmd = [self.kvlite, "eval", task, "-m", a.model, "--kv", "f16", "--threads", str(a.threads), "--json",
                   "--plot", png]
            if task != "passkey":
                cmd += ["--haystack", os.path.join(a.data_dir, "pg_essays")]
            if a.retrieval_lengths:
                cmd += ["--lengths", a.retrieval_lengths]
            if a.retrieval_seeds:
                cmd += ["--seeds", str(a.retrieval_seeds)]
            log("retrieval: kvlite eval %s --kv f16 (%s)" % (task, " ".join(cmd[cmd.index("--json"):])))
            r = run_child(cmd, autogroup_nice=self.pb("retrieval"))
            if r["rc"] != 0:
                raise RuntimeError("kvlite eval %s failed: %s" % (task, r["stderr"][-2000:]))
            j = json.loads(r["stdout"])  # one (multi-line) object
            shown = ["kvlite" if x == self.kvlite else os.path.relpath(x, ROOT) if x.startswith(ROOT + os.sep) else x
                     for x in cmd]
            j.update({"kind": "retrieval", "quick": bool(a.quick), "date": now_iso(), "command": " ".join(shlex.quote(x) for x in shown),
                      "machine": self.res.get("machine"), "kvlite_commit": self.res["versions"].get("kvlite_commit"),
                      "plot": os.path.relpath(png, ROOT), "peak_rss_bytes": r["maxrss_bytes"]})
            tmp = out + ".tmp"
            with open(tmp, "w") as f:
                json.dump(j, f, indent=1)
                f.write("\n")
            os.replace(tmp, out)
            rr.append({"task": task, "file": os.path.relpath(out, ROOT), "score": j["score"],
                       "by_length": j["by_length"], "seconds": j["seconds"]})
            log("  %s score %.1f%% %s (%.0f s)" % (task, 100 * j["score"], j["by_length"], j["seconds"]))
            self.save()

    def run(self):
        a = self.a
        self.wikitext = os.path.join(a.data_dir, "wikitext-2", "test.txt")
        self.shakespeare = os.path.join(a.data_dir, "tinyshakespeare", "input.txt")
        for p in ([self.wikitext] if {"quality", "baseline", "codecs"} & set(a.phases) else []) + \
                 ([self.shakespeare] if "baseline" in a.phases else []):
            if not os.path.exists(p):
                sys.exit("bench: missing data file %s (set --data-dir or KVL_DATA_DIR)" % p)
        self.start()
        log("results -> %s" % self.path)
        # Use a private copy of the binary: others may rebuild build/kvlite during a long run.
        import hashlib
        import shutil
        src = os.path.join(ROOT, a.build, "kvlite")  # after start(): --resume takes the run's --build
        if not os.path.exists(src):
            sys.exit("bench: %s not found (run make)" % src)
        self.kvlite = os.path.join(self.tmp, "kvlite")
        shutil.copy2(src, self.kvlite)
        with open(self.kvlite, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        old_sha = self.res["versions"].get("kvlite_binary_sha256")
        if old_sha and old_sha != sha:  # --resume with a rebuilt binary: say so
            self.res["notes"].append("resumed %s with another kvlite binary (sha256 %s..., commit %s) for phases %s" % (
                now_iso(), sha[:12], git_commit(), ",".join(a.phases)))
        self.res["versions"]["kvlite_binary_sha256"] = sha
        self.llama_bench = a.llama_bench or None
        native = [c[0] for c in SPEED_CONFIGS if c[4] == "native" and c[0] in a.speed_configs]
        if native and "speed" in a.phases:
            if not self.llama_bench:
                a.speed_configs = [x for x in a.speed_configs if x not in native]
                self.res["args"]["speed_configs"] = a.speed_configs
                self.res["notes"].append("native llama.cpp (llama-bench) not measured: --llama-bench ''")
            elif not os.access(self.llama_bench, os.X_OK):
                sys.exit("bench: %s not found: run bench/build_llama_native.sh (or pass --llama-bench '' to "
                         "leave out %s)" % (self.llama_bench, ", ".join(native)))
        self.res["versions"]["kvlite_binary_mtime"] = datetime.datetime.fromtimestamp(
            os.path.getmtime(src)).astimezone().isoformat(timespec="seconds")
        self.boost = None
        if a.priority_boost:
            if autogroup_boost_works(a.priority_boost):
                self.boost = a.priority_boost
                log("measured processes get their own scheduler autogroup at nice %d (%s)" % (
                    self.boost, ",".join(a.boost_phases)))
            else:
                log("cannot raise the measured processes' autogroup priority (not root or autogroup off); "
                    "running as is")
        self.res["speed_priority_boost"] = self.boost if "speed" in a.boost_phases else None
        self.res["priority_boost"] = {"autogroup_nice": self.boost, "phases": a.boost_phases}
        self.setup()
        self.save()
        if "speed" in a.phases and a.contexts:
            self.phase_speed()
        if "quality" in a.phases:
            self.phase_quality()
        if "baseline" in a.phases:
            self.phase_baseline()
        if "retrieval" in a.phases:
            self.phase_retrieval()
        if "codecs" in a.phases:
            self.phase_codecs()
        self.res["finished"] = now_iso()
        self.save(complete=True)
        import shutil
        shutil.rmtree(self.tmp, ignore_errors=True)
        log("done in %.1f min -> %s" % ((time.time() - self.t_start) / 60, self.path))


def default_data_dir():
    for d in (os.environ.get("KVL_DATA_DIR"), "/work/shared/data", os.path.join(ROOT, "shared", "data"),
              os.path.join(os.path.dirname(ROOT), "shared", "data")):
        if d and os.path.isdir(d):
            return d
    return "/work/shared/data"


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        with open(sys.argv[3]) as f:
            spec = json.load(f)
        CHILDREN[sys.argv[2]](spec)
        return
    ap = argparse.ArgumentParser(description="kvlite vs llama.cpp benchmark (see bench/README.md)")
    ap.add_argument("--resume", nargs="?", const="latest", default=None, metavar="FILE",
                    help="continue an interrupted run (default: bench/results/latest.json) with its own settings, "
                         "skipping what it already measured")
    ap.add_argument("--quick", action="store_true", help="development mode: ctx 128/1024, 2 reps, 2 ppl windows")
    ap.add_argument("--model", default=os.environ.get("KVL_MODEL") or DEFAULT_MODEL)
    ap.add_argument("--data-dir", default=default_data_dir())
    ap.add_argument("--build", default="build", help="kvlite build dir (relative to the repo)")
    ap.add_argument("--results-dir", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--phases", default="speed,quality,baseline,retrieval,codecs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--contexts", default=None, help="speed contexts, default 128,1024,4096,8192")
    ap.add_argument("--reps", type=int, default=None, help="runs per speed config (median), default 5")
    ap.add_argument("--reps-long", type=int, default=None,
                    help="runs per speed config at contexts >= --long-ctx, default 3 (one 8192 run of llama.cpp "
                         "with a quantized KV cache and flash attention prefills for 3-7 minutes)")
    ap.add_argument("--reps-at", default=None, metavar="CTX:N,...",
                    help="runs per speed config at these contexts, overriding --reps / --reps-long (e.g. 8192:2)")
    ap.add_argument("--long-ctx", type=int, default=4096)
    ap.add_argument("--gen", type=int, default=64, help="decoded tokens per speed run")
    ap.add_argument("--max-ctx", type=int, default=8192,
                    help="largest n_ctx; prompts shrink so prompt + gen fits (ctx 8192 -> 8128 + 64)")
    ap.add_argument("--speed-configs", default=",".join(c[0] for c in SPEED_CONFIGS))
    ap.add_argument("--long-configs", default=",".join(LONG_CONFIGS),
                    help="the speed configs also measured at contexts >= --long-ctx (default: kvlite f16/int8 and "
                         "every llama.cpp f16 and q8_0 config, wheel and native; kvlite f32 and llama.cpp q4_0 "
                         "are left out there); 'all' for every config")
    ap.add_argument("--llama-bench", default=os.environ.get("KVL_LLAMA_BENCH") or DEFAULT_LLAMA_BENCH,
                    help="native llama-bench binary (bench/build_llama_native.sh builds it) for the 'llama.cpp "
                         "native' speed configs; '' leaves those configs out")
    ap.add_argument("--ppl-ctx", type=int, default=1024)
    ap.add_argument("--ppl-windows", type=int, default=None, help="quality windows, default 40")
    ap.add_argument("--quality-codecs", default="f32,f16,int8",
                    help="kvlite codecs of the quality phase (the codecs phase measures every codec)")
    ap.add_argument("--llama-kvs", default="f16,q8_0,q5_0,q4_1,q4_0,iq4_nl,f16-noFA",
                    help="llama.cpp KV types for the quality phase (flash attention on; TYPE-noFA = off); "
                         "the first is the KLD reference")
    g = ap.add_argument_group("codecs phase (issue 8: every KV codec vs llama.cpp's KV types)")
    g.add_argument("--kvlite-codecs", default="auto",
                   help="kvlite KV specs, comma-separated; auto = every codec `kvlite codecs --json` lists except f32, "
                        "plus %s; names the build does not list are skipped (noted)" % ", ".join(CODEC_EXTRA))
    g.add_argument("--kvlite-mixed", action="append", default=None, metavar="LABEL=FLAGS",
                   help="a mixed-precision config: its label and its kvlite flags (repeatable; default %r; "
                        "'none' for none)" % CODEC_MIXED[0])
    g.add_argument("--codec-ctx", default=None, help="the two quality contexts, default 1024,4096 (quick: 256,512)")
    g.add_argument("--ppl4-windows", type=int, default=None,
                   help="windows at the second --codec-ctx, default 10 (the first uses --ppl-windows)")
    g.add_argument("--llama-codec-kvs", default=",".join(LLAMA_CODEC_KVS),
                   help="llama.cpp KV types (flash attention on) measured against its f16 cache at both contexts")
    g.add_argument("--exact-codecs", default="f16,int8,fp8", help="configs also measured with eval kld --exact")
    g.add_argument("--exact-windows", type=int, default=None,
                   help="windows of the --exact runs, default 1 (0 = none; --exact runs ~3 tok/s on 2 cores)")
    g.add_argument("--exact-ctx", type=int, default=None, help="context of the --exact runs, default the first --codec-ctx")
    g.add_argument("--codec-speed-ctx", type=int, default=None, help="speed context, default 8192 (quick 512)")
    g.add_argument("--codec-speed-reps", type=int, default=None, help="runs per speed config, default 3 (quick 1)")
    g.add_argument("--codec-speed-llama", default="f16,q4_0",
                   help="llama.cpp KV types (wheel, flash attention on) measured beside the codecs")
    g.add_argument("--retrieval-codecs", default="f16,int8,int4,kivi4,kivi2,best3",
                   help="configs of the per-codec retrieval runs; best3 = the lowest-KLD config of at most 3.0 "
                        "bits/value")
    g.add_argument("--codec-retrieval-tasks", default="needle,passkey", help="e.g. needle,passkey,multikey")
    g.add_argument("--codec-steps", default="quality,exact,kverror,speed,retrieval",
                   help="parts of the codecs phase to run")
    ap.add_argument("--baseline-ctx", default=None, help="default 1024,4096,8192")
    ap.add_argument("--baseline-tokens", type=int, default=None,
                    help="tokens per baseline run (windows = tokens // ctx, at least 1), default 16384")
    ap.add_argument("--retrieval-tasks", default="needle,passkey,multikey")
    ap.add_argument("--retrieval-lengths", default=None,
                    help="prompt lengths for the retrieval baselines (default: kvlite's default grid)")
    ap.add_argument("--retrieval-seeds", type=int, default=None, help="default: kvlite's default")
    ap.add_argument("--quiet-threshold", type=float, default=0.10,
                    help="share of a speed run's thread time spent runnable but waiting for a CPU "
                         "(/proc/PID/task/*/schedstat) above which the run counts as disturbed and is rerun")
    ap.add_argument("--priority-boost", type=int, default=-20,
                    help="run each speed child in its own session (scheduler autogroup) with this autogroup nice, "
                         "so background jobs (even niced ones in other autogroups) barely disturb the timing; "
                         "0 = off. Needs root and kernel.sched_autogroup_enabled=1")
    ap.add_argument("--boost-phases", default="speed,quality,baseline,retrieval,codecs",
                    help="phases whose processes get --priority-boost (llama.cpp's spinning barriers slow it "
                         "down many times on a shared machine, in the quality phase too)")
    ap.add_argument("--max-wait", type=float, default=0,
                    help="seconds to wait for a quiet machine before each speed run (0 = don't wait)")
    ap.add_argument("--wait-budget", type=float, default=900,
                    help="total seconds the speed phase may spend waiting for quiet; reruns stop when spent")
    ap.add_argument("--retries", type=int, default=1, help="reruns of a disturbed speed run")
    ap.add_argument("--nice", type=int, default=0, help="nice increment for speed children")
    ap.add_argument("--run-timeout", type=float, default=1800)
    a = ap.parse_args()
    a.explicit = sorted(k for k, v in vars(a).items() if v != ap.get_default(k) and k != "resume")
    q = a.quick
    a.contexts = [int(x) for x in (a.contexts or ("128,1024" if q else "128,1024,4096,8192")).split(",") if x]
    a.reps = a.reps or (2 if q else 5)
    a.reps_long = a.reps_long or min(a.reps, 2 if q else 5)
    a.ppl_windows = a.ppl_windows or (2 if q else 40)
    a.baseline_ctx = [int(x) for x in (a.baseline_ctx or ("1024" if q else "1024,4096,8192")).split(",") if x]
    a.baseline_tokens = a.baseline_tokens or (1024 if q else 16384)
    a.phases = [p for p in a.phases.split(",") if p]
    a.boost_phases = [p for p in a.boost_phases.split(",") if p]
    a.speed_configs = [s.strip() for s in a.speed_configs.split(",") if s.strip()]
    a.reps_at = {k.strip(): int(v) for k, v in (x.split(":") for x in (a.reps_at or "").split(",") if x.strip())}
    known = {c[0] for c in SPEED_CONFIGS}
    bad = [x for x in a.speed_configs if x not in known]
    if bad:
        sys.exit("bench: unknown speed configs %s (known: %s)" % (bad, ", ".join(sorted(known))))
    a.long_configs = None if a.long_configs == "all" else [s.strip() for s in a.long_configs.split(",") if s.strip()]
    a.quality_codecs = [s for s in a.quality_codecs.split(",") if s]
    a.llama_kvs = [s for s in a.llama_kvs.split(",") if s]
    a.kvlite_codecs = [s.strip() for s in a.kvlite_codecs.split(",") if s.strip()]
    a.kvlite_mixed = a.kvlite_mixed or list(CODEC_MIXED)
    a.codec_ctx = [int(x) for x in (a.codec_ctx or ("256,512" if q else "1024,4096")).split(",") if x]
    if len(a.codec_ctx) not in (1, 2):
        sys.exit("bench: --codec-ctx takes one or two contexts")
    a.ppl4_windows = a.ppl4_windows or (1 if q else 10)
    a.llama_codec_kvs = [s for s in a.llama_codec_kvs.split(",") if s]
    bad = [k for k in a.llama_codec_kvs + [k.split("-")[0] for k in a.llama_kvs] if k not in LLAMA_KV]
    if bad:
        sys.exit("bench: unknown llama.cpp KV types %s (known: %s)" % (bad, ", ".join(LLAMA_KV)))
    a.exact_codecs = [s for s in a.exact_codecs.split(",") if s]
    a.exact_windows = 1 if a.exact_windows is None else a.exact_windows
    a.exact_ctx = a.exact_ctx or (128 if q else a.codec_ctx[0])
    a.codec_speed_ctx = a.codec_speed_ctx or (512 if q else 8192)
    a.codec_speed_reps = a.codec_speed_reps or (1 if q else 3)
    a.codec_speed_llama = [s for s in a.codec_speed_llama.split(",") if s]
    a.retrieval_codecs = [s for s in a.retrieval_codecs.split(",") if s]
    a.codec_retrieval_tasks = [s for s in a.codec_retrieval_tasks.split(",") if s]
    a.codec_steps = [s for s in a.codec_steps.split(",") if s]
    a.retrieval_tasks = [s for s in a.retrieval_tasks.split(",") if s]
    if q and not a.retrieval_lengths:  # development runs: one short length, one seed
        a.retrieval_lengths, a.retrieval_seeds = "512", a.retrieval_seeds or 1
    if q:  # development runs: don't rerun disturbed runs
        a.retries = 0 if a.retries == 1 else a.retries
    if not os.path.exists(a.model):
        sys.exit("bench: model not found: %s (run `make model`)" % a.model)
    Bench(a).run()


if __name__ == "__main__":
    main()
