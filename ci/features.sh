#!/usr/bin/env bash
# Feature boundaries that `cargo test --workspace` (default features) does
# not see: kiln-cranelift without its kiln-std adapter (feature
# `std-adapter`, on by default) is a kiln-core backend alone — kiln-std is
# not in its dependency tree (dev-dependencies included), and it builds,
# lints, documents and passes its tests.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "--- cargo tree -p kiln-cranelift --no-default-features: no kiln-std"
tree=$(cargo tree -p kiln-cranelift --no-default-features --edges normal,build,dev --prefix none)
if grep -q '^kiln-std ' <<<"$tree"; then
  echo "kiln-cranelift depends on kiln-std without its std-adapter feature:" >&2
  cargo tree -p kiln-cranelift --no-default-features --edges normal,build,dev --invert kiln-std >&2
  exit 1
fi

echo "--- clippy -p kiln-cranelift --no-default-features"
cargo clippy -p kiln-cranelift --no-default-features --all-targets -- -D warnings

echo "--- doc -p kiln-cranelift --no-default-features (no link into the adapter)"
RUSTDOCFLAGS="-D warnings" cargo doc -p kiln-cranelift --no-deps --no-default-features

echo "--- cargo test -p kiln-cranelift --no-default-features"
cargo test -p kiln-cranelift --no-default-features
