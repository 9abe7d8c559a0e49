#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
mod book;
mod cache;
mod compiled;
mod error;
mod memory;
mod settings;
mod stats;
#[cfg(feature = "std-adapter")]
mod std_adapter;
mod unit;

pub use book::UnitBook;
pub use cache::CodeCache;
pub use compiled::CompiledFunction;
pub use error::{BackendError, catch_panic, check_osr_sites, panic_message};
pub use memory::{CodeMemory, Registered};
pub use settings::{HostSymbol, MemorySettings};
pub use stats::CodeStats;
#[cfg(feature = "std-adapter")]
#[cfg_attr(docsrs, doc(cfg(feature = "std-adapter")))]
pub use std_adapter::evict_through_bead;
pub use unit::{Code, Owner, Unit, UnitCode};
