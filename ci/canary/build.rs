//! Link arguments for a freestanding executable, scoped to this package's
//! binary (`rustc-link-arg-bins`), so they hold however cargo is invoked
//! (`--manifest-path` from the repository root reads no `.cargo/config.toml`
//! in this folder, but always runs this script).
//!
//! - `-nostartfiles`: no `crt1.o`/`crti.o`; `_start` is ours (`rt.rs`).
//! - `-nostdlib`: no libc, libm or libgcc; every symbol must come from this
//!   binary, `core` or `compiler_builtins`, so a dependency that needs libc
//!   (or an allocator that needs `malloc`) fails to link.
//! - `-static -no-pie`: a static, position-dependent executable. Nothing runs
//!   before `_start` to apply relocations, and the canary's statics hold
//!   function pointers (the OSR table), so the image must need none.

use std::env;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if arch != "x86_64" || os != "linux" {
        panic!(
            "kiln-canary is an x86_64 Linux binary (target {arch}-{os}): build it with --target x86_64-unknown-linux-gnu"
        );
    }
    for arg in ["-nostartfiles", "-nostdlib", "-static", "-no-pie"] {
        println!("cargo::rustc-link-arg-bins={arg}");
    }
}
