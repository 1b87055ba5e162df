#!/usr/bin/env bash
# `kvlite run --exact` reproduces transformers' greedy decoding token for token.
# tests/data/ref_greedy.txt (scripts/ref_greedy.py: transformers, float32, same
# GGUF) holds 6 prompts (code, numbers, French, German, a list, one --chat
# turn), their token ids and 40 greedy ids each. For every prompt this
# runs
#   kvlite run --exact --temp 0 -n 40 --kv f32 --ids --stats -p TEXT [--chat]
# and requires: the prompt ids kvlite fed the model equal the reference's (so
# tokenizer drift is reported as such), the generated ids equal the reference
# ids up to its first end-of-generation id (where run stops), stdout equals the
# reference's decoded continuation, and --stats says "matmul: exact".
# The default path (8-bit activation blocks) is run too and how far it follows
# the reference is printed as a note, not asserted: it diverges on 6 of the 6
# prompts, so this test fails if --exact is ignored.
# KVL_EXACT_KV=f16 checks another KV codec instead of f32 (reported in the
# measured: f16 also matches all 6). Needs KVL_MODEL; skipped without it.
# Ends with "N passed, N failed"; exits non-zero on any failure.
set -u
BIN="${KVLITE_BIN:-${BUILD:-build}/kvlite}"
MODEL="${KVL_MODEL:-}"
DUMP="${KVL_GREEDY_REF:-tests/data/ref_greedy.txt}"
KV="${KVL_EXACT_KV:-f32}"

if [ -z "$MODEL" ] || [ ! -f "$MODEL" ]; then
    echo "skipped: test_exact needs KVL_MODEL"
    echo "0 passed, 0 failed"
    exit 0
fi
if [ ! -x "$BIN" ] || [ ! -f "$DUMP" ]; then
    echo "FAIL: $BIN or $DUMP missing" >&2
    echo "0 passed, 1 failed"
    exit 1
fi

python3 - "$BIN" "$MODEL" "$DUMP" "$KV" <<'EOF'
import json, subprocess, sys

BIN, MODEL, DUMP, KV = sys.argv[1:5]
passed = failed = 0

def check(ok, msg):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print("FAIL: " + msg, file=sys.stderr)

def load(path):
    recs, cur = [], None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            key, _, rest = line.partition(" ")
            w = rest.split()
            if key == "prompt":
                cur = {"name": w[0], "mode": w[1]}
            elif key in ("text", "continuation"):
                cur[key] = json.loads(rest)
            elif key in ("prompt_ids", "greedy"):
                cur[key] = [int(x) for x in w[1:]]
                assert len(cur[key]) == int(w[0]), (cur["name"], key)
            elif key == "margins":
                cur[key] = [float(x) for x in w[1:]]
            elif key == "eog":
                cur[key] = int(w[0])
            elif key == "end":
                recs.append(cur)
    return recs

def run(r, extra):
    cmd = [BIN, "run", "-m", MODEL, "--temp", "0", "-n", str(len(r["greedy"])), "--ids", "-p", r["text"]]
    cmd += (["--chat"] if r["mode"] == "chat" else []) + extra
    p = subprocess.run(cmd, capture_output=True, timeout=600)
    err = p.stderr.decode("utf-8", "replace")
    ids = {}
    for l in err.splitlines():
        for k in ("prompt ids", "generated ids"):
            if l.startswith(k + ":"):
                ids[k] = [int(x) for x in l[len(k) + 1:].split()]
    return p.returncode, p.stdout.decode("utf-8", "replace"), err, ids.get("prompt ids"), ids.get("generated ids", [])

def first_diff(a, b):
    return next((i for i in range(max(len(a), len(b))) if i >= len(a) or i >= len(b) or a[i] != b[i]), -1)

recs = load(DUMP)
check(len(recs) >= 6, f"{DUMP}: {len(recs)} prompts")
same_exact = 0
default_div = []
for r in recs:
    n_cmp = r["eog"] if r["eog"] >= 0 else len(r["greedy"])
    want = r["greedy"][:n_cmp]
    rc, out, err, pids, gen = run(r, ["--exact", "--kv", KV, "--stats"])
    name = f"{r['name']} (--exact --kv {KV})"
    check(rc == 0, f"{name}: exit {rc}: {err[-300:]}")
    check(pids == r["prompt_ids"], f"{name}: prompt ids {pids} != reference {r['prompt_ids']} (tokenizer/template)")
    d = first_diff(gen, want)
    if d >= 0 and d < len(r.get("margins", [])) and d < len(want):
        why = f"first diff at step {d}: got {gen[d] if d < len(gen) else None}, ref {want[d]} (ref margin {r['margins'][d]:.4f})"
    else:
        why = f"first diff at step {d}"
    check(d < 0, f"{name}: generated {len(gen)} ids, reference {len(want)}; {why}")
    check(out == r["continuation"], f"{name}: stdout {out!r} != reference {r['continuation']!r}")
    check("matmul:           exact" in err, f"{name}: --stats does not report the exact matmul path")
    same_exact += d < 0
    # the default (8-bit activation) path, for the note only
    rc, out, err, pids, gen = run(r, ["--kv", KV])
    dd = first_diff(gen, want)
    if dd >= 0:
        default_div.append(f"{r['name']}@{dd}")
    check(rc == 0, f"{r['name']} default path: exit {rc}: {err[-300:]}")

# --exact on the other commands: accepted, and echoed as "exact" in --json
import os, tempfile
with tempfile.TemporaryDirectory() as tmp:
    txt = os.path.join(tmp, "text.txt")
    with open(txt, "w") as f:
        f.write("The sun rose slowly over the quiet village, and the baker opened his shop. " * 4)
    def js(args):
        p = subprocess.run([BIN] + args + ["-m", MODEL, "--json"], capture_output=True, timeout=600)
        try:
            return p.returncode, json.loads(p.stdout)
        except ValueError:
            return p.returncode, {"stdout": p.stdout[:300], "stderr": p.stderr[-300:]}
    for args in (["bench", "--prompt", "8", "--gen", "2", "--reps", "1"],
                 ["eval", "ppl", "-f", txt, "--ctx", "16", "--max-windows", "1"],
                 ["eval", "kld", "-f", txt, "--ctx", "16", "--max-windows", "1", "--kv", "f16"]):
        for ex in (True, False):
            rc, d = js(args + (["--exact"] if ex else []))
            check(rc == 0 and d.get("exact") is ex, f"{' '.join(args[:2])} {'--exact ' if ex else ''}--json: exit {rc}, {d}")
    p = subprocess.run([BIN, "tokenize", "-m", MODEL, "-p", "hi", "--exact"], capture_output=True, timeout=60)
    check(p.returncode == 2 and not p.stdout, f"tokenize --exact: exit {p.returncode} (want usage error 2)")

print(f"measured: run --exact --kv {KV}: {same_exact}/{len(recs)} prompts reproduce transformers' greedy ids exactly")
print(f"note: without --exact (8-bit activations, --kv {KV}) {len(default_div)}/{len(recs)} prompts diverge "
      f"from transformers within 40 tokens ({', '.join(default_div) or 'none'}: prompt@first differing step)")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
EOF
