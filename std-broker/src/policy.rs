//! Hotness policies with beadie's shape: `should_promote(invocations)`.
//!
//! The seed's [`HotnessPolicy`] trait is a view, not a second policy
//! engine: the built-in policies are kiln-core's own types (re-exported),
//! and [`PolicyLadder`] is the one adapter that turns a list of seed
//! policies (tier `i` = kiln tier `i`, from 0) into kiln-core's
//! `HotnessPolicy`.
//!
//! A policy that also reports its threshold (`promotion_threshold`, as the
//! built-in ones do) lets kiln count down to it with a plain load and store;
//! one that does not is asked on every interpreted call, as beadie asks.

use std::sync::Arc;

use std::num::NonZeroU32;

use kiln_core::{Decision, HotnessStats, LoadScaling};

use crate::code::HostPanics;

/// Decides when a bead's invocation count warrants promotion.
pub trait HotnessPolicy: Send + Sync + 'static {
    /// `true` once `invocations` crossed the promotion threshold.
    fn should_promote(&self, invocations: u32) -> bool;

    /// The call count at which `should_promote` starts returning `true`, if
    /// the policy is a plain threshold. Lets kiln skip asking until then.
    fn promotion_threshold(&self) -> Option<u32> {
        None
    }
}

impl<P: HotnessPolicy + ?Sized> HotnessPolicy for Box<P> {
    fn should_promote(&self, invocations: u32) -> bool {
        (**self).should_promote(invocations)
    }
    fn promotion_threshold(&self) -> Option<u32> {
        (**self).promotion_threshold()
    }
}

/// Promote after a fixed number of calls (default 1,000), with
/// `queue_ahead`: kiln-core's policy, used here through beadie's trait.
pub use kiln_core::ThresholdPolicy;

/// Two thresholds, 500 / 10,000 by default; as a `Beadie` policy it promotes
/// at the first ([`TieredPolicy::tier`] tells a compile closure which, in
/// the seed's numbering: `Some(1)` / `Some(2)` are kiln tiers 0 and 1).
pub use kiln_core::TieredPolicy;

impl HotnessPolicy for ThresholdPolicy {
    fn should_promote(&self, invocations: u32) -> bool {
        invocations >= self.queue_at()
    }
    fn promotion_threshold(&self) -> Option<u32> {
        Some(self.queue_at())
    }
}

impl HotnessPolicy for TieredPolicy {
    fn should_promote(&self, invocations: u32) -> bool {
        invocations >= self.tier1_threshold
    }
    fn promotion_threshold(&self) -> Option<u32> {
        Some(self.tier1_threshold)
    }
}

/// How long to wait before asking again at `invocations`, for a policy
/// whose threshold is `threshold`.
fn wait_for(threshold: u32, invocations: u32) -> Decision {
    Decision::wait(threshold.saturating_sub(invocations).max(1))
}

/// A ladder of seed policies as one kiln-core policy: tier `i` is reached
/// when `tiers[i].should_promote(invocations)`.
///
/// The policies are host code, asked on interpreter threads and on workers
/// (after a publish): each question runs under `catch_unwind`, and a panic
/// is counted with the `Beadie`'s host panics and answered "ask again in
/// [`AFTER_PANIC`] calls".
///
/// Under load the ladder raises the thresholds it knows
/// ([`HotnessPolicy::promotion_threshold`]) by [`LOAD_SCALING`], as
/// HotSpot scales its thresholds with the compile queue's length; a policy
/// that reports no threshold is asked unscaled. A bead a full queue turns
/// away waits [`HotnessStats::doubling_wait`] from its next tier's
/// threshold (16 calls, then doubling), or [`QUEUE_FULL_WAIT_UNKNOWN`]
/// calls when that threshold is unknown.
pub(crate) struct PolicyLadder {
    tiers: Vec<Box<dyn HotnessPolicy>>,
    panics: Arc<HostPanics>,
    load: LoadScaling,
}

/// How much kiln-std raises known thresholds as the queue fills.
pub(crate) const LOAD_SCALING: LoadScaling = LoadScaling { percent: 0 };

/// Queue-full wait for a tier whose policy reports no threshold.
const QUEUE_FULL_WAIT_UNKNOWN: u32 = 64;

/// Calls (or back-edge units) to wait after a policy panicked.
const AFTER_PANIC: u32 = 1_000;

