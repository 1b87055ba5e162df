#!/usr/bin/env bash
# Run every libFuzzer target in FUZZ_DIR (default build-fuzz; built by
# `make fuzz`) for SECONDS each (default 60), starting from a scratch copy of
# its committed seed corpus tests/fuzz/corpus/<target>/ (so the committed
# corpus is never modified; a target without one starts empty). New inputs
# found stay in FUZZ_DIR/corpus/<target>/ (kept between runs, on top of the
# seeds); crash, leak, timeout and OOM inputs are written to
# FUZZ_DIR/artifacts/<target>-crash-<sha1> etc. and fail the run. Reproduce
# one with: FUZZ_DIR/<target> FUZZ_DIR/artifacts/<file>
#
# Usage: tests/fuzz/run.sh [FUZZ_DIR [SECONDS]]
# Extra libFuzzer flags: FUZZ_FLAGS="-jobs=2 -workers=2" tests/fuzz/run.sh
set -u
cd "$(dirname "$0")/../.."
DIR=${1:-build-fuzz}
SECS=${2:-60}
shopt -s nullglob
targets=()
for t in "$DIR"/fuzz_*; do
    case "$t" in *.d|*.log) continue;; esac
    [ -f "$t" ] && [ -x "$t" ] && targets+=("$t")
done
if [ ${#targets[@]} -eq 0 ]; then
    echo "fuzz: no targets in $DIR (run make fuzz)" >&2
    exit 1
fi
mkdir -p "$DIR/artifacts" "$DIR/corpus"
fail=0
summary=()
for t in "${targets[@]}"; do
    name=$(basename "$t")
    seeds="tests/fuzz/corpus/$name"
    work="$DIR/corpus/$name"
    mkdir -p "$work"
    if [ -d "$seeds" ]; then
        cp -f "$seeds"/* "$work"/ 2>/dev/null || true
    else
        echo "fuzz: note: $name has no seed corpus $seeds/ (starting empty)"
    fi
    log="$DIR/$name.log"
    n_before=$(find "$work" -type f | wc -l)
    start=$(date +%s)
    # -timeout: one input may take at most 10 s; -rss_limit_mb: OOM is a bug;
    # ASan leak detection on (default); -print_final_stats for the summary.
    # shellcheck disable=SC2086
    "$t" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$DIR/artifacts/$name-" ${FUZZ_FLAGS:-} "$work" >"$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1)
    n_after=$(find "$work" -type f | wc -l)
    if [ $rc -ne 0 ]; then
        fail=1
        echo "FAIL fuzz $name (exit $rc after ${secs}s); log $log:"
        grep -vE '^#[0-9]+' "$log" | grep -vE '^"|Dictionary|End of recommended' | tail -60
        ls -1 "$DIR/artifacts/$name-"* 2>/dev/null | sed 's/^/  artifact: /'
        summary+=("FAIL $name")
    else
        echo "ok   fuzz $name: ${execs:-?} runs in ${secs}s, ${cov:-cov ?}, corpus $n_before -> $n_after"
        summary+=("ok $name")
    fi
done
echo "fuzz: ${summary[*]}"
exit $fail
