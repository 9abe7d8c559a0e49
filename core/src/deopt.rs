//! Deoptimisation: what happens when compiled code bails out (a guard
//! failed) or a compile fails.
//!
//! The broker retires the code, bumps the generation and asks a
//! [`DeoptPolicy`]: recompile, pause first, fall back to a lower tier, or
//! blacklist. A blacklist is not forever unless the policy says so:
//! [`DeoptPolicy::blacklist_decay`] lets a blacklisted function earn another
//! chance after enough calls, with its bailout count reset.

use core::num::NonZeroU32;

/// Why a bead left its compiled code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum BailoutReason {
    /// A guard in compiled code failed.
    Guard {
        /// Which guard (backend-defined).
        guard_id: u32,
        /// Bytecode offset where the interpreter resumes.
        pc_offset: u32,
    },
    /// The compiler returned an error, no code, or panicked.
    CompileFailed,
}

/// What a deopt policy sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Bailout {
    /// What happened.
    pub reason: BailoutReason,
    /// Bailouts this bead has had, this one included.
    pub bailouts: u32,
    /// Tier of the code that bailed (or of the failed compile).
    pub tier: u8,
    /// Calls counted so far.
    pub invocations: u32,
}

/// A deopt policy's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DeoptDecision {
    /// Back to the interpreter; the hotness policy re-promotes it (at once,
    /// if it is still past its threshold).
    Recompile,
    /// Back to the interpreter; do not ask the hotness policy again for
    /// `calls` calls.
    PauseRecompile {
        /// Calls to wait.
        calls: NonZeroU32,
    },
    /// Never compile above `tier` again; recompile at that tier.
    RevertToTier(u8),
    /// Stop compiling (until the blacklist decays, if the policy allows).
    Blacklist,
}

/// Decides what a bailout does to a bead.
pub trait DeoptPolicy {
    /// Called once per bailout or failed compile, without the broker's lock
    /// held. (A bailout refused with `RetireFull` in a race with another
    /// retirement may have been decided without being applied.)
    fn on_bailout(&self, bailout: &Bailout) -> DeoptDecision;

    /// Calls after which a blacklisted bead gets another chance (`None`: never).
    fn blacklist_decay(&self) -> Option<NonZeroU32> {
        None
    }
}

impl<D: DeoptPolicy + ?Sized> DeoptPolicy for &D {
    fn on_bailout(&self, bailout: &Bailout) -> DeoptDecision {
        (**self).on_bailout(bailout)
    }
    fn blacklist_decay(&self) -> Option<NonZeroU32> {
        (**self).blacklist_decay()
    }
}

/// Always recompile; never blacklist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlwaysRecompilePolicy;

impl DeoptPolicy for AlwaysRecompilePolicy {
    fn on_bailout(&self, _bailout: &Bailout) -> DeoptDecision {
        DeoptDecision::Recompile
    }
}

/// Recompile for the first `recompile_limit` bailouts, then blacklist
/// (default 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThresholdDeoptPolicy {
    /// Bailouts that still recompile.
    pub recompile_limit: u32,
}

impl ThresholdDeoptPolicy {
    /// Blacklists after `recompile_limit` recompiles.
    pub const fn new(recompile_limit: u32) -> Self {
        Self { recompile_limit }
    }
}

impl Default for ThresholdDeoptPolicy {
    fn default() -> Self {
        Self::new(3)
    }
}

impl DeoptPolicy for ThresholdDeoptPolicy {
    fn on_bailout(&self, bailout: &Bailout) -> DeoptDecision {
        if bailout.bailouts <= self.recompile_limit { DeoptDecision::Recompile } else { DeoptDecision::Blacklist }
    }
}

/// Pause `base_pause × 2^(n-1)` calls before the n-th recompile; blacklist
/// after `max_recompiles` (default 1,000 and 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExponentialBackoffPolicy {
    /// Pause after the first bailout, in calls.
    pub base_pause: u32,
    /// Recompiles before blacklisting.
    pub max_recompiles: u32,
}

impl ExponentialBackoffPolicy {
    /// Backoff starting at `base_pause` calls, at most `max_recompiles` times.
    pub const fn new(base_pause: u32, max_recompiles: u32) -> Self {
        Self { base_pause, max_recompiles }
    }
}

impl Default for ExponentialBackoffPolicy {
    fn default() -> Self {
        Self::new(1_000, 4)
    }
}

impl DeoptPolicy for ExponentialBackoffPolicy {
    fn on_bailout(&self, bailout: &Bailout) -> DeoptDecision {
        if bailout.bailouts > self.max_recompiles {
            return DeoptDecision::Blacklist;
        }
        let doublings = bailout.bailouts.saturating_sub(1).min(31);
        let pause = self.base_pause.saturating_mul(1 << doublings);
        match NonZeroU32::new(pause) {
            Some(calls) => DeoptDecision::PauseRecompile { calls },
            None => DeoptDecision::Recompile,
        }
    }
}

