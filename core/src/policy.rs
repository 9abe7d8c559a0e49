//! Hotness policies: when a counting bead is promoted, and to which tier.
//!
//! A policy is consulted only when a bead's countdown runs out, never on the
//! per-call path. It answers either "promote to tier t now" or "look again
//! after k more calls" — the `k` becomes the next countdown, so a policy that
//! wants to be asked rarely simply returns a large `k`. Decisions use
//! [`HotnessStats`], which includes the job queue's depth so a policy can
//! raise its thresholds when the compiler is behind (load awareness), and
//! the priority of a promotion orders the queue (hotter first).

use core::num::NonZeroU32;

/// What a policy sees when a countdown runs out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct HotnessStats {
    /// Calls counted so far (approximate under races, like every counter).
    pub invocations: u32,
    /// Weighted loop back-edges counted so far.
    pub backedges: u32,
    /// Tier of the installed code, `None` while interpreted.
    pub tier: Option<u8>,
    /// Highest tier this bead may be compiled at (lowered by deopt).
    pub tier_cap: u8,
    /// Jobs waiting in the queue right now.
    pub queue_len: usize,
    /// The queue's capacity.
    pub queue_capacity: usize,
}

impl HotnessStats {
    /// A single hotness figure (calls plus back-edges), used as queue priority.
    pub fn hotness(&self) -> u32 {
        self.invocations.saturating_add(self.backedges)
    }

    /// The wait after a full queue turned this bead away, for a policy
    /// whose (unscaled) trigger is `trigger` calls: as many calls as the
    /// bead has already counted past its trigger, at least
    /// [`QUEUE_FULL_FIRST_WAIT`] and at most `trigger`. A bead refused at
    /// its trigger waits 16, comes back at +16 and waits 16, then 32, 64,
    /// ...: the wait doubles with every refusal without a per-bead counter,
    /// so a bead the queue keeps turning away asks ever more rarely, and one
    /// that found the queue full once is back within a few dozen calls.
    pub fn doubling_wait(&self, trigger: u32) -> NonZeroU32 {
        let past = self.invocations.saturating_sub(trigger);
        let wait = past.clamp(QUEUE_FULL_FIRST_WAIT, trigger.max(QUEUE_FULL_FIRST_WAIT));
        NonZeroU32::new(wait).unwrap_or(NonZeroU32::MIN)
    }
}

/// A policy's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Decision {
    /// Queue a compile at `tier`; higher `priority` is compiled first.
    Promote {
        /// Tier to compile at (capped by the bead's tier cap).
        tier: u8,
        /// Queue priority; [`HotnessStats::hotness`] is the usual choice.
        priority: u32,
    },
    /// Ask again after this many more calls (or back-edges).
    Wait(NonZeroU32),
}

impl Decision {
    /// "Never ask again" in practice: the largest countdown.
    pub const NEVER: Decision = Decision::Wait(NonZeroU32::MAX);

    /// Wait `calls` more calls, at least one.
    pub fn wait(calls: u32) -> Decision {
        Decision::Wait(NonZeroU32::new(calls).unwrap_or(NonZeroU32::MIN))
    }
}

/// Decides when a bead is hot enough to compile.
pub trait HotnessPolicy {
    /// Called when the call countdown runs out.
    fn decide(&self, stats: &HotnessStats) -> Decision;

    /// Called when the back-edge countdown runs out; a promotion here is an
    /// OSR compile for the loop site that crossed. Never promotes by default.
    fn decide_backedge(&self, stats: &HotnessStats) -> Decision {
        let _ = stats;
        Decision::NEVER
    }

    /// How much one back-edge probe takes off the back-edge countdown.
    fn backedge_weight(&self) -> u32 {
        1
    }

    /// Highest tier this policy promotes to; code at this tier is final and
    /// takes the one-load fast path.
    fn max_tier(&self) -> u8 {
        0
    }

    /// Calls a bead waits before it may be promoted again after its job
    /// left the queue without running: cancelled at shutdown, abandoned by
    /// its pumper, or (unless [`queue_full_wait`](Self::queue_full_wait)
    /// says otherwise) refused or evicted by a full queue.
    fn queue_full_cooldown(&self) -> NonZeroU32 {
        NonZeroU32::new(256).unwrap_or(NonZeroU32::MIN)
    }

    /// Calls a bead waits before asking again after a full queue refused its
    /// promotion or evicted its job for a hotter one. `stats` are the
    /// bead's as it is turned away. The built-in policies wait a short
    /// [`QUEUE_FULL_FIRST_WAIT`] calls and double the wait on each refusal
    /// ([`HotnessStats::doubling_wait`]); the default is
    /// [`queue_full_cooldown`](Self::queue_full_cooldown).
    fn queue_full_wait(&self, stats: &HotnessStats) -> NonZeroU32 {
        let _ = stats;
        self.queue_full_cooldown()
    }
}

