#!/usr/bin/env bash
# make demo: the KV codecs kvlite has, then one chat answer with the full f16
# cache and the same question with a 4-bit KIVI cache (keys per channel, values
# per token, newest page kept in f16), each with its KV bytes.
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
