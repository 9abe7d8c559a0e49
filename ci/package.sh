#!/usr/bin/env bash
# Ready to publish: every published crate packages with its README and
# license files and no build output, verifies (cargo builds each package
# from its packaged files, in dependency order), reads no file outside its
# own crate, and documents without a warning with the features docs.rs
# builds (each crate's `[package.metadata.docs.rs]`), also on nightly with
# `--cfg docsrs` as docs.rs does (the `doc(cfg)` badges).
#
# Run from a clean checkout (as `.ci/run` does). KILN_PACKAGE_ALLOW_DIRTY=1
# packages uncommitted changes too, for trying it while editing.
set -euo pipefail
cd "$(dirname "$0")/.."

published=(core std-broker host-broker backend-kit cranelift-backend llvm-backend)
unpublished=(examples testkit fuzz)
dirty=()
if [ "${KILN_PACKAGE_ALLOW_DIRTY:-0}" = 1 ]; then dirty=(--allow-dirty); fi

bash ci/readme.sh

echo "--- unpublished crates stay unpublished"
for dir in "${unpublished[@]}"; do
  grep -q '^publish = false' "$dir/Cargo.toml" || { echo "$dir/Cargo.toml lacks publish = false" >&2; exit 1; }
done

name_of() { sed -n 's/^name = "\(.*\)"/\1/p' "$1/Cargo.toml" | head -n 1; }

echo "--- no test, doctest or source reads a file outside its crate"
for dir in "${published[@]}"; do
  if grep -rn --include='*.rs' --include='*.md' 'include_str!("\.\./\.\./\|include_bytes!("\.\./\.\./' "$dir"; then
    echo "$dir reads a file outside its crate: its package would not build" >&2
    exit 1
  fi
done

echo "--- package contents: README, licenses, no build output"
for dir in "${published[@]}"; do
  name=$(name_of "$dir")
  list=$(cargo package -p "$name" --list "${dirty[@]}")
  for file in README.md LICENSE-MIT LICENSE-APACHE Cargo.toml; do
    grep -qx "$file" <<<"$list" || { echo "$name's package lacks $file" >&2; exit 1; }
  done
  if grep -E '(^|/)target/' <<<"$list"; then
    echo "$name's package carries build output" >&2
    exit 1
  fi
  grep -q '^readme = "README.md"' "$dir/Cargo.toml" || { echo "$name: no readme in Cargo.toml" >&2; exit 1; }
  grep -q '^#!\[.*doc = include_str!("../README.md")' "$dir/src/lib.rs" ||
    { echo "$name: README.md is not the crate's front page" >&2; exit 1; }
  echo "$name: $(wc -l <<<"$list") files"
done
if git ls-files | grep -E '(^|/)target/'; then
  echo "build output is committed" >&2
  exit 1
fi

echo "--- cargo package --workspace (builds every package from its files)"
# cargo verifies each package against the workspace's other packages
# through a local registry under target/package, and extracts them into
# $CARGO_HOME/registry/src/<that registry>/NAME-VERSION. An extraction left
# by an earlier run from the same path is reused though its package
# changed (same version), so a second clone at the same path verified
# kiln-std against the first clone's kiln-core. Remove ours first (never
# a crates.io extraction).
for dir in "${published[@]}" "${unpublished[@]}"; do
  [ -f "$dir/Cargo.toml" ] || continue
  for stale in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"$(name_of "$dir")"-[0-9]*; do
    case "$stale" in */index.crates.io-*) ;; *) if [ -d "$stale" ]; then rm -rf "$stale"; fi ;; esac
  done
done
cargo package --workspace "${dirty[@]}"

# The features docs.rs builds: the `features = [...]` of each published
# crate's [package.metadata.docs.rs], as `crate/feature`.
docs_features=()
for dir in "${published[@]}"; do
  name=$(name_of "$dir")
  features=$(awk '/^\[package.metadata.docs.rs\]/ { on = 1; next } /^\[/ { on = 0 }
    on && /^features = / { gsub(/.*\[|\].*|"| /, ""); print }' "$dir/Cargo.toml")
  if [[ ",$features," == *",llvm,"* ]]; then
    echo "$name: docs.rs cannot build the llvm feature (no LLVM 19 there)" >&2
    exit 1
  fi
  for feature in ${features//,/ }; do docs_features+=("$name/$feature"); done
done
joined=$(IFS=,; echo "${docs_features[*]}")

echo "--- cargo doc --workspace --no-deps --features $joined (-D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --features "$joined"

if rustup toolchain list | grep -q '^nightly'; then
  echo "--- cargo +nightly doc with --cfg docsrs, as docs.rs builds (doc(cfg) badges)"
  packages=()
  for dir in "${published[@]}"; do packages+=(-p "$(name_of "$dir")"); done
  CARGO_TARGET_DIR=target/docsrs RUSTDOCFLAGS="--cfg docsrs -D warnings" \
    cargo +nightly doc --no-deps "${packages[@]}" --features "$joined"
else
  echo "--- no nightly toolchain: the docs.rs build (--cfg docsrs) is not checked" >&2
fi
