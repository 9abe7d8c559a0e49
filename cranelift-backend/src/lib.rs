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
//! resident code past the budget evicts the coldest functions back to the
//! interpreter (coldness from a use bit the code sets on entry, swept like
//! page reference bits); their memory returns once kiln releases them. The
//! compiler is never turned off: only a single function larger than the
//! whole budget fails to compile.
//!
//! ## Failure
//!
//! Invalid IR is a failed compile ([`CompileError::Codegen`], from
//! Cranelift's verifier, on by default), as is a body callback that errs or
//! panics: the function keeps interpreting, and kiln's failure policy
//! decides when to retry.
//!
//! ```
//! use cranelift_codegen::ir::{types::I64, InstBuilder};
//! use kiln_cranelift::{CraneliftConfig, FunctionDef};
//!
//! let backend = CraneliftConfig::new().opt_level("speed").build().unwrap();
//! let square = FunctionDef::new("square", &[I64], &[I64], |builder, _cx| {
//!     let block = builder.create_block();
//!     builder.append_block_params_for_function_params(block);
//!     builder.switch_to_block(block);
//!     builder.seal_block(block);
//!     let x = builder.block_params(block)[0];
//!     let y = builder.ins().imul(x, x);
//!     builder.ins().return_(&[y]);
//!     Ok(())
//! });
//! let code = backend.compile_function(square).unwrap();
//! // SAFETY (example): built with signature (i64) -> i64.
//! let f: extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(code.entry()) };
//! assert_eq!(f(12), 144);
//! // SAFETY (example): no thread runs the code any more.
//! unsafe { backend.free(code.handle()) };
//! assert_eq!(backend.stats().live_units, 0);
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
pub use jit_backend::EVICTION_GUARD;