/// Bailouts of optimised code (tier ≥ 1) fall back to the baseline tier, up
/// to `tier2_revert_limit` times; baseline bailouts recompile up to
/// `tier1_recompile_limit` times; past either, blacklist (default 3 and 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TieredDeoptPolicy {
    /// Baseline bailouts that still recompile.
    pub tier1_recompile_limit: u32,
    /// Optimised bailouts that fall back to baseline.
    pub tier2_revert_limit: u32,
}

impl TieredDeoptPolicy {
    /// A tiered policy with the given limits.
    pub const fn new(tier1_recompile_limit: u32, tier2_revert_limit: u32) -> Self {
        Self { tier1_recompile_limit, tier2_revert_limit }
    }
}

impl Default for TieredDeoptPolicy {
    fn default() -> Self {
        Self::new(3, 1)
    }
}

impl DeoptPolicy for TieredDeoptPolicy {
    fn on_bailout(&self, bailout: &Bailout) -> DeoptDecision {
        let limit = if bailout.tier >= 1 { self.tier2_revert_limit } else { self.tier1_recompile_limit };
        match (bailout.bailouts <= limit, bailout.tier >= 1) {
            (true, true) => DeoptDecision::RevertToTier(0),
            (true, false) => DeoptDecision::Recompile,
            (false, _) => DeoptDecision::Blacklist,
        }
    }
}

/// Wraps a policy so that its blacklist expires after `after` calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlacklistDecay<D> {
    /// The policy that decides bailouts.
    pub inner: D,
    /// Calls a blacklisted bead waits before it may be compiled again.
    pub after: NonZeroU32,
}

impl<D> BlacklistDecay<D> {
    /// `inner`, with blacklists expiring after `after` calls.
    pub const fn new(inner: D, after: NonZeroU32) -> Self {
        Self { inner, after }
    }
}

impl<D: DeoptPolicy> DeoptPolicy for BlacklistDecay<D> {
    fn on_bailout(&self, bailout: &Bailout) -> DeoptDecision {
        self.inner.on_bailout(bailout)
    }
    fn blacklist_decay(&self) -> Option<NonZeroU32> {
        Some(self.after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bailout(bailouts: u32, tier: u8) -> Bailout {
        Bailout { reason: BailoutReason::Guard { guard_id: 0, pc_offset: 0 }, bailouts, tier, invocations: 0 }
    }

    #[test]
    fn threshold_blacklists_after_its_limit() {
        let policy = ThresholdDeoptPolicy::new(2);
        assert_eq!(policy.on_bailout(&bailout(1, 0)), DeoptDecision::Recompile);
        assert_eq!(policy.on_bailout(&bailout(2, 0)), DeoptDecision::Recompile);
        assert_eq!(policy.on_bailout(&bailout(3, 0)), DeoptDecision::Blacklist);
        assert_eq!(AlwaysRecompilePolicy.on_bailout(&bailout(1_000, 1)), DeoptDecision::Recompile);
    }

    #[test]
    fn backoff_doubles_then_blacklists() {
        let policy = ExponentialBackoffPolicy::default();
        let pauses: [u32; 4] = core::array::from_fn(|i| match policy.on_bailout(&bailout(i as u32 + 1, 0)) {
            DeoptDecision::PauseRecompile { calls } => calls.get(),
            other => panic!("unexpected {other:?}"),
        });
        assert_eq!(pauses, [1_000, 2_000, 4_000, 8_000]);
        assert_eq!(policy.on_bailout(&bailout(5, 0)), DeoptDecision::Blacklist);
    }

    #[test]
    fn tiered_reverts_optimised_code_first() {
        let policy = TieredDeoptPolicy::default();
        assert_eq!(policy.on_bailout(&bailout(1, 1)), DeoptDecision::RevertToTier(0));
        assert_eq!(policy.on_bailout(&bailout(2, 1)), DeoptDecision::Blacklist);
        assert_eq!(policy.on_bailout(&bailout(3, 0)), DeoptDecision::Recompile);
        assert_eq!(policy.on_bailout(&bailout(4, 0)), DeoptDecision::Blacklist);
    }

    #[test]
    fn decay_only_adds_an_expiry() {
        let decaying = BlacklistDecay::new(ThresholdDeoptPolicy::new(0), NonZeroU32::new(50).unwrap());
        assert_eq!(decaying.on_bailout(&bailout(1, 0)), DeoptDecision::Blacklist);
        assert_eq!(decaying.blacklist_decay().map(NonZeroU32::get), Some(50));
        assert_eq!(ThresholdDeoptPolicy::default().blacklist_decay(), None);
    }
}
