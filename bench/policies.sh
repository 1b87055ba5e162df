#!/usr/bin/env bash
# KV eviction policy benchmark (issue 9): retrieval (needle, passkey,
# multikey) per policy x keep x mode, perplexity of 8K-token windows under a
# 1K-token budget, a <=3-bit codec composed with 10% kept, and valid-seed
# tuning of the pooling kernel. Each run writes one JSON into OUT (default
# bench/results/policies); runs whose JSON exists are skipped, so an
# interrupted run resumes. bench/policy_report.py turns OUT into tables and
# heat maps (bench/results/policies.md, docs/img/policy_*.png).
#   bench/policies.sh [OUT]        all phases (~3-5 h on 2 cores)
#   PHASES="needle ppl" bench/policies.sh   a subset
# Grid (GRID overrides): lengths 1024,2048 x depths 10,30,50,70,90 x 1 seed
# (10 cells, sized for 2 cores: ~2 min a run), reported seed 0; tuning
# runs use --seed-base 1000 (disjoint prompts).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-bench/results/policies}"
MODEL="${KVL_MODEL:-$HOME/.cache/kvlite/SmolLM2-135M-Instruct.Q4_1.gguf}"
KV=./build/kvlite
PHASES="${PHASES:-needle ppl tune codec passkey multikey needle_ext kld}"
GRID="${GRID:---lengths 1024,2048 --depths 10,30,50,70,90 --seeds 1}"
POLICIES="streaming h2o tova snapkv pyramidkv veda cake"
mkdir -p "$OUT"
[ -x "$KV" ] || make -j2 all >/dev/null
log() { echo "[policies.sh $(date +%H:%M:%S)] $*" >&2; }

# run NAME CMD...: the JSON of one eval into $OUT/NAME.json (skipped when present)
run() {
    local name=$1
    shift
    local f="$OUT/$name.json"
    [ -s "$f" ] && return 0
    log "$name"
    if "$@" --json >"$f.tmp" 2>"$OUT/$name.log"; then mv "$f.tmp" "$f"; else log "FAILED $name (see $OUT/$name.log)"; rm -f "$f.tmp"; fi
}

ret() { # task policy keep mode [extra...]
    local task=$1 pol=$2 keep=$3 mode=$4
    shift 4
    local tag="${task}__${pol//[:=,+]/_}__${keep%\%}__${mode}${SUFFIX:-}"
    local args=(eval "$task" -m "$MODEL" $GRID)
    if [ "$pol" != full ]; then args+=(--kv-policy "$pol" --kv-keep "$keep"); fi
    [ "$mode" = qa ] || args+=(--query-agnostic)
    run "$tag" "$KV" "${args[@]}" "$@"
}

for phase in $PHASES; do
    case $phase in
    needle) # the headline: 10% and 25% kept question-aware, 25% query-agnostic, every policy
        ret needle full 100% qa
        for p in $POLICIES; do ret needle "$p" 10% qa; done
        for p in $POLICIES; do ret needle "$p" 25% qa; done
        for p in $POLICIES; do ret needle "$p" 25% qagn; done ;;
    tune) # pooling kernel of the window policies, chosen on valid prompts (--seed-base 1000, 3 seeds)
        TG="--lengths 1024,2048 --depths 10,30,50,70,90 --seeds 3 --seed-base 1000"
        for p in snapkv cake; do
            for k in 7 15 31 63; do
                tag="tune__${p}_pool${k}__10"
                run "$tag" "$KV" eval needle -m "$MODEL" $TG --kv-policy "$p:pool=$k" --kv-keep 10%
            done
        done
        run tune__full "$KV" eval needle -m "$MODEL" $TG
        # the kernel with the best valid score, then on the reported seeds
        for p in snapkv cake; do
            best=$(python3 -c "
import json,sys
s={k: json.load(open('$OUT/tune__${p}_pool%d__10.json' % k))['score'] for k in (7,15,31,63)}
print(max(sorted(s), key=lambda k: s[k]))" 2>/dev/null) || continue
            echo "$best" >"$OUT/tuned_pool_$p.txt"
            for km in 10%:qa 25%:qa 25%:qagn 10%:qagn; do ret needle "$p:pool=$best" "${km%%:*}" "${km##*:}"; done
        done ;;
    ppl) # 8K-token windows of wikitext-2 test under a 1K-token budget
        T=../shared/data/wikitext-2/test.txt
        run ppl__full "$KV" eval ppl -m "$MODEL" -f "$T" --ctx 8192 --max-windows 2
        for p in $POLICIES; do
            run "ppl__${p}" "$KV" eval ppl -m "$MODEL" -f "$T" --ctx 8192 --max-windows 2 --kv-policy "$p" --kv-keep 1024
        done ;;
    codec) # <= 3-bit codec x 10% kept, and the f16 bytes it is compared to
        for c in kivi3z:fit=mse kivi2z+rot; do
            for p in snapkv cake; do SUFFIX="__${c//[:=,+]/_}" ret needle "$p" 10% qa --kv "$c"; done
            SUFFIX="__${c//[:=,+]/_}" ret needle full 100% qa --kv "$c"
        done ;;
    codec_tuned) # the same with the pooling kernel chosen on valid prompts, 10% and 25% kept
        for p in snapkv cake; do
            best=$(cat "$OUT/tuned_pool_$p.txt" 2>/dev/null) || continue
            for c in kivi3z:fit=mse kivi2z+rot; do
                for keep in 10% 25%; do SUFFIX="__${c//[:=,+]/_}" ret needle "$p:pool=$best" "$keep" qa --kv "$c"; done
            done
        done ;;
    speed) # decode at 8K context: full cache vs 10% kept (run on an otherwise idle machine)
        run speed__full "$KV" bench -m "$MODEL" --prompt 8192 --gen 64 --reps 2
        for p in streaming h2o snapkv cake; do
            run "speed__$p" "$KV" bench -m "$MODEL" --prompt 8192 --gen 64 --reps 2 --kv-policy "$p" --kv-keep 10%
        done ;;
    needle_ext) # 5% and 50% kept, question-aware; 10% query-agnostic
        for p in $POLICIES; do ret needle "$p" 10% qagn; done
        for keep in 5% 50%; do
            for p in $POLICIES; do ret needle "$p" "$keep" qa; done
        done ;;
    kld) # KLD vs the f32 full cache at ctx 1024, 25% kept: points for the quality-vs-bytes chart
        T=../shared/data/wikitext-2/test.txt
        for p in streaming h2o snapkv cake; do
            for keep in 25%; do
                run "kld__${p}__${keep%\%}" "$KV" eval kld -m "$MODEL" -f "$T" --ctx 1024 --max-windows 5 --kv f16 --kv-policy "$p" --kv-keep "$keep"
            done
        done
        run kld__full "$KV" eval kld -m "$MODEL" -f "$T" --ctx 1024 --max-windows 5 --kv f16 ;;
    passkey | multikey)
        ret "$phase" full 100% qa
        for p in $POLICIES; do ret "$phase" "$p" 10% qa; done ;;
    esac
done
log "done"
