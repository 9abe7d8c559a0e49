#!/usr/bin/env bash
# kiln-host: the no_std frame pump builds for embedded targets (no std, no
# alloc); the job-system adapters (std, rayon, bevy_tasks) are linted and
# tested with their features on, which `cargo test --workspace` does not do.
set -euo pipefail
cd "$(dirname "$0")/.."

build() {
  echo "--- cargo build -p kiln-host $*"
  cargo build -p kiln-host --release "$@"
}

# Without features kiln-host is no_std. thumbv6m and riscv32imc have no
# compare-and-swap: kiln-core needs `critical-section` there, which kiln-host
# passes through (the final binary supplies the implementation).
build --target thumbv7em-none-eabihf
build --target thumbv7em-none-eabihf --features defmt
build --target thumbv6m-none-eabi --features critical-section
build --target riscv32imc-unknown-none-elf --features critical-section

echo "--- clippy -p kiln-host --all-features"
cargo clippy -p kiln-host --all-targets --all-features -- -D warnings

# Host tests stay off defmt logging (no global logger on the host); `log`
# exercises the logging arm instead.
echo "--- cargo test -p kiln-host --features rayon,bevy,log"
cargo test -p kiln-host --features rayon,bevy,log
# bevy_tasks without `multi_threaded` (wasm-like, main-thread ticking) cannot
# be tested inside kiln-host (its dev-dependency turns threads on and
# features unify), so a separate workspace checks it.
echo "--- bevy_tasks without threads (ci/bevy-single-thread)"
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/bevy-single-thread" \
  cargo run --quiet --manifest-path ci/bevy-single-thread/Cargo.toml
echo "host checks ok"
