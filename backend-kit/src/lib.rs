//! # kiln-backend-kit
//!
//! The part of a kiln JIT backend that does not depend on its compiler:
//! kiln-cranelift and kiln-llvm both build on it and keep only their IR
//! building, code generation and JIT-module glue.
//!
//! - [`Unit`]: one compile's code — the normal entry and its OSR entries,
//!   published and retired together — over the backend's [`UnitCode`] (a
//!   Cranelift `JITModule`, an ORC resource tracker), and its [`Owner`].
//! - [`CodeCache`]: the live units, the budget's books ([`CodeStats`]), the
//!   CLOCK sweep and the choice and queue of eviction victims.
//! - [`CodeMemory`]: a backend's shared state around the cache (budget,
//!   eviction pause, lock, failure counting, freeing).
//! - [`UnitBook`]: a kiln-core compiler's book of which bead owns which unit,
//!   and its `evict(&dyn DynBroker)`.
//! - [`MemorySettings`]: the config pieces every backend has (host symbols,
//!   code budget, eviction pause).
//! - [`BackendError`]: the error shapes the shared code builds, and the
//!   guarded run of host code ([`catch_panic`]).
//!
//! ## The eviction rule
//!
//! A compile only *chooses* victims (marked evicting and queued): it runs
//! inside kiln's compile, which must not call back into kiln. They are sent
//! back to the interpreter once the compile is over — kiln-core units by
//! [`UnitBook::evict`] (the backend's compiler `evict`, after `pump`),
//! kiln-std beads by [`CodeMemory::evict_bead_victims`] (feature
//! `std-adapter`, from the backend's `JitBackend::after_compile`).
//!
//! ## Features
//!
//! - `std-adapter` (off by default): units owned by kiln-std beads and the
//!   kiln-std glue. A backend enables it from its own kiln-std feature, so
//!   without that feature kiln-std is not built.

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
pub use std_adapter::evict_through_bead;
pub use unit::{Code, Owner, Unit, UnitCode};
