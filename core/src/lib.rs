#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
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
mod profile;
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
pub use profile::{BeadProfile, ProfileRecord, records as profile_records};
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub use pump::StdClock;
pub use pump::{Budget, Clock, Handled, JobRunner, PumpReport, PumpStop, pump_jobs};
pub use reclaim::ReclaimMode;
pub use state::{BeadState, Generation, MAX_TIER};
pub use stats::{Events, LogEvents, NoEvents, Stats};
#[allow(deprecated)]
pub use wake::{NoPump, Pump};
pub use wake::{NoWake, WakeHook};