/// Calls a bead waits after its first refusal by a full queue under the
/// built-in policies: short, because in a warm-up storm the queue drains
/// in microseconds and a refused bead should be back soon.
pub const QUEUE_FULL_FIRST_WAIT: u32 = 16;

impl<P: HotnessPolicy + ?Sized> HotnessPolicy for &P {
    fn decide(&self, stats: &HotnessStats) -> Decision {
        (**self).decide(stats)
    }
    fn decide_backedge(&self, stats: &HotnessStats) -> Decision {
        (**self).decide_backedge(stats)
    }
    fn backedge_weight(&self) -> u32 {
        (**self).backedge_weight()
    }
    fn max_tier(&self) -> u8 {
        (**self).max_tier()
    }
    fn queue_full_cooldown(&self) -> NonZeroU32 {
        (**self).queue_full_cooldown()
    }
    fn queue_full_wait(&self, stats: &HotnessStats) -> NonZeroU32 {
        (**self).queue_full_wait(stats)
    }
}

/// Raises a trigger in proportion to queue depth: with `percent = 100`, a
/// full queue doubles every threshold. Zero turns it off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LoadScaling {
    /// Extra threshold, in percent, at a full queue.
    pub percent: u32,
}

impl LoadScaling {
    /// `trigger`, raised for the queue depth in `stats`.
    pub fn apply(self, trigger: u32, stats: &HotnessStats) -> u32 {
        if self.percent == 0 || stats.queue_capacity == 0 {
            return trigger;
        }
        let extra =
            u64::from(trigger) * u64::from(self.percent) * stats.queue_len as u64 / (100 * stats.queue_capacity as u64);
        u32::try_from(u64::from(trigger) + extra).unwrap_or(u32::MAX)
    }
}

/// Promote after a fixed number of calls (default 1,000).
///
/// `queue_ahead` submits the job that many calls early, to hide compile
/// latency; back-edges trigger an OSR compile after `osr_threshold`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ThresholdPolicy {
    /// Calls at which the function counts as hot.
    pub threshold: u32,
    /// Submit this many calls before `threshold`.
    pub queue_ahead: u32,
    /// Weighted back-edges at which an OSR compile is queued.
    pub osr_threshold: u32,
    /// Threshold increase under queue load.
    pub load: LoadScaling,
}

impl ThresholdPolicy {
    /// Promote after `threshold` calls; OSR after ten times as many back-edges.
    pub const fn new(threshold: u32) -> Self {
        Self {
            threshold,
            queue_ahead: 0,
            osr_threshold: threshold.saturating_mul(10),
            load: LoadScaling { percent: 0 },
        }
    }

    /// Submits the compile `offset` calls before the threshold.
    pub const fn queue_ahead(mut self, offset: u32) -> Self {
        self.queue_ahead = offset;
        self
    }

    /// Sets the back-edge count that queues an OSR compile.
    pub const fn osr_threshold(mut self, backedges: u32) -> Self {
        self.osr_threshold = backedges;
        self
    }

    /// Raises thresholds by up to `percent` % as the queue fills.
    pub const fn load_aware(mut self, percent: u32) -> Self {
        self.load = LoadScaling { percent };
        self
    }

    /// The call count at which the job is submitted (before load scaling).
    pub const fn queue_at(&self) -> u32 {
        self.threshold.saturating_sub(self.queue_ahead)
    }
}

impl Default for ThresholdPolicy {
    fn default() -> Self {
        Self::new(1_000)
    }
}

impl HotnessPolicy for ThresholdPolicy {
    fn decide(&self, stats: &HotnessStats) -> Decision {
        if stats.tier.is_some() {
            return Decision::NEVER;
        }
        promote_at(self.load.apply(self.queue_at(), stats), stats.invocations, 0, stats)
    }

    fn decide_backedge(&self, stats: &HotnessStats) -> Decision {
        if stats.tier.is_some() {
            return Decision::NEVER;
        }
        promote_at(self.load.apply(self.osr_threshold, stats), stats.backedges, 0, stats)
    }

    fn queue_full_wait(&self, stats: &HotnessStats) -> NonZeroU32 {
        stats.doubling_wait(self.queue_at())
    }
}

fn promote_at(trigger: u32, count: u32, tier: u8, stats: &HotnessStats) -> Decision {
    if count >= trigger {
        Decision::Promote { tier, priority: stats.hotness() }
    } else {
        Decision::wait(trigger - count)
    }
}