impl PolicyLadder {
    pub(crate) fn new(tiers: Vec<Box<dyn HotnessPolicy>>) -> Self {
        assert!(!tiers.is_empty(), "at least one tier");
        assert!(tiers.len() <= usize::from(kiln_core::MAX_TIER) + 1, "at most 15 tiers");
        Self { tiers, panics: Arc::default(), load: LOAD_SCALING }
    }

    pub(crate) fn single(policy: Box<dyn HotnessPolicy>) -> Self {
        Self::new(vec![policy])
    }

    /// The same ladder, counting policy panics in `panics`.
    pub(crate) fn counting_panics_in(mut self, panics: Arc<HostPanics>) -> Self {
        self.panics = panics;
        self
    }

    fn ask(&self, question: impl FnOnce() -> Decision) -> Decision {
        self.panics.isolate("HotnessPolicy", question).unwrap_or(Decision::wait(AFTER_PANIC))
    }

    fn decide_unguarded(&self, stats: &HotnessStats) -> Decision {
        let top = (self.tiers.len() - 1).min(usize::from(stats.tier_cap));
        let next = stats.tier.map_or(0, |tier| usize::from(tier) + 1);
        if next > top {
            return Decision::NEVER;
        }
        let reached = (next..=top).rev().find(|&tier| self.reached(tier, stats));
        match reached {
            Some(tier) => Decision::Promote { tier: tier as u8, priority: stats.hotness() },
            None => match self.tiers[next].promotion_threshold() {
                Some(threshold) if self.load.percent > 0 => {
                    wait_for(self.load.apply(threshold, stats), stats.invocations)
                }
                Some(threshold) => wait_for(threshold, stats.invocations),
                None => Decision::wait(1),
            },
        }
    }

    /// Whether `tier`'s policy promotes at `stats`: at its threshold raised
    /// for the queue's load when it reports one, else as it answers.
    fn reached(&self, tier: usize, stats: &HotnessStats) -> bool {
        let policy = &self.tiers[tier];
        if self.load.percent > 0
            && let Some(threshold) = policy.promotion_threshold()
        {
            return stats.invocations >= self.load.apply(threshold, stats);
        }
        policy.should_promote(stats.invocations)
    }

    fn decide_backedge_unguarded(&self, stats: &HotnessStats) -> Decision {
        if stats.tier.is_some() {
            return Decision::NEVER;
        }
        let as_calls = stats.backedges / BACKEDGES_PER_CALL;
        if self.tiers[0].should_promote(as_calls) {
            return Decision::Promote { tier: 0, priority: stats.hotness() };
        }
        match self.tiers[0].promotion_threshold() {
            Some(threshold) => {
                Decision::wait(threshold.saturating_mul(BACKEDGES_PER_CALL).saturating_sub(stats.backedges).max(1))
            }
            None => Decision::wait(BACKEDGES_PER_CALL),
        }
    }
}

impl kiln_core::HotnessPolicy for PolicyLadder {
    fn decide(&self, stats: &HotnessStats) -> Decision {
        self.ask(|| self.decide_unguarded(stats))
    }

    fn max_tier(&self) -> u8 {
        (self.tiers.len() - 1) as u8
    }

    /// Back-edges count as a tenth of a call each for the first tier's
    /// policy (HotSpot's back-edge thresholds are an order of magnitude
    /// above its call thresholds too): an OSR compile is queued when
    /// `should_promote(backedges / 10)`.
    fn decide_backedge(&self, stats: &HotnessStats) -> Decision {
        self.ask(|| self.decide_backedge_unguarded(stats))
    }

    fn queue_full_wait(&self, stats: &HotnessStats) -> NonZeroU32 {
        let next = stats.tier.map_or(0, |tier| usize::from(tier) + 1).min(self.tiers.len() - 1);
        let threshold = self.panics.isolate("HotnessPolicy", || self.tiers[next].promotion_threshold());
        match threshold.flatten() {
            Some(threshold) => stats.doubling_wait(threshold),
            None => NonZeroU32::new(QUEUE_FULL_WAIT_UNKNOWN).unwrap_or(NonZeroU32::MIN),
        }
    }
}

