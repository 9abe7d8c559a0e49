#![cfg_attr(feature = "std-adapter", doc = include_str!("../README.md"))]
// Without `std-adapter` the README's examples (kiln-std) cannot compile.
#![cfg_attr(
    not(feature = "std-adapter"),
    doc = "kiln's Cranelift backend, built without its default feature `std-adapter` (the kiln-std adapter): on kiln-core, see [`CraneliftCompiler`]'s example."
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

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

// The cranelift crates in this crate's API, so users build IR with exactly
// the versions kiln-cranelift was built against.
/// Cranelift's code generator, as kiln-cranelift uses it: IR types
/// (`ir::types`), `ir::InstBuilder`, the target ISA of
/// [`CraneliftBackend::isa`].
pub use cranelift_codegen;
/// Cranelift's function builder, as kiln-cranelift uses it: the
/// `FunctionBuilder` a [`FunctionDef`]'s body callback gets.
pub use cranelift_frontend;
