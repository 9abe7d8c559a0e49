//! # kiln-llvm
//!
//! kiln's optimizing tier: LLVM IR built through inkwell, optimized with
//! LLVM's `default<O2>` pipeline, and run on ORC LLJIT. Where kiln-cranelift
//! compiles in about a millisecond, LLVM takes 25–60× as long and produces
//! code up to twice as fast — the trade a tiered broker exists for:
//! Cranelift for everything warm, LLVM for the few functions that are
//! really hot, swapped in while they run.
//!
//! ## Enabling it
//!
//! The backend is behind the **`llvm`** feature, off by default, because it
//! needs LLVM 19 on the machine (Debian/Ubuntu: `apt-get install
//! llvm-19-dev libpolly-19-dev libzstd-dev zlib1g-dev`; `ci/llvm.sh`
//! installs it when missing). Without the feature the crate holds only
//! [`TierDispatch`], which needs no LLVM, so `cargo test --workspace`,
//! clippy, `cargo doc` and `cargo package` never touch LLVM.
//!
//! ## Shape
//!
//! The same three ways in as kiln-cranelift, with the same names:
//! `LlvmConfig` (optimization level, target CPU and features, host
//! symbols, code budget with eviction) builds an `LlvmBackend`, which
//! compiles a `FunctionDef` — a signature, optional OSR entries and a
//! body callback — into a *unit*; `LlvmCompiler` is kiln-core's
//! `Compiler`, and with the `kiln-std` feature (on by default) the backend
//! is kiln-std's `JitBackend`. [`TierDispatch`] puts two compilers behind one
//! kiln-core broker: tier 0 to Cranelift, tier 1 to LLVM.
//!
//! ## Code memory
//!
//! The books are kiln-backend-kit's, shared with kiln-cranelift: units,
//! the budget and its eviction (after a compile, never inside one),
//! statistics; this crate adds LLVM and ORC.
//!
//! Every compile is a unit of its own: an LLVM context for the compile
//! (dropped with its IR once the object is emitted) and one ORC resource
//! tracker under which the object is linked. Releasing the unit removes the
//! tracker, which frees its code: resident memory stays flat over 10,000
//! compile/release cycles (see `tests/memory.rs`). Unit symbol names carry
//! the unit's id, as ORC requires of names in one JITDylib.
//!
//! ## Failure
//!
//! An invalid module, a verifier failure, a missing host symbol, a body
//! callback that errs or panics: each is a `LlvmError`, never a panic
//! or an LLVM abort (the module is verified before LLVM optimizes it, and
//! imports are resolved before anything is linked).

mod tier;

#[cfg(feature = "llvm")]
mod backend;
#[cfg(feature = "llvm")]
mod codegen;
#[cfg(feature = "llvm")]
mod compiler;
#[cfg(feature = "llvm")]
mod config;
#[cfg(feature = "llvm")]
mod def;
#[cfg(feature = "llvm")]
mod error;
#[cfg(all(feature = "llvm", feature = "kiln-std"))]
mod jit_backend;
#[cfg(feature = "llvm")]
mod orc;
#[cfg(feature = "llvm")]
mod unit;

#[cfg(feature = "llvm")]
pub use backend::{LLVM_HANDLE_TAG, LlvmBackend, is_llvm_handle};
#[cfg(feature = "llvm")]
pub use compiler::LlvmCompiler;
#[cfg(feature = "llvm")]
pub use config::{ConfigError, LlvmConfig};
#[cfg(feature = "llvm")]
pub use def::{BodyBuilder, BuildContext, Entry, FunctionDef, ValueType};
#[cfg(feature = "llvm")]
pub use error::LlvmError;
#[cfg(feature = "llvm")]
pub use inkwell;
#[cfg(feature = "llvm")]
pub use kiln_backend_kit::{CodeStats, CompiledFunction};
pub use tier::{Side, TierDispatch, TierError};
