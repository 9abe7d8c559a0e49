#!/usr/bin/env bash
# AddressSanitizer and ThreadSanitizer on kiln's concurrency tests (nightly,
# -Zbuild-std so std itself is instrumented: TSan reports races through
# uninstrumented std code otherwise). One target dir per sanitizer under
# target/, so neither rebuilds the other's std.
#
# KILN_SANITIZER_TESTS: one test target per line, as cargo arguments;
# adding one is one line (testkit's reclamation stress test, once it lands:
# "-p kiln-testkit --test stress"). A target its package does not have (per
# `cargo metadata`) is skipped with a message; any other failure fails.
# KILN_SANITIZERS: which to run ("address thread" by default).
# KILN_STRESS_OPS / _SEED / _THREADS size testkit's stress test (short here).
# TSan suppressions: ci/tsan.supp if it exists (each entry says why).
set -euo pipefail
cd "$(dirname "$0")/.."

KILN_SANITIZER_TESTS="${KILN_SANITIZER_TESTS:-
-p kiln-testkit --test stress_core -- --skip core_rule_violation_is_caught
-p kiln-testkit --test stress_std
-p kiln-std --test reclaim
-p kiln-std --test stress
-p kiln-std --test broker
-p kiln-core --lib
}"
KILN_SANITIZERS="${KILN_SANITIZERS:-address thread}"
export KILN_STRESS_OPS="${KILN_STRESS_OPS:-20000}"
export KILN_STRESS_SEED="${KILN_STRESS_SEED:-1}"
export KILN_STRESS_THREADS="${KILN_STRESS_THREADS:-4}"
target=x86_64-unknown-linux-gnu
# Symbolising a Rust backtrace in a sanitized debug build takes seconds; with
# RUST_BACKTRACE=1, a test whose compile panics on purpose then misses its
# 5 s bounded wait (seen: kiln-std's a_panicking_compile_... under ASan).
# The sanitizers print their own stacks.
export RUST_BACKTRACE=0

rustup component add rust-src --toolchain nightly >/dev/null 2>&1 || true

# Prints the test targets (kind "test", or "lib" for --lib) of a package.
targets_of() {
  local package=$1
  cargo metadata --no-deps --format-version 1 | if command -v jq >/dev/null; then
    jq -r --arg p "$package" '.packages[] | select(.name == $p) | .targets[] | "\(.kind[0]) \(.name)"'
  else
    python3 -c 'import json, sys
for package in json.load(sys.stdin)["packages"]:
    if package["name"] == sys.argv[1]:
        for t in package["targets"]:
            print(t["kind"][0], t["name"])' "$package"
  fi
}

# Succeeds if the cargo arguments name a test target that exists.
exists() {
  local package="" want="" previous=""
  for word in "$@"; do
    case "$previous" in
      -p) package=$word ;;
      --test) want="test $word" ;;
    esac
    [ "$word" = --lib ] && want="lib"
    previous=$word
  done
  [ -n "$package" ] && [ -n "$want" ] || { echo "sanitizers: cannot read a test target from: $*" >&2; exit 2; }
  local targets
  targets=$(targets_of "$package")
  # A misspelt package is a mistake in the list, not a target still to come.
  [ -n "$targets" ] || { echo "sanitizers: no package $package in this workspace" >&2; exit 2; }
  if [ "$want" = lib ]; then
    grep -Eq '^(lib|rlib) ' <<<"$targets"
  else
    grep -qx "$want" <<<"$targets"
  fi
}

for sanitizer in $KILN_SANITIZERS; do
  case $sanitizer in
    address)
      short=asan
      # LeakSanitizer is off: when a kiln-std domain drops with code still
      # parked (unmanaged mode, or installed in beads dropped with it), kiln
      # forgets that code's release hook on purpose — running or dropping it
      # could free code a thread still runs (RELIABILITY.md, "No leak") —
      # and LSan reports those hooks and the test backends they keep. Leaks
      # are checked by the tests' own books instead (compiled = released +
      # live, per variant), which fail on any real leak.
      export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_stack_use_after_return=1:detect_leaks=0}"
      ;;
    thread)
      short=tsan
      tsan="halt_on_error=1 second_deadlock_stack=1"
      [ -f ci/tsan.supp ] && tsan="$tsan suppressions=$PWD/ci/tsan.supp"
      export TSAN_OPTIONS="${TSAN_OPTIONS:-$tsan}"
      ;;
    *) echo "sanitizers: unknown sanitizer $sanitizer" >&2; exit 2 ;;
  esac
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    # shellcheck disable=SC2086 # the line is a list of cargo arguments
    set -- $line
    if ! exists "$@"; then
      echo "=== $sanitizer: skipped, no such test target: $line"
      continue
    fi
    echo "=== $sanitizer: $line"
    started=$SECONDS
    RUSTFLAGS="-Zsanitizer=$sanitizer" RUSTDOCFLAGS="-Zsanitizer=$sanitizer" \
      cargo +nightly test -Zbuild-std --target "$target" --target-dir "target/$short" "$@"
    echo "=== $sanitizer: $line passed ($((SECONDS - started)) s with its build)"
  done <<<"$KILN_SANITIZER_TESTS"
done
