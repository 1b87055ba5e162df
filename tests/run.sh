#!/usr/bin/env bash
# Run every test binary in $BUILD/tests and print an aggregate
# "N passed, N failed" line. KVL_MODEL (if set and present) enables the tests
# that need the default model; they skip themselves otherwise.
set -u
BUILD="${BUILD:-build}"
total_p=0; total_f=0; bad=0
for t in "$BUILD"/tests/test_*; do
    case "$t" in *.d) continue;; esac
    [ -x "$t" ] || continue
    out=$("$t" 2>&1); rc=$?
    line=$(printf '%s\n' "$out" | grep -E '[0-9]+ passed, [0-9]+ failed' | tail -1)
    p=$(printf '%s' "$line" | sed -nE 's/.* ([0-9]+) passed.*/\1/p'); p=${p:-0}
    f=$(printf '%s' "$line" | sed -nE 's/.* ([0-9]+) failed.*/\1/p'); f=${f:-0}
    if [ $rc -ne 0 ] || [ -z "$line" ]; then
        printf '%s\n' "$out" | tail -40
        echo "FAIL $t (exit $rc)"
        bad=1
        [ "$f" = 0 ] && f=1
    else
        echo "ok   $t: $p checks"
    fi
    total_p=$((total_p + p)); total_f=$((total_f + f))
done
echo "tests: $total_p passed, $total_f failed"
[ $bad -eq 0 ] && [ $total_f -eq 0 ]
