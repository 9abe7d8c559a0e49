#!/usr/bin/env bash
# Fuzzes kiln-core's Broker against the reference model (fuzz/, target
# broker_ops: operation sequences decoded from libFuzzer's bytes run against
# both side by side; any mismatch or broken invariant is a crash). Built by
# cargo fuzz on nightly with AddressSanitizer and debug assertions.
#
# KILN_FUZZ_SECONDS: how long to fuzz (60 by default, the CI's short run; the
# long run is `KILN_FUZZ_SECONDS=1200 bash ci/fuzz.sh`).
# KILN_FUZZ_SEED: libFuzzer's seed (random by default).
# The corpus grows in fuzz/corpus/broker_ops (git-ignored) and is reused by
# later runs; a crash is saved in fuzz/artifacts/broker_ops/ and fails this
# script. Reproduce one with `cargo +nightly fuzz run broker_ops <file>`: it
# prints the decoded case, to keep as a regression test in
# testkit/tests/model.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${KILN_FUZZ_SECONDS:-60}"
rustup component add rust-src --toolchain nightly >/dev/null 2>&1 || true
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

flags=(-max_total_time="$seconds" -max_len=2048 -timeout=10 -print_final_stats=1)
if [ -n "${KILN_FUZZ_SEED:-}" ]; then
  flags+=(-seed="$KILN_FUZZ_SEED")
fi

cargo +nightly fuzz build broker_ops
if ! cargo +nightly fuzz run broker_ops -- "${flags[@]}"; then
  echo "fuzz: broker_ops found a failing case; see fuzz/artifacts/broker_ops/" >&2
  exit 1
fi
