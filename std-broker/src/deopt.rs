//! Bailout handling with beadie's types: a runtime reports a failed guard
//! with [`Bead::on_bailout`](crate::Bead::on_bailout) and a [`DeoptPolicy`].

use crate::Bead;

/// A failed guard in compiled code, as the runtime reports it.
#[derive(Debug, Clone)]
pub struct BailoutInfo {
    /// Which guard failed (backend-defined).
    pub guard_id: u32,
    /// Bytecode offset where the interpreter resumes.
    pub pc_offset: u32,
    /// Generation of the code that bailed (`0` for first-tier code).
    pub generation: u64,
}

/// What a deopt policy decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeoptDecision {
    /// Back to the interpreter; promote again when hot.
    Recompile,
    /// Stop compiling this bead.
    Blacklist,
    /// Drop optimised code and compile only the first tier from now on.
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
}

/// Decides what a bailout does.
pub trait DeoptPolicy: Send + Sync + 'static {
    /// Called once per bailout; `bailout_count` includes this one.
    fn on_bailout(&self, bead: &Bead, info: &BailoutInfo, bailout_count: u32) -> DeoptDecision;
}

/// Always recompile.
#[derive(Debug)]
pub struct AlwaysRecompilePolicy;

impl DeoptPolicy for AlwaysRecompilePolicy {
    fn on_bailout(&self, _bead: &Bead, _info: &BailoutInfo, _bailout_count: u32) -> DeoptDecision {
        DeoptDecision::Recompile
    }
}

/// Recompile `recompile_limit` times (default 3), then blacklist.
#[derive(Debug)]
pub struct ThresholdDeoptPolicy {
    /// Bailouts that still recompile.
    pub recompile_limit: u32,
}

impl ThresholdDeoptPolicy {
    /// Blacklist after `recompile_limit` recompiles.
    pub fn new(recompile_limit: u32) -> Self {
        Self { recompile_limit }
    }
}

impl Default for ThresholdDeoptPolicy {
    fn default() -> Self {
        Self::new(3)
    }
}

impl DeoptPolicy for ThresholdDeoptPolicy {
    fn on_bailout(&self, _bead: &Bead, _info: &BailoutInfo, bailout_count: u32) -> DeoptDecision {
        core_to_seed(
            kiln_core::DeoptPolicy::on_bailout(
                &kiln_core::ThresholdDeoptPolicy::new(self.recompile_limit),
                &guard(bailout_count, 0, 0),
            ),
            0,
        )
    }
}

/// Pause `base_pause × 2^(n-1)` calls before the n-th recompile; blacklist
/// after `max_recompiles` (default 1,000 and 4).
#[derive(Debug)]
pub struct ExponentialBackoffPolicy {
    /// Pause after the first bailout, in calls.
    pub base_pause: u32,
    /// Recompiles before blacklisting.
    pub max_recompiles: u32,
}

impl ExponentialBackoffPolicy {
    /// Backoff from `base_pause`, at most `max_recompiles` times.
    pub fn new(base_pause: u32, max_recompiles: u32) -> Self {
        Self { base_pause, max_recompiles }
    }
}

impl Default for ExponentialBackoffPolicy {
    fn default() -> Self {
        Self::new(1_000, 4)
    }
}

impl DeoptPolicy for ExponentialBackoffPolicy {
    fn on_bailout(&self, bead: &Bead, _info: &BailoutInfo, bailout_count: u32) -> DeoptDecision {
        let policy = kiln_core::ExponentialBackoffPolicy::new(self.base_pause, self.max_recompiles);
        let invocations = bead.invocation_count();
        core_to_seed(kiln_core::DeoptPolicy::on_bailout(&policy, &guard(bailout_count, 0, invocations)), invocations)
    }
}

/// Optimised-code bailouts (generation ≥ 1) revert to tier 1 up to
/// `tier2_revert_limit` times; tier-1 bailouts recompile up to
/// `tier1_recompile_limit` times; past either, blacklist (default 3 and 1).
#[derive(Debug)]
pub struct TieredDeoptPolicy {
    /// Tier-1 bailouts that still recompile.
    pub tier1_recompile_limit: u32,
    /// Tier-2 bailouts that revert to tier 1.
    pub tier2_revert_limit: u32,
}

impl TieredDeoptPolicy {
    /// A tiered policy with the given limits.
    pub fn new(tier1_recompile_limit: u32, tier2_revert_limit: u32) -> Self {
        Self { tier1_recompile_limit, tier2_revert_limit }
    }
}

impl Default for TieredDeoptPolicy {
    fn default() -> Self {
        Self::new(3, 1)
    }
}

impl DeoptPolicy for TieredDeoptPolicy {
    fn on_bailout(&self, _bead: &Bead, info: &BailoutInfo, bailout_count: u32) -> DeoptDecision {
        let policy = kiln_core::TieredDeoptPolicy::new(self.tier1_recompile_limit, self.tier2_revert_limit);
        let tier = u8::from(info.generation >= 1);
        core_to_seed(kiln_core::DeoptPolicy::on_bailout(&policy, &guard(bailout_count, tier, 0)), 0)
    }
}

fn guard(bailouts: u32, tier: u8, invocations: u32) -> kiln_core::Bailout {
    kiln_core::Bailout {
        reason: kiln_core::BailoutReason::Guard { guard_id: 0, pc_offset: 0 },
        bailouts,
        tier,
        invocations,
    }
}

/// A core decision in the seed's terms (`invocations` anchors pauses).
fn core_to_seed(decision: kiln_core::DeoptDecision, invocations: u32) -> DeoptDecision {
    match decision {
        kiln_core::DeoptDecision::Recompile => DeoptDecision::Recompile,
        kiln_core::DeoptDecision::PauseRecompile { calls } => {
            DeoptDecision::PauseRecompile { until_invocations: invocations.saturating_add(calls.get()) }
        }
        kiln_core::DeoptDecision::RevertToTier(_) => DeoptDecision::RevertToTier1,
        kiln_core::DeoptDecision::Blacklist => DeoptDecision::Blacklist,
    }
}

/// A seed decision in core terms, for a bead at `invocations`.
pub(crate) fn seed_to_core(decision: &DeoptDecision, invocations: u32) -> kiln_core::DeoptDecision {
    match *decision {
        DeoptDecision::Recompile => kiln_core::DeoptDecision::Recompile,
        DeoptDecision::Blacklist => kiln_core::DeoptDecision::Blacklist,
        DeoptDecision::RevertToTier1 => kiln_core::DeoptDecision::RevertToTier(0),
        DeoptDecision::PauseRecompile { until_invocations } => {
            match core::num::NonZeroU32::new(until_invocations.saturating_sub(invocations)) {
                Some(calls) => kiln_core::DeoptDecision::PauseRecompile { calls },
                None => kiln_core::DeoptDecision::Recompile,
            }
        }
    }
}
