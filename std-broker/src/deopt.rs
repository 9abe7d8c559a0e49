//! Bailouts in the seed's terms, over kiln-core's deopt machinery.
//!
//! The four policies are kiln-core's own types, re-exported: their names,
//! fields, constructors and defaults are the seed's. What differs is the
//! shape of the question and of the answer, so those two are views:
//!
//! - the seed's [`DeoptPolicy`] trait asks with the bead, a [`BailoutInfo`]
//!   and the bailout count; [`BailoutInfo::to_kiln`] turns that into
//!   kiln-core's [`Bailout`](kiln_core::Bailout);
//! - the seed's [`DeoptDecision`] anchors a pause at an invocation count and
//!   names the first tier `RevertToTier1`; kiln-core's counts the pause in
//!   calls and numbers tiers from 0. [`DeoptDecision::from_kiln`] and
//!   [`DeoptDecision::to_kiln`] are the only two conversions.
//!
//! Tiers: kiln numbers compiled tiers from 0 (tier 0 is the first, or
//! baseline, tier). The seed's `RevertToTier1` and
//! `TieredDeoptPolicy::tier1_recompile_limit` / `tier2_revert_limit` name
//! the same tiers counting from 1: seed tier 1 is kiln tier 0.

use core::num::NonZeroU32;

pub use kiln_core::{AlwaysRecompilePolicy, ExponentialBackoffPolicy, ThresholdDeoptPolicy, TieredDeoptPolicy};

use crate::Bead;

/// A failed guard in compiled code, as the runtime reports it.
#[derive(Debug, Clone)]
pub struct BailoutInfo {
    /// Which guard failed (backend-defined).
    pub guard_id: u32,
    /// Bytecode offset where the interpreter resumes.
    pub pc_offset: u32,
    /// Generation of the code that bailed (`0` for first-tier code). The
    /// seed's word for which tier the code belongs to (≥ 1: optimised
    /// code), not the bead's [`generation`](crate::Bead::generation)
    /// counter of discarded compiles.
    pub generation: u64,
}

impl BailoutInfo {
    /// kiln-core's reason for this bailout.
    pub(crate) fn reason(&self) -> kiln_core::BailoutReason {
        kiln_core::BailoutReason::Guard { guard_id: self.guard_id, pc_offset: self.pc_offset }
    }

    /// This bailout as kiln-core's policies see it: the `bailouts`-th of
    /// `bead`, at its invocation count. The seed marks optimised code by a
    /// generation ≥ 1; kiln-core by its tier, so that is tier 1 here and
    /// first-tier code is tier 0.
    pub(crate) fn to_kiln(&self, bead: &Bead, bailouts: u32) -> kiln_core::Bailout {
        kiln_core::Bailout {
            reason: self.reason(),
            bailouts,
            tier: u8::from(self.generation >= 1),
            invocations: bead.invocation_count(),
        }
    }
}

/// What a deopt policy decided, in the seed's shape: a view of kiln-core's
/// [`kiln_core::DeoptDecision`], which counts a pause in calls and numbers
/// tiers from 0: here a pause ends at an invocation count and the first
/// compiled tier is the seed's tier 1 (`RevertToTier1` falls back to kiln's
/// tier 0). kiln-std converts between the two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeoptDecision {
    /// Back to the interpreter; promote again when hot.
    Recompile,
    /// Stop compiling this bead.
    Blacklist,
    /// Drop optimised code and compile only the first tier (kiln's tier 0)
    /// from now on.
    RevertToTier1,
    /// Back to the interpreter; no promotion before `until_invocations`.
    PauseRecompile {
        /// Invocation count before which the bead is not promoted.
        until_invocations: u32,
    },
}

impl DeoptDecision {
    /// Whether the bead may be compiled again.
    pub fn allows_recompile(&self) -> bool {
        matches!(self, Self::Recompile | Self::PauseRecompile { .. })
    }

