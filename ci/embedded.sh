#!/usr/bin/env bash
# Portability: kiln-core builds for the embedded targets, no std, no alloc.
# thumbv6m and riscv32imc have no compare-and-swap: they build with the
# `critical-section` feature (portable-atomic's fallback); the final binary
# would supply the implementation, so here we only build the library.
set -euo pipefail
cd "$(dirname "$0")/.."

build() {
  echo "--- cargo build -p kiln-core $*"
  cargo build -p kiln-core --release "$@"
}

build --target thumbv7em-none-eabihf
build --target thumbv7em-none-eabihf --features critical-section
build --target thumbv7em-none-eabihf --features defmt
build --target thumbv6m-none-eabi --features critical-section
build --target riscv32imc-unknown-none-elf --features critical-section

# Without CAS and without the feature, the build must fail with a clear
# message, not silently pick an implementation for the user.
if cargo build -p kiln-core --release --target thumbv6m-none-eabi >/dev/null 2>&1; then
  echo "error: kiln-core built on thumbv6m without critical-section; expected a CAS error" >&2
  exit 1
fi
echo "embedded builds ok"
