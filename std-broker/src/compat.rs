//! beadie 0.3's public names, for `use kiln_std::compat as beadie;`.
//!
//! beadie's names, signatures, public fields and variants, as thin layers
//! over kiln-core: the policies are kiln-core's own types; `Bead`,
//! `BeadState`, `DeoptDecision` and the `HotnessPolicy` / `DeoptPolicy`
//! traits are the seed's views of kiln-core's, each converted in one
//! place; `Broker` is kiln-std's [`WorkerPool`](crate::WorkerPool).

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
