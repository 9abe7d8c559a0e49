//! # kiln-cranelift
//!
//! kiln's Cranelift backend. [`CraneliftConfig`] checks Cranelift settings
//! by name and builds a [`CraneliftBackend`], which compiles a
//! [`FunctionDef`] — a signature, optional OSR entries, and a callback that
//! builds the body through Cranelift's `FunctionBuilder` — into native code,
//! publishes its entry and OSR entries, and frees the code when kiln retires
//! it. It is a kiln-core backend first, and plugs into kiln three ways:
//!
//! - kiln-core: [`CraneliftCompiler`] is kiln-core's `Compiler`, for any
//!   `Broker` the host pumps (its own thread, a frame pump, a job system);
//! - kiln-std (feature `std-adapter`, on by default): `CraneliftBackend` is
//!   kiln-std's `JitBackend`, so `BackendAdapter::new(backend)` compiles hot
//!   functions on kiln-std's broker thread (OSR entries from
//!   `compile_with_osr`, or ahead through `CraneliftBackend::prepare`);
//! - standalone: [`CraneliftBackend::compile_function`] and `free`.
//!
//! ## Features
//!
//! - `std-adapter` (default): the kiln-std adapter — `JitBackend` for
//!   [`CraneliftBackend`], whose post-compile hook carries out the budget's
//!   evictions of kiln-std beads, and `CraneliftBackend::prepare`. With
//!   `default-features = false` the crate stands on kiln-core alone and
//!   kiln-std is not built; everything else is the same.
//!
//! ## Code memory
//!
//! The books are kiln-backend-kit's, shared with kiln-llvm: units, the
//! budget, eviction, statistics ([`CodeStats`]); this crate adds Cranelift.
//!
//! cranelift-jit frees only whole modules, so every compile gets a module
//! of its own (a *unit*: the function's entry and its OSR entries, retired
//! together), freed when kiln releases that code. A unit costs at least one
//! page. With [`CraneliftConfig::code_budget`], a compile that takes the
//! resident code past the budget chooses the coldest functions (coldness
//! from a use bit the code sets on entry, swept like page reference bits),
//! and they are evicted back to the interpreter once that compile is over —
//! never from inside it, since a compile must not call back into kiln:
//! kiln-core hosts call [`CraneliftCompiler::evict`] after pumping, kiln-std
//! runs the backend's post-compile hook (`JitBackend::after_compile`). Their
//! memory returns once kiln releases them. The compiler is never turned
//! off: only a single function larger than the whole budget fails to
//! compile.
//!
//! ## Failure
//!
//! Invalid IR is a failed compile ([`CraneliftError::Codegen`], from
//! Cranelift's verifier, on by default), as is a body callback that errs or
//! panics: the function keeps interpreting, and kiln's failure policy
//! decides when to retry.
//!
//! ## Quickstart
//!
//! On kiln-core, see [`CraneliftCompiler`]'s example. On kiln-std (feature
//! `std-adapter`), an interpreter registers a bead per function, asks kiln
//! on every call, and hands over a [`FunctionDef`] builder that kiln runs
//! when the function is hot (the workspace README shows the same code; a
//! test keeps them equal):
//!
#![cfg_attr(feature = "std-adapter", doc = include_str!("../docs/std_quickstart.md"))]

mod backend;
mod codegen;
mod compiler;
mod config;
mod def;
mod error;
#[cfg(feature = "std-adapter")]
mod jit_backend;
mod unit;

pub use backend::CraneliftBackend;
pub use compiler::CraneliftCompiler;
pub use config::{ConfigError, CraneliftConfig};
pub use def::{BodyBuilder, BuildContext, Entry, FunctionDef};
#[allow(deprecated)]
pub use error::{CompileError, CraneliftError};
pub use kiln_backend_kit::{CodeStats, CompiledFunction};
