#!/usr/bin/env bash
# kiln's reclamation stress tests (kiln-testkit), short variants.
#
# Runs, in debug (the faster choice overall on a 2-core machine: a release
# build of kiln-cranelift and its dependencies takes ~6 minutes, a debug one
# is usually warm), the unit tests of kiln-testkit's fault and poison
# modules, then every stress variant:
#
#   stress_core       kiln-core, host-declared quiescence (+ 8 threads with
#                     injected yields, + a self-check that a host breaking
#                     kiln-core's rule is caught)
#   stress_std        kiln-std in each reclamation mode (unmanaged, host
#                     quiesce, registered threads, the switch between them),
#                     host pumps beside the worker, panicking releases,
#                     closures, 8 threads with yields, drop with a hung compile
#   stress_cranelift  real Cranelift code, released entries tracked beside
#                     kiln-cranelift's CodeStats
#
# and prints, per variant: operations run, faults injected by kind, early
# frees, leaks and stuck beads; then a summary. Exits non-zero if any test
# failed. Every test is run once (no retries); a failing variant prints the
# command that repeats it (seed included).
#
# Settings pass through: KILN_STRESS_SEED, KILN_STRESS_OPS,
# KILN_STRESS_THREADS, KILN_STRESS_YIELDS (see testkit/README.md).
# The long run (>= 10^6 operations per variant, release mode) is:
#   KILN_STRESS_OPS=4000000 cargo test --release -p kiln-testkit --features cranelift \
#       --test stress_core --test stress_std --test stress_cranelift -- --nocapture --test-threads=1
set -uo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
echo "== building kiln-testkit's tests (debug, feature cranelift)"
cargo test -q -p kiln-testkit --features cranelift --no-run || exit 1

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0

run() {
    local label=$1
    shift
    echo
    echo "== $label"
    if cargo test -q -p kiln-testkit --features cranelift "$@" -- --nocapture --test-threads=1 >"$log" 2>&1; then
        result=ok
    else
        result=FAILED
        status=1
    fi
    # The variants' own report lines (each starts "== name:"), the failure
    # messages (with the seed and the command that repeats them), and the
    # verdict.
    sed -E 's/^test [a-z_0-9:]+ \.\.\. //; s/^[.iFE]+(== )/\1/' "$log" \
        | grep -E '^(== |   [a-zA-Z]|  - |repeat: |test result)|panicked at' \
        | grep -vE '^   +at '
    awk '/^failures:$/ { listing = 1; next } listing && /^    [a-z_0-9:]+$/ { print "   failed: " $1 }' "$log" | sort -u
    echo "-- $label: $result"
    sed -E 's/^test [a-z_0-9:]+ \.\.\. //; s/^[.iFE]+(== )/\1/' "$log" >>"$log.all"
}

: >"$log.all"
run "unit tests: fault plans, faulty compiler/backend/hooks, poison arena" --lib
run "stress_core" --test stress_core
run "stress_std" --test stress_std
run "stress_cranelift" --test stress_cranelift

echo
echo "== summary ($(($(date +%s) - started)) s)"
awk '
    /^== [a-z_]+: / { variants++ }
    /runner ops [0-9]+/ { for (i = 1; i <= NF; i++) if ($i == "ops" && $(i-1) == "runner") ops += $(i+1) + 0 }
    /faults injected: / {
        line = $0; sub(/.*faults injected: [0-9]+ \(/, "", line); sub(/\).*/, "", line)
        n = split(line, parts, ", ")
        for (i = 1; i <= n; i++) { split(parts[i], kv, " "); faults[kv[1]] += kv[2] }
    }
    /early frees [0-9]+, leaks [0-9]+, stuck beads [0-9]+/ {
        for (i = 1; i <= NF; i++) {
            if ($i == "frees") early += $(i+1) + 0
            if ($i == "leaks") leaks += $(i+1) + 0
            if ($i == "beads") stuck += $(i+1) + 0
        }
    }
    END {
        printf "variants %d; runner operations %d\n", variants, ops
        printf "faults injected:"; for (k in faults) printf " %s %d;", k, faults[k]; printf "\n"
        printf "early frees %d, leaks %d, stuck beads %d\n", early, leaks, stuck
    }' "$log.all"
awk '/^failures:$/ { listing = 1; next } listing && /^    [a-z_0-9:]+$/ { print "failed: " $1 }' "$log.all" | sort -u
grep -E '^test result' "$log.all" | awk '{ passed += $4; failed += $6 } END { printf "tests passed %d, failed %d\n", passed, failed }'
rm -f "$log.all"
if [ "$status" -ne 0 ]; then
    echo "FAILED: see the variants above (each failure prints its seed and a command that repeats it)"
fi
exit "$status"
