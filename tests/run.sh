#!/usr/bin/env bash
# Run every test binary in $BUILD/tests and every tests/test_*.sh script and
# print an aggregate "tests: N passed, N failed, N skipped" line. KVL_MODEL (if
# set and the file exists) enables the tests that need the default model;
# they skip otherwise. A skip is a line starting with "skip:" (tests/test.h
# SKIP(); the shell tests echo it); under CI=true any skip fails the run, so
# CI cannot go green with parts of the suite silently not run. KVL_TESTS
# (space-separated names such as "test_kv test_cli") runs only those.
set -u
BUILD="${BUILD:-build}"
export KVLITE_BIN="$BUILD/kvlite"
total_p=0; total_f=0; total_s=0; bad=0
SKIP_RE='^(skip:|skipped\b|skipping\b)' # the convention, plus older wordings

run_one() { # name, command...
    local name=$1; shift
    local out rc line p f s
    out=$("$@" 2>&1); rc=$?
    line=$(printf '%s\n' "$out" | grep -E '[0-9]+ passed, [0-9]+ failed' | tail -1)
    p=$(printf '%s' "$line" | sed -nE 's/(^|.*[^0-9])([0-9]+) passed.*/\2/p'); p=${p:-0}
    f=$(printf '%s' "$line" | sed -nE 's/(^|.*[^0-9])([0-9]+) failed.*/\2/p'); f=${f:-0}
    s=$(printf '%s\n' "$out" | grep -ciE "$SKIP_RE")
    if [ $rc -ne 0 ] || [ -z "$line" ]; then
        printf '%s\n' "$out" | tail -40
        echo "FAIL $name (exit $rc)"
        bad=1
        [ "$f" = 0 ] && f=1
    else
        printf '%s\n' "$out" | grep -iE '^(note|measured)' | head -20
        printf '%s\n' "$out" | grep -iE "$SKIP_RE"
        echo "ok   $name: $p checks$([ "$s" -gt 0 ] && echo ", $s skipped")"
    fi
    total_p=$((total_p + p)); total_f=$((total_f + f)); total_s=$((total_s + s))
}

found=" "
selected() { # name: in KVL_TESTS (or KVL_TESTS unset)
    [ -z "${KVL_TESTS:-}" ] && return 0
    case " $KVL_TESTS " in *" $1 "*) found="$found$1 "; return 0;; esac
    return 1
}
for t in "$BUILD"/tests/test_*; do
    case "$t" in *.d) continue;; esac
    [ -x "$t" ] || continue
    selected "$(basename "$t")" || continue
    run_one "$t" "$t"
done
for t in tests/test_*.sh; do
    [ -f "$t" ] || continue
    selected "$(basename "$t" .sh)" || continue
    run_one "$t" bash "$t"
done
for n in ${KVL_TESTS:-}; do
    case "$found" in *" $n "*) ;; *) echo "FAIL $n: no such test (KVL_TESTS)"; bad=1;; esac
done
echo "tests: $total_p passed, $total_f failed, $total_s skipped"
if [ "${CI:-}" = true ] && [ "$total_s" -gt 0 ]; then
    echo "CI=true: $total_s skipped test parts count as failures (provide the model / ../shared/data)"
    bad=1
fi
[ $bad -eq 0 ] && [ $total_f -eq 0 ]