    /// Whether this stops (further) compilation for good.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Blacklist | Self::RevertToTier1)
    }

    /// kiln-core's `decision` for a bead at `invocations` calls, in the
    /// seed's shape. Any revert is to the first tier: the seed has no other.
    pub(crate) fn from_kiln(decision: kiln_core::DeoptDecision, invocations: u32) -> Self {
        match decision {
            kiln_core::DeoptDecision::Recompile => Self::Recompile,
            kiln_core::DeoptDecision::PauseRecompile { calls } => {
                Self::PauseRecompile { until_invocations: invocations.saturating_add(calls.get()) }
            }
            kiln_core::DeoptDecision::RevertToTier(_) => Self::RevertToTier1,
            kiln_core::DeoptDecision::Blacklist => Self::Blacklist,
        }
    }

    /// This decision as kiln-core applies it to a bead at `invocations`
    /// calls. A pause that already ran out is a recompile.
    pub(crate) fn to_kiln(&self, invocations: u32) -> kiln_core::DeoptDecision {
        match *self {
            Self::Recompile => kiln_core::DeoptDecision::Recompile,
            Self::Blacklist => kiln_core::DeoptDecision::Blacklist,
            Self::RevertToTier1 => kiln_core::DeoptDecision::RevertToTier(0),
            Self::PauseRecompile { until_invocations } => {
                match NonZeroU32::new(until_invocations.saturating_sub(invocations)) {
                    Some(calls) => kiln_core::DeoptDecision::PauseRecompile { calls },
                    None => kiln_core::DeoptDecision::Recompile,
                }
            }
        }
    }
}

/// Decides what a bailout does, in the seed's shape: asked with the bead,
/// a [`BailoutInfo`] and the bailout count. kiln-core's four policies
/// (re-exported here under the seed's names) implement it through one
/// translation of the question and of the answer.
pub trait DeoptPolicy: Send + Sync + 'static {
    /// Called once per bailout; `bailout_count` includes this one.
    fn on_bailout(&self, bead: &Bead, info: &BailoutInfo, bailout_count: u32) -> DeoptDecision;
}

/// Asks kiln-core's `policy` a seed question and answers in the seed's shape.
fn decide_as_seed(
    policy: &impl kiln_core::DeoptPolicy,
    bead: &Bead,
    info: &BailoutInfo,
    bailout_count: u32,
) -> DeoptDecision {
    let bailout = info.to_kiln(bead, bailout_count);
    DeoptDecision::from_kiln(policy.on_bailout(&bailout), bailout.invocations)
}

/// The seed's trait on kiln-core's policies, each through
/// [`decide_as_seed`]: so `ExponentialBackoffPolicy` anchors its pauses at
/// the bead's invocation count, and `TieredDeoptPolicy` treats code of
/// generation ≥ 1 as optimised code (kiln's tier 1) and generation 0 as
/// the first tier (kiln's tier 0), as in the seed.
macro_rules! seed_deopt_policy {
    ($($policy:ty),* $(,)?) => {$(
        impl DeoptPolicy for $policy {
            fn on_bailout(&self, bead: &Bead, info: &BailoutInfo, bailout_count: u32) -> DeoptDecision {
                decide_as_seed(self, bead, info, bailout_count)
            }
        }
    )*};
}

seed_deopt_policy!(AlwaysRecompilePolicy, ThresholdDeoptPolicy, ExponentialBackoffPolicy, TieredDeoptPolicy);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_survive_the_round_trip_through_kiln_core() {
        let at = 1_000;
        for decision in [
            DeoptDecision::Recompile,
            DeoptDecision::Blacklist,
            DeoptDecision::RevertToTier1,
            DeoptDecision::PauseRecompile { until_invocations: at + 64 },
        ] {
            assert_eq!(DeoptDecision::from_kiln(decision.to_kiln(at), at), decision);
        }
        let ran_out = DeoptDecision::PauseRecompile { until_invocations: at - 1 };
        assert_eq!(ran_out.to_kiln(at), kiln_core::DeoptDecision::Recompile);
        let optimised = kiln_core::DeoptDecision::RevertToTier(0);
        assert_eq!(DeoptDecision::RevertToTier1.to_kiln(at), optimised);
    }

    #[test]
    fn seed_generation_is_kiln_tier() {
        let bead = Bead::new(std::ptr::null_mut(), None);
        let info = |generation| BailoutInfo { guard_id: 7, pc_offset: 3, generation };
        assert_eq!(info(0).to_kiln(&bead, 2).tier, 0);
        assert_eq!(info(5).to_kiln(&bead, 2).tier, 1);
        let bailout = info(0).to_kiln(&bead, 2);
        assert_eq!((bailout.bailouts, bailout.reason), (2, info(0).reason()));
    }
}
