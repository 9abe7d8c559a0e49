//! beadie 0.3's public names, for `use kiln_std::compat as beadie;`.
//!
//! Everything here is kiln-std's own implementation under beadie's names,
//! signatures, public fields and variants.

pub use crate::{
    AlwaysRecompilePolicy, BailoutInfo, Bead, BeadState, Beadie, Broker, Chain, CoreHandle, DeoptDecision, DeoptPolicy,
    ExponentialBackoffPolicy, HotnessPolicy, OsrCompileResult, OsrEntry, ReloadOutcome, SubmitResult, SwapResult,
    ThresholdDeoptPolicy, ThresholdPolicy, TieredDeoptPolicy, TieredPolicy,
};

/// beadie's `deopt` module.
pub mod deopt {
    pub use crate::{
        AlwaysRecompilePolicy, BailoutInfo, DeoptDecision, DeoptPolicy, ExponentialBackoffPolicy, ThresholdDeoptPolicy,
        TieredDeoptPolicy,
    };
}
