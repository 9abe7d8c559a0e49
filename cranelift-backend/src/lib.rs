//! # kiln-cranelift
//!
//! kiln's Cranelift backend. [`CraneliftConfig`] checks Cranelift settings
//! by name and builds a [`CraneliftBackend`], which compiles a
//! [`FunctionDef`] — a signature, optional OSR entries, and a callback that
//! builds the body through Cranelift's `FunctionBuilder` — into native code,
//! publishes its entry and OSR entries, and frees the code when kiln retires
//! it. It plugs into kiln three ways:
//!
//! - kiln-std: `CraneliftBackend` is a `JitBackend`, so
//!   `BackendAdapter::new(backend)` compiles hot functions on kiln-std's
//!   broker thread (OSR entries through [`CraneliftBackend::prepare`]);
//! - kiln-core: [`CraneliftCompiler`] is a `Compiler` for any `Broker`;
//! - standalone: [`CraneliftBackend::compile_function`] and `free`.
//!
//! ## Code memory
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
//! Invalid IR is a failed compile ([`CompileError::Codegen`], from
//! Cranelift's verifier, on by default), as is a body callback that errs or
//! panics: the function keeps interpreting, and kiln's failure policy
//! decides when to retry.
//!
//! ## Quickstart
//!
//! An interpreter registers a bead per function, asks kiln on every call,
//! and hands over a [`FunctionDef`] builder that kiln runs when the function
//! is hot (the workspace README shows the same code; a test keeps them
//! equal):
//!
//! ```
//! use cranelift_codegen::ir::{InstBuilder, types::I64};
//! use kiln_cranelift::{CraneliftConfig, FunctionDef};
//! use kiln_std::{BackendAdapter, ThresholdPolicy};
//!
//! /// The interpreter's version of `square(x) = x * x`.
//! fn interpret_square(x: i64) -> i64 {
//!     x * x
//! }
//!
//! /// The same function as Cranelift IR. The body callback runs on kiln's
//! /// broker thread, once the function is hot.
//! fn square_def() -> FunctionDef {
//!     FunctionDef::new("square", &[I64], &[I64], |builder, _cx| {
//!         let block = builder.create_block();
//!         builder.append_block_params_for_function_params(block);
//!         builder.switch_to_block(block);
//!         builder.seal_block(block);
//!         let x = builder.block_params(block)[0];
//!         let y = builder.ins().imul(x, x);
//!         builder.ins().return_(&[y]);
//!         Ok(())
//!     })
//! }
//!
//! let backend = CraneliftConfig::new().opt_level("speed").build().expect("a supported host");
//! let kiln = BackendAdapter::with_policy(backend, ThresholdPolicy::new(1_000));
//! let square = kiln.register(std::ptr::null_mut(), None); // one bead per function
//!
//! let mut calls = 0;
//! let code = loop {
//!     calls += 1;
//!     // Every call asks kiln first. The 1,000th makes `square` hot: its
//!     // definition goes to the broker thread, which compiles it.
//!     if let Some(code) = kiln.on_invoke(&square, |_bead| square_def()) {
//!         break code;
//!     }
//!     assert_eq!(interpret_square(calls), calls * calls); // until then, interpret
//! };
//! // SAFETY: kiln publishes only code compiled from `square_def`: (i64) -> i64.
//! let native_square: extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(code) };
//! assert_eq!(native_square(12), 144);
//! assert!(calls > 1_000);
//!
//! // Retired code (reloads, invalidations, budget evictions) is freed once
//! // quiescence is declared: call this where no thread runs compiled code.
//! kiln.beadie().quiesce();
//! ```

mod backend;
mod cache;
mod codegen;
mod compiler;
mod config;
mod def;
mod error;
mod jit_backend;
mod unit;

pub use backend::{CompiledFunction, CraneliftBackend};
pub use cache::CodeStats;
pub use compiler::CraneliftCompiler;
pub use config::{ConfigError, CraneliftConfig};
pub use def::{BodyBuilder, BuildContext, Entry, FunctionDef};
pub use error::CompileError;
