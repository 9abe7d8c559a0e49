//! # kiln-core
//!
//! The `no_std`, allocation-free core of kiln, a hot-function promotion
//! broker between an interpreter and a JIT compiler. It counts calls,
//! decides when a function is hot ([`HotnessPolicy`]), queues a compile
//! ([`Broker`]), wakes the host ([`WakeHook`]), lets it run the job wherever
//! it likes ([`Broker::pump`], [`Broker::claim`], [`pump_jobs`]), publishes the native entry (and OSR
//! entries) back into the function's [`Bead`], and retires replaced code
//! until the host declares quiescence ([`Broker::quiesce`]).
//!
//! Every capacity is a const generic; nothing allocates; the compiled path
//! of [`Broker::on_invoke`] is one Acquire load and a branch.
//!
//! ```
//! use core::ptr::NonNull;
//! use kiln_core::*;
//!
//! fn native_square(x: i64) -> i64 { x * x }
//!
//! /// A "JIT" that hands out a function of this binary.
//! struct Jit { released: usize }
//! impl<'a> Compiler<&'a Bead> for Jit {
//!     type Error = ();
//!     fn compile(&mut self, _job: &CompileRequest<'_, &'a Bead>) -> Result<Compiled, ()> {
//!         let handle = CodeHandle::from_raw(1).unwrap();
//!         Compiled::new(native_square as fn(i64) -> i64 as *mut (), handle).map_err(|_| ())
//!     }
//!     fn release(&mut self, _code: CodeHandle) { self.released += 1 }
//! }
//!
//! static SQUARE: Bead = Bead::new(core::ptr::null_mut());
//! let broker: Broker<&Bead, _, _> =
//!     Broker::new(ThresholdPolicy::new(100), ThresholdDeoptPolicy::default(), NoWake, NoEvents);
//! let mut jit = Jit { released: 0 };
//!
//! let bead = &SQUARE;
//! let mut native_calls = 0;
//! for call in 0..1_000 {
//!     match broker.on_invoke(&bead) {
//!         Some(entry) => {
//!             // SAFETY (example): the entry is `native_square`.
//!             let f: fn(i64) -> i64 = unsafe { core::mem::transmute(entry.as_ptr()) };
//!             assert_eq!(f(call), call * call);
//!             native_calls += 1;
//!         }
//!         None => { /* interpret */ }
//!     }
//!     // Between "frames", the host pumps compile work.
//!     broker.pump(&mut jit, Budget::jobs(1));
//! }
//! assert_eq!(bead.state(), BeadState::Compiled(0));
//! assert_eq!(native_calls, 900);
//! ```
#![no_std]
#![cfg_attr(not(test), warn(clippy::std_instead_of_core))]

#[macro_use]
mod fmt;

mod bead;
mod broker;
mod compiler;
mod deopt;
mod dyn_broker;
mod error;
mod job;
mod lifecycle;
mod osr;
mod policy;
#[cfg(not(loom))]
mod pool;
mod pump;
mod queue;
pub mod reclaim;
mod state;
mod stats;
mod sync;
mod wake;

pub use bead::{AsBead, Bead, BeadRef, HandleOf};
pub use broker::{Broker, CallCount, ClaimError};
pub use compiler::{CodeHandle, Compiled, Compiler, NullEntry};
pub use deopt::{
    AlwaysRecompilePolicy, Bailout, BailoutReason, BlacklistDecay, DeoptDecision, DeoptPolicy,
    ExponentialBackoffPolicy, ThresholdDeoptPolicy, TieredDeoptPolicy,
};
pub use dyn_broker::DynBroker;
pub use error::{KilnError, Refused};
pub use job::{CompileRequest, Job, JobKind, JobOutcome};
pub use osr::{OsrEntry, OsrTable, OsrTableError};
pub use policy::{
    Decision, HotnessPolicy, HotnessStats, LoadScaling, QUEUE_FULL_FIRST_WAIT, ThresholdPolicy, TierLadder,
    TieredPolicy,
};
#[cfg(not(loom))]
pub use pool::BeadPool;
#[cfg(feature = "std")]
pub use pump::StdClock;
pub use pump::{Budget, Clock, Handled, JobRunner, PumpReport, PumpStop, pump_jobs};
pub use reclaim::ReclaimMode;
pub use state::{BeadState, Generation, MAX_TIER};
pub use stats::{Events, LogEvents, NoEvents, Stats};
#[allow(deprecated)]
pub use wake::{NoPump, Pump};
pub use wake::{NoWake, WakeHook};
