//! beadie 0.3's public names, for `use kiln_std::compat as beadie;`.
//!
//! Everything here is kiln-std's own implementation under beadie's names,
//! signatures, public fields and variants.

pub use crate::{
    AlwaysRecompilePolicy, BackendAdapter, BailoutInfo, Bead, BeadState, Beadie, BoundBead, Broker, Chain,
    CompileError, CoreHandle, DeoptDecision, DeoptPolicy, ExponentialBackoffPolicy, HotnessPolicy, JitBackend,
    OsrBuild, OsrCompileResult, OsrEntry, ReloadOutcome, SubmitResult, SwapResult, ThresholdDeoptPolicy,
    ThresholdPolicy, TieredAdapter, TieredBound, TieredDeoptPolicy, TieredPolicy,
};

/// beadie's `deopt` module.
pub mod deopt {
    pub use crate::{
        AlwaysRecompilePolicy, BailoutInfo, DeoptDecision, DeoptPolicy, ExponentialBackoffPolicy, ThresholdDeoptPolicy,
        TieredDeoptPolicy,
    };
}
