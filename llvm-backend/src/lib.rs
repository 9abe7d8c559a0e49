#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
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
#[cfg_attr(docsrs, doc(cfg(feature = "llvm")))]
pub use backend::{LLVM_HANDLE_TAG, LlvmBackend, is_llvm_handle};
#[cfg(feature = "llvm")]
#[cfg_attr(docsrs, doc(cfg(feature = "llvm")))]
pub use compiler::LlvmCompiler;
#[cfg(feature = "llvm")]
#[cfg_attr(docsrs, doc(cfg(feature = "llvm")))]
pub use config::{ConfigError, LlvmConfig};
#[cfg(feature = "llvm")]
#[cfg_attr(docsrs, doc(cfg(feature = "llvm")))]
pub use def::{BodyBuilder, BuildContext, Entry, FunctionDef, ValueType};
#[cfg(feature = "llvm")]
#[cfg_attr(docsrs, doc(cfg(feature = "llvm")))]
pub use error::LlvmError;
#[cfg(feature = "llvm")]
#[cfg_attr(docsrs, doc(cfg(feature = "llvm")))]
pub use inkwell;
#[cfg(feature = "llvm")]
#[cfg_attr(docsrs, doc(cfg(feature = "llvm")))]
pub use kiln_backend_kit::{CodeStats, CompiledFunction};
pub use tier::{Side, TierDispatch, TierError};