/// Promotion through a ladder of tiers: tier `i` once calls reach
/// `thresholds[i]` (ascending). The bead keeps counting while it runs
/// lower-tier code and takes the one-load fast path once at its top tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierLadder<const TIERS: usize> {
    /// Call count per tier, ascending.
    pub thresholds: [u32; TIERS],
    /// Weighted back-edges at which an OSR compile is queued.
    pub osr_threshold: u32,
    /// Threshold increase under queue load.
    pub load: LoadScaling,
}

impl<const TIERS: usize> TierLadder<TIERS> {
    /// A ladder with the given ascending thresholds.
    pub const fn new(thresholds: [u32; TIERS]) -> Self {
        const {
            assert!(TIERS >= 1, "a ladder needs at least one tier");
            assert!(TIERS <= crate::state::MAX_TIER as usize + 1, "at most 15 tiers");
        }
        Self { thresholds, osr_threshold: thresholds[0].saturating_mul(10), load: LoadScaling { percent: 0 } }
    }

    /// Raises thresholds by up to `percent` % as the queue fills.
    pub const fn load_aware(mut self, percent: u32) -> Self {
        self.load = LoadScaling { percent };
        self
    }
}

/// The shared ladder decision: promote to the highest tier reached (within
/// the cap) if it beats the installed tier, else wait for the next rung.
fn ladder_decide(thresholds: &[u32], load: LoadScaling, stats: &HotnessStats) -> Decision {
    let top = (thresholds.len() - 1).min(usize::from(stats.tier_cap));
    let next = stats.tier.map_or(0, |t| usize::from(t) + 1);
    if next > top {
        return Decision::NEVER;
    }
    let reached = (next..=top).rev().find(|&tier| stats.invocations >= load.apply(thresholds[tier], stats));
    match reached {
        Some(tier) => Decision::Promote { tier: tier as u8, priority: stats.hotness() },
        None => Decision::wait(load.apply(thresholds[next], stats) - stats.invocations),
    }
}

fn ladder_decide_backedge(osr_threshold: u32, load: LoadScaling, stats: &HotnessStats) -> Decision {
    if stats.tier.is_some() {
        return Decision::NEVER;
    }
    promote_at(load.apply(osr_threshold, stats), stats.backedges, 0, stats)
}

impl<const TIERS: usize> HotnessPolicy for TierLadder<TIERS> {
    fn decide(&self, stats: &HotnessStats) -> Decision {
        ladder_decide(&self.thresholds, self.load, stats)
    }
    fn decide_backedge(&self, stats: &HotnessStats) -> Decision {
        ladder_decide_backedge(self.osr_threshold, self.load, stats)
    }
    fn max_tier(&self) -> u8 {
        (TIERS - 1) as u8
    }
    fn queue_full_wait(&self, stats: &HotnessStats) -> NonZeroU32 {
        stats.doubling_wait(ladder_next_trigger(&self.thresholds, stats))
    }
}

/// The unscaled threshold of the tier a bead at `stats` climbs to next
/// (the top one once it is there).
fn ladder_next_trigger(thresholds: &[u32], stats: &HotnessStats) -> u32 {
    let next = stats.tier.map_or(0, |t| usize::from(t) + 1);
    thresholds[next.min(thresholds.len() - 1)]
}

/// Two tiers: a baseline compile at `tier1_threshold` calls (tier 0) and an
/// optimising one at `tier2_threshold` (tier 1). Default 500 / 10,000.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TieredPolicy {
    /// Calls before the baseline compile.
    pub tier1_threshold: u32,
    /// Calls before the optimising compile.
    pub tier2_threshold: u32,
}

impl Default for TieredPolicy {
    fn default() -> Self {
        Self { tier1_threshold: 500, tier2_threshold: 10_000 }
    }
}

impl TieredPolicy {
    /// The seed's tier numbering for `invocations`: `None` below
    /// `tier1_threshold`, `Some(1)` from it, `Some(2)` from `tier2_threshold`.
    pub fn tier(&self, invocations: u32) -> Option<u8> {
        if invocations >= self.tier2_threshold {
            Some(2)
        } else if invocations >= self.tier1_threshold {
            Some(1)
        } else {
            None
        }
    }

    /// The ladder this policy stands for.
    pub const fn ladder(&self) -> TierLadder<2> {
        TierLadder::new([self.tier1_threshold, self.tier2_threshold])
    }
}

