#!/usr/bin/env bash
# The freestanding canary: kiln-core (feature `critical-section`) in an
# x86_64 Linux binary with no std, no allocator and no libc (ci/canary), run
# to completion, then inspected for anything that should not be in it.
# Also builds kiln-host for the embedded targets, once that crate exists.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
manifest=ci/canary/Cargo.toml
target_dir=target/canary
bin=$target_dir/$target/release/kiln-canary

fail() {
  echo "error: canary: $*" >&2
  exit 1
}

# The canary is its own workspace (excluded from the root one), so the
# workspace's fmt and clippy steps do not see it.
echo "--- fmt and clippy (ci/canary)"
cargo fmt --manifest-path "$manifest" --check
cargo clippy --manifest-path "$manifest" --release --target "$target" --target-dir "$target_dir" -- -D warnings

# Linking is the first check: the binary is linked with -nostartfiles
# -nostdlib -static (ci/canary/build.rs), so std, an allocator that calls
# malloc, or anything else needing libc fails here with undefined symbols.
echo "--- build ci/canary ($target, release)"
cargo build --manifest-path "$manifest" --release --target "$target" --target-dir "$target_dir"

echo "--- run $bin"
if "$bin"; then
  status=0
else
  status=$?
fi
# 1..250: the number of the first failed check (its message is on stderr);
# 255: a panic; anything else (a signal, 128+n) is a crash.
[ "$status" -eq 0 ] || fail "$bin exited with status $status"

echo "--- link checks"
# Static and self-contained: an ELF executable with no program interpreter
# and no dynamic section (so no NEEDED libraries) — the kernel runs it
# directly, no ld.so, no libc. ldd agrees (glibc: "not a dynamic
# executable"; others: "statically linked"); it exits 1 for such files.
# (Outputs are captured first and searched with here-strings: `cmd | grep -q`
# can fail under pipefail when grep exits early and cmd gets SIGPIPE.)
header=$(readelf -hW "$bin")
segments=$(readelf -lW "$bin")
dynamic=$(readelf -dW "$bin")
ldd_out=$(ldd "$bin" 2>&1 || true)
grep -Eq 'Type:[[:space:]]+EXEC' <<<"$header" || fail "not a position-dependent executable (ELF type EXEC)"
if grep -q 'INTERP' <<<"$segments"; then fail "has a program interpreter (dynamically linked)"; fi
if grep -q 'NEEDED' <<<"$dynamic"; then fail "needs shared libraries"; fi
grep -Eq 'not a dynamic executable|statically linked' <<<"$ldd_out" || fail "ldd does not call it static: $ldd_out"

# The absence checks below read the symbol table, so first make sure there
# is one worth reading: the entry point and kiln-core's code must be named
# in it (the release profile keeps symbols and has no LTO, so kiln-core's
# functions and any allocator shim keep their names; see Cargo.toml).
symbols=$(nm "$bin")
demangled=$(nm -C "$bin")
grep -Eq ' T _start$' <<<"$symbols" || fail "no _start in the symbol table (stripped?)"
grep -q 'kiln_core::' <<<"$demangled" || fail "no kiln_core symbols (stripped, or kiln-core not linked?)"
# Nothing left to resolve at run time.
undefined=$(nm -u "$bin")
[ -z "$undefined" ] || fail "undefined symbols: $undefined"

# No allocator: the Rust allocator shim (__rust_alloc & co., which a
# #[global_allocator] or std's default allocator defines; shown as
# `__rustc::__rust_alloc` once demangled) and its default/global
# implementations (__rdl_*, __rg_*); and no C allocator. C names are
# unmangled, so they are matched whole (a Rust method named `free` is fine).
rust_alloc='(^|[[:space:]:])(__rust_(alloc|dealloc|realloc|alloc_zeroed|alloc_error_handler|no_alloc_shim_is_unstable[a-z0-9_]*)|__rdl_[a-z_]+|__rg_[a-z_]+)$'
if found=$(grep -E "$rust_alloc" <<<"$demangled"); then fail "allocator symbols linked in:
$found"; fi
c_alloc='^(malloc|calloc|realloc|free|posix_memalign|aligned_alloc|memalign|valloc|__libc_malloc|__libc_start_main|__libc_start_call_main)$'
if found=$(awk '{print $NF}' <<<"$symbols" | grep -E "$c_alloc"); then fail "libc symbols linked in:
$found"; fi
# No code from the std or alloc crates: no demangled path starts with
# `std::` or `alloc::` (as a whole path segment, so `core::alloc::Layout`
# does not count).
std_paths='(^|[[:space:]<(&*,])(std|alloc)::'
if found=$(grep -E "$std_paths" <<<"$demangled"); then fail "std/alloc code linked in:
$found"; fi

size "$bin"
echo "canary ok: $(stat -c %s "$bin") bytes, static, no std, no allocator, no libc"

# kiln-host (host-broker/) may not exist yet: build it for the embedded
# targets when it does. thumbv6m has no compare-and-swap, so it needs the
# crate's `critical-section` feature if the crate has one.
if [ -f host-broker/Cargo.toml ]; then
  echo "--- cargo build -p kiln-host --target thumbv7em-none-eabihf"
  cargo build -p kiln-host --target thumbv7em-none-eabihf
  features=""
  # A `critical-section = [...]` line inside [features] (dev-dependencies
  # may also have a line starting with `critical-section`).
  if awk '/^\[/ { section = $0 } section == "[features]" && /^critical-section[[:space:]]*=/ { found = 1 }
          END { exit !found }' host-broker/Cargo.toml; then
    features="--features critical-section"
  fi
  echo "--- cargo build -p kiln-host --target thumbv6m-none-eabi $features"
  # shellcheck disable=SC2086 # $features is zero or two words
  cargo build -p kiln-host --target thumbv6m-none-eabi $features
else
  echo "--- host-broker/ not present: kiln-host embedded builds skipped"
fi
echo "canary checks passed"
