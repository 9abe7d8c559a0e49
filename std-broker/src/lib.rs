#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod after_compile;
mod backend;
mod backoff;
mod bead;
mod beadie;
mod bound;
mod chain;
mod code;
mod code_object;
pub mod compat;
mod deopt;
mod domain;
mod entry;
mod extras;
mod job;
pub mod logs;
mod policy;
mod profile;
mod promote;
mod reclaim;
mod sink;
mod sleepers;
mod state;
mod sync;
mod thread_hints;
mod tiered;
mod trace;
mod warm;
mod work;
mod worker;

pub use backend::{BackendAdapter, BoundBead, CompileError, JitBackend, OsrBuild};
pub use bead::{Bead, CoreHandle, ReloadOutcome, SwapResult};
pub use beadie::{Beadie, BeadieConfig, OsrCompileResult, QuiescentThread, SubmitResult};
pub use chain::Chain;
pub use code::{CompileFailure, NativeCode, logger_panics};
pub use deopt::{
    AlwaysRecompilePolicy, BailoutInfo, DeoptDecision, DeoptPolicy, ExponentialBackoffPolicy, ThresholdDeoptPolicy,
    TieredDeoptPolicy,
};
pub use entry::{EntryFn, TypedBound};
pub use kiln_core::{Budget, OsrEntry, PumpReport, Stats};
pub use policy::{HotnessPolicy, ThresholdPolicy, TieredPolicy};
pub use profile::{MAX_OSR_SITES, Profile, ProfileEntry, ProfileError, ProfileKey};
pub use sink::{CoreEvents, Event, EventKind, EventSink, FunctionRef, LogSink, NameOf};
pub use state::BeadState;
pub use tiered::{TierBackend, TieredAdapter, TieredBound};
pub use trace::TraceSink;
pub use warm::{WarmStart, WarmStartConfig};
pub use worker::{Broker, WorkerPool};
