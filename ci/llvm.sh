#!/usr/bin/env bash
# The LLVM tier (kiln-llvm, issue 16), kept out of the default build: installs
# LLVM 19 when it is missing, checks that the default dependency graph has no
# LLVM in it, builds, lints and tests kiln-llvm and the examples' LLVM
# lowering, and runs the tiered example (Cranelift first, LLVM -O2 for the
# hottest, OSR from the interpreter into LLVM code and out of a running
# Cranelift loop into LLVM code).
#
#   bash ci/llvm.sh          short mode (CI): 2,000 compile/release cycles,
#                            a small llvm_tier workload
#   bash ci/llvm.sh --long   the full figures: 10,000 compile/release cycles,
#                            llvm_tier's default workload and the fib table
#                            with its LLVM rows (fib 25, 200 runs, 5 reps)
#
# Time on the 2-core machine, warm target dir (after ci/examples.sh built
# the release examples): see README.md, "The LLVM tier".
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
long=false
[ "${1:-}" = "--long" ] && long=true
started=$SECONDS
step() { echo "--- $* ($((SECONDS - started)) s)"; }

step "LLVM 19"
if ! command -v llvm-config-19 >/dev/null 2>&1 && [ ! -x /usr/lib/llvm-19/bin/llvm-config ]; then
  packages="llvm-19-dev libpolly-19-dev libzstd-dev zlib1g-dev"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get install -y --no-install-recommends $packages \
    || { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends $packages; }
fi
llvm-config-19 --version 2>/dev/null || /usr/lib/llvm-19/bin/llvm-config --version

step "the default build has no LLVM in it"
# Cargo builds only what is in the dependency graph: with no inkwell and no
# llvm-sys in it (normal, build and dev edges), `cargo test --workspace`,
# clippy, doc and package never need LLVM.
in_graph=$(cargo tree --workspace -e all --prefix none | grep -c -E '^(inkwell|llvm-sys) ' || true)
if [ "$in_graph" != 0 ]; then
  echo "the default workspace build depends on LLVM ($in_graph crates)" >&2
  cargo tree --workspace -e all -i llvm-sys >&2 || true
  exit 1
fi

step "clippy (feature llvm)"
cargo clippy -p kiln-llvm -p kiln-examples --features kiln-llvm/llvm,kiln-examples/llvm --all-targets -- -D warnings

step "kiln-llvm tests"
if $long; then cycles=10000; else cycles=2000; fi
log="${CARGO_TARGET_DIR:-target}/kiln-llvm-tests.log"
mkdir -p "$(dirname "$log")"
KILN_LLVM_CYCLES=$cycles cargo test -p kiln-llvm --features llvm -- --nocapture >"$log" 2>&1 \
  || { cat "$log"; echo "kiln-llvm tests failed" >&2; exit 1; }
# The figures: RSS over the compile/release cycles and per live unit.
grep -E '^(test result|[0-9]+ (units|live)|cycle )' "$log"

step "the examples' LLVM lowering"
cargo test -q -p kiln-examples --features llvm --lib llvm

step "llvm_tier"
cargo build -q --release -p kiln-examples --features llvm --example llvm_tier --example fib
if $long; then
  out=$(cargo run -q --release -p kiln-examples --features llvm --example llvm_tier)
else
  out=$(cargo run -q --release -p kiln-examples --features llvm --example llvm_tier -- 23 100)
fi
echo "$out"
grep -q "the last run ran on: LLVM" <<<"$out" || { echo "fib did not end on LLVM code" >&2; exit 1; }
grep -q "OSR: left the interpreter for LLVM" <<<"$out" || { echo "the loop never entered LLVM code through OSR" >&2; exit 1; }
grep -q "left the running Cranelift loop for LLVM" <<<"$out" || { echo "the Cranelift loop never left for LLVM code" >&2; exit 1; }

if $long; then
  step "fib table with the LLVM rows"
  cargo run -q --release -p kiln-examples --features llvm --example fib -- 25 200 5
fi
step "ci/llvm.sh passed"