/// How many loop back-edges weigh as much as one call.
const BACKEDGES_PER_CALL: u32 = 10;

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::HotnessPolicy as _;

    fn stats(invocations: u32, tier: Option<u8>) -> HotnessStats {
        HotnessStats { invocations, backedges: 0, tier, tier_cap: 14, queue_len: 0, queue_capacity: 8 }
    }

    #[test]
    fn known_thresholds_count_down_unknown_ones_ask_each_call() {
        struct Even;
        impl HotnessPolicy for Even {
            fn should_promote(&self, invocations: u32) -> bool {
                invocations.is_multiple_of(2)
            }
        }
        let known = PolicyLadder::single(Box::new(ThresholdPolicy::new(100).queue_ahead(40)));
        assert_eq!(known.decide(&stats(10, None)), Decision::wait(50));
        assert_eq!(known.decide(&stats(60, None)), Decision::Promote { tier: 0, priority: 60 });
        let unknown = PolicyLadder::single(Box::new(Even));
        assert_eq!(unknown.decide(&stats(3, None)), Decision::wait(1));
        assert!(matches!(unknown.decide(&stats(4, None)), Decision::Promote { .. }));
        assert_eq!(unknown.decide(&stats(4, Some(0))), Decision::NEVER);
    }

    #[test]
    fn backedges_weigh_a_tenth_of_a_call() {
        let ladder = PolicyLadder::single(Box::new(ThresholdPolicy::new(100)));
        let mut looping = stats(1, None);
        looping.backedges = 500;
        assert_eq!(ladder.decide_backedge(&looping), Decision::wait(500));
        looping.backedges = 1_000;
        assert!(matches!(ladder.decide_backedge(&looping), Decision::Promote { tier: 0, .. }));
        looping.tier = Some(0);
        assert_eq!(ladder.decide_backedge(&looping), Decision::NEVER);
    }

    #[test]
    fn ladder_climbs_per_tier_policy() {
        let ladder = PolicyLadder::new(vec![Box::new(ThresholdPolicy::new(10)), Box::new(ThresholdPolicy::new(100))]);
        assert_eq!(ladder.decide(&stats(50, Some(0))), Decision::wait(50));
        assert_eq!(ladder.decide(&stats(100, Some(0))), Decision::Promote { tier: 1, priority: 100 });
        assert_eq!(ladder.decide(&stats(500, None)), Decision::Promote { tier: 1, priority: 500 });
        assert_eq!(kiln_core::HotnessPolicy::max_tier(&ladder), 1);
    }

    #[test]
    fn a_turned_away_bead_waits_briefly_then_ever_longer() {
        let ladder =
            PolicyLadder::new(vec![Box::new(ThresholdPolicy::new(1_000)), Box::new(ThresholdPolicy::new(5_000))]);
        let wait = |invocations, tier| ladder.queue_full_wait(&stats(invocations, tier)).get();
        assert_eq!((wait(1_000, None), wait(1_016, None), wait(1_032, None), wait(1_064, None)), (16, 16, 32, 64));
        assert_eq!(wait(5_200, Some(0)), 200, "counted from the next tier's threshold");
        struct Unknown;
        impl HotnessPolicy for Unknown {
            fn should_promote(&self, _: u32) -> bool {
                true
            }
        }
        let unknown = PolicyLadder::single(Box::new(Unknown));
        assert_eq!(unknown.queue_full_wait(&stats(9_000, None)).get(), QUEUE_FULL_WAIT_UNKNOWN);
    }

    #[test]
    fn load_raises_known_thresholds_only() {
        let mut ladder = PolicyLadder::single(Box::new(ThresholdPolicy::new(100)));
        ladder.load = LoadScaling { percent: 100 };
        let mut loaded = stats(100, None);
        loaded.queue_len = 8;
        assert_eq!(ladder.decide(&loaded), Decision::wait(100), "a full queue doubles the threshold");
        loaded.queue_len = 0;
        assert!(matches!(ladder.decide(&loaded), Decision::Promote { .. }));
    }

    #[test]
    fn seed_defaults() {
        assert_eq!(ThresholdPolicy::default().threshold, 1_000);
        let tiered = TieredPolicy::default();
        assert_eq!((tiered.tier1_threshold, tiered.tier2_threshold), (500, 10_000));
        assert_eq!((tiered.tier(499), tiered.tier(500), tiered.tier(10_000)), (None, Some(1), Some(2)));
    }
}
