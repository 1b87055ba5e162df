#!/usr/bin/env bash
# make demo: the KV codecs kvlite has, one chat answer with the full f16
# cache and the same question with a 4-bit KIVI cache (keys per channel, values
# per token, newest page kept in f16), each with its KV bytes; the answer under
# an H2O eviction budget; a chat session continued by a second process; the KV
# of a paragraph as int8 pages and as a CacheGen file, verified and reloaded;
# retrieval chunks reused at new positions with CacheBlend against a full prefill.
set -euo pipefail
CLI=${CLI:-build/kvlite}
MODEL=${MODEL:-$HOME/.cache/kvlite/SmolLM2-135M-Instruct.Q4_1.gguf}
Q="In two sentences, why does a KV cache speed up LLM inference?"
echo "== kvlite codecs"
"$CLI" codecs
for kv in f16 kivi4; do
    echo
    echo "== kvlite run --chat --kv $kv"
    "$CLI" run -m "$MODEL" --chat --temp 0 -n 96 --kv "$kv" --stats -p "$Q" 2> >(grep -E "KV cache|KV per token|decode|prefill" >&2)
    echo
done

echo "== bounded KV: the same answer keeping 64 tokens per layer and kv-head (H2O eviction)"
"$CLI" run -m "$MODEL" --chat --temp 0 -n 64 --kv-policy h2o --kv-keep 64 --stats -p "$Q" 2> >(grep -E "KV cache|evicted|policy" >&2)
echo

TMPD=$(mktemp -d)
trap 'rm -rf "$TMPD"' EXIT
echo "== sessions: a chat saved after its turn, then continued by a new process without re-prefilling"
echo "My name is Ada. Say hello." | "$CLI" chat -m "$MODEL" --temp 0 -n 24 --session demo --store "$TMPD" 2> >(grep -E "session" >&2)
echo
echo "What is my name?" | "$CLI" chat -m "$MODEL" --temp 0 -n 24 --session demo --store "$TMPD" 2> >(grep -E "session" >&2)
echo

echo "== CacheGen: the KV of a text, entropy-coded at level 1, verified without the model"
printf '%s\n' "A key-value cache stores the attention keys and values of every token a model has seen, so each new token attends to them instead of recomputing the whole prefix. It grows with every token, and for long agent contexts it outgrows the model weights; quantizing it, evicting the tokens that matter least, and moving it compressed between servers are what kvlite is for." >"$TMPD/p1.txt"
cat "$TMPD/p1.txt" "$TMPD/p1.txt" "$TMPD/p1.txt" "$TMPD/p1.txt" >"$TMPD/para.txt"
"$CLI" kv export -m "$MODEL" -f "$TMPD/para.txt" -o "$TMPD/para.kv" --kv int8 2>/dev/null
"$CLI" kv export -m "$MODEL" -f "$TMPD/para.txt" -o "$TMPD/para.cg" --level 1 2>/dev/null
echo "int8 pages (session file): $(wc -c <"$TMPD/para.kv") bytes; CacheGen level 1: $(wc -c <"$TMPD/para.cg") bytes"
"$CLI" kv info "$TMPD/para.cg" | head -4
"$CLI" kv import -m "$MODEL" -i "$TMPD/para.cg" -p " In short," -n 24 --temp 0 2> >(grep -E "loaded" >&2)
echo

echo "== CacheBlend: RAG chunks reused at any position (prefix caching misses them), 15% of their tokens recomputed"
"$CLI" eval rag -m "$MODEL" --chunks 4 --chunk-tokens 128 --seeds 1 --questions 2 --blend-ratio 0.15 2>&1 | grep -v "^rag"
