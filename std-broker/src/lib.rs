//! # kiln-std
//!
//! kiln on std: a background worker thread (or a pool), compile jobs as
//! closures, `Arc` beads, panic isolation, `log` tracing, and beadie's API —
//! a beadie user moves by changing the dependency and the import path.
//!
//! ```
//! use kiln_std::{Beadie, ThresholdPolicy};
//!
//! extern "C" fn native_double(x: i64) -> i64 { x * 2 }
//!
//! let beadie = Beadie::with_policy(ThresholdPolicy::new(100));
//! let bead = beadie.register(std::ptr::null_mut(), None);
//! let mut native_calls = 0;
//! for call in 0..100_000 {
//!     let code = beadie.on_invoke(&bead, |_bead| native_double as extern "C" fn(i64) -> i64 as *mut ());
//!     if let Some(code) = code {
//!         // SAFETY (example): the only code compiled for this bead is `native_double`.
//!         let f: extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(code) };
//!         assert_eq!(f(call), call * 2);
//!         native_calls += 1;
//!     }
//! #   if native_calls == 0 && call % 1000 == 999 { std::thread::sleep(std::time::Duration::from_millis(1)); }
//! }
//! assert!(native_calls > 0);
//! ```

mod after_compile;
mod backend;
mod bead;
mod beadie;
mod code;
pub mod compat;
mod deopt;
mod domain;
mod entry;
mod extras;
mod job;
pub mod logs;
mod policy;
mod promote;
mod reclaim;
mod state;
mod sync;
mod tiered;
mod work;
mod worker;

pub use backend::{BackendAdapter, BoundBead, CompileError, JitBackend, OsrBuild};
pub use bead::{Bead, CoreHandle, ReloadOutcome, SwapResult};
pub use beadie::{Beadie, BeadieConfig, Chain, OsrCompileResult, QuiescentThread, SubmitResult};
pub use code::{CompileFailure, NativeCode, logger_panics};
pub use deopt::{
    AlwaysRecompilePolicy, BailoutInfo, DeoptDecision, DeoptPolicy, ExponentialBackoffPolicy, ThresholdDeoptPolicy,
    TieredDeoptPolicy,
};
pub use entry::{EntryFn, TypedBound};
pub use kiln_core::{Budget, OsrEntry, PumpReport, Stats};
pub use policy::{HotnessPolicy, ThresholdPolicy, TieredPolicy};
pub use state::BeadState;
pub use tiered::{TierBackend, TieredAdapter, TieredBound};
pub use worker::{Broker, WorkerPool};

/// The workspace README's examples (kiln-core's and kiln-std's), compiled
/// and run as doctests here, where both crates are in reach.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