impl HotnessPolicy for TieredPolicy {
    fn decide(&self, stats: &HotnessStats) -> Decision {
        self.ladder().decide(stats)
    }
    fn decide_backedge(&self, stats: &HotnessStats) -> Decision {
        self.ladder().decide_backedge(stats)
    }
    fn max_tier(&self) -> u8 {
        1
    }
    fn queue_full_wait(&self, stats: &HotnessStats) -> NonZeroU32 {
        self.ladder().queue_full_wait(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(invocations: u32, tier: Option<u8>) -> HotnessStats {
        HotnessStats { invocations, backedges: 0, tier, tier_cap: 14, queue_len: 0, queue_capacity: 8 }
    }

    #[test]
    fn threshold_waits_exactly_until_its_trigger() {
        let policy = ThresholdPolicy::new(1_000);
        assert_eq!(policy.decide(&stats(1, None)), Decision::wait(999));
        assert_eq!(policy.decide(&stats(1_000, None)), Decision::Promote { tier: 0, priority: 1_000 });
        let early = ThresholdPolicy::new(1_000).queue_ahead(990);
        assert_eq!(early.decide(&stats(10, None)), Decision::Promote { tier: 0, priority: 10 });
        assert_eq!(early.decide(&stats(9, None)), Decision::wait(1));
        assert_eq!(ThresholdPolicy::default().threshold, 1_000);
    }

    #[test]
    fn load_raises_thresholds() {
        let policy = ThresholdPolicy::new(1_000).load_aware(100);
        let mut loaded = stats(1_000, None);
        loaded.queue_len = 4;
        assert_eq!(policy.decide(&loaded), Decision::wait(500));
        loaded.queue_len = 8;
        assert_eq!(policy.decide(&loaded), Decision::wait(1_000));
        loaded.queue_len = 0;
        assert!(matches!(policy.decide(&loaded), Decision::Promote { .. }));
    }

    #[test]
    fn tiered_climbs_the_ladder_and_respects_the_cap() {
        let policy = TieredPolicy::default();
        assert_eq!(policy.decide(&stats(100, None)), Decision::wait(400));
        assert_eq!(policy.decide(&stats(500, None)), Decision::Promote { tier: 0, priority: 500 });
        assert_eq!(policy.decide(&stats(600, Some(0))), Decision::wait(9_400));
        assert_eq!(policy.decide(&stats(10_000, Some(0))), Decision::Promote { tier: 1, priority: 10_000 });
        // Skips straight to the top when already past both.
        assert_eq!(policy.decide(&stats(20_000, None)), Decision::Promote { tier: 1, priority: 20_000 });
        let mut capped = stats(20_000, None);
        capped.tier_cap = 0;
        assert_eq!(policy.decide(&capped), Decision::Promote { tier: 0, priority: 20_000 });
        assert_eq!(policy.decide(&stats(20_000, Some(1))), Decision::NEVER);
        assert_eq!((policy.tier(499), policy.tier(500), policy.tier(10_000)), (None, Some(1), Some(2)));
    }

    #[test]
    fn queue_full_waits_start_short_and_double() {
        let policy = ThresholdPolicy::new(1_000);
        let mut invocations = 1_000;
        let mut waits = [0; 8];
        for wait in &mut waits {
            *wait = policy.queue_full_wait(&stats(invocations, None)).get();
            invocations += *wait;
        }
        assert_eq!(waits, [16, 16, 32, 64, 128, 256, 512, 1_000], "capped at the threshold");
        let tiered = TieredPolicy::default();
        assert_eq!(tiered.queue_full_wait(&stats(500, None)).get(), QUEUE_FULL_FIRST_WAIT);
        assert_eq!(tiered.queue_full_wait(&stats(10_100, Some(0))).get(), 100, "counted from the next tier's trigger");
        assert_eq!(ThresholdPolicy::new(1).queue_full_wait(&stats(5, None)).get(), 16, "at least the first wait");
    }

    #[test]
    fn custom_policies_keep_their_cooldown_when_the_queue_is_full() {
        struct Patient;
        impl HotnessPolicy for Patient {
            fn decide(&self, _: &HotnessStats) -> Decision {
                Decision::NEVER
            }
            fn queue_full_cooldown(&self) -> NonZeroU32 {
                NonZeroU32::new(77).unwrap_or(NonZeroU32::MIN)
            }
        }
        assert_eq!(Patient.queue_full_wait(&stats(5_000, None)).get(), 77);
        let by_ref: &dyn HotnessPolicy = &Patient;
        assert_eq!((&by_ref).queue_full_wait(&stats(5_000, None)).get(), 77, "forwarded through `&P`");
    }

    #[test]
    fn backedges_trigger_osr() {
        let policy = ThresholdPolicy::new(100).osr_threshold(50);
        let mut looping = stats(1, None);
        looping.backedges = 49;
        assert_eq!(policy.decide_backedge(&looping), Decision::wait(1));
        looping.backedges = 50;
        assert!(matches!(policy.decide_backedge(&looping), Decision::Promote { tier: 0, .. }));
    }
}
