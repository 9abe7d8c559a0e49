#!/usr/bin/env bash
# kiln-core's unit tests under Miri (undefined behaviour, provenance).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup component add miri rust-src --toolchain nightly >/dev/null 2>&1 || true
MIRIFLAGS="${MIRIFLAGS:--Zmiri-strict-provenance}" \
  cargo +nightly miri test -p kiln-core --lib --target-dir target/miri
