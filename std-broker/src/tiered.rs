//! N-tier compilation with beadie 0.3's `TieredAdapter` API, on one kiln
//! domain whose policy is a ladder of the per-tier policies.
//!
//! beadie runs a broker per tier and swaps higher-tier code in by hand;
//! here kiln-core does the climbing. Lower-tier code is installed as the
//! bead's *warm* entry: calls run it and keep counting, and when the next
//! tier's policy says so the call that crossed it attaches the compile
//! closure and queues the job. Code of the top tier allowed for the bead
//! is installed as the final entry, which calls reach with one load and no
//! counting. `on_invoke` clones nothing and allocates nothing unless the
//! call wins a promotion.
//!
//! ```text
//!  Interpreted ──policy 0──► tier 0 (warm: counts) ──policy 1──► tier 1 ... ──► top tier (final)
//!        ▲                                   │
//!        └──── on_bailout (Recompile / RevertToTier1) ◄──┘
//! ```
//!
//! Tiers are numbered from 0 everywhere in kiln: policy `i` promotes to
//! tier `i`, the compile closure receives that index, and
//! [`TieredBound::current_tier`] reports it. Only the seed's names count
//! from 1: its `RevertToTier1` falls back to tier 0.
//!
//! A tier may also be compiled by a [`JitBackend`] ([`TierBackend`], one
//! per tier, given to [`TieredAdapter::with_backends`]): calls then pass no
//! closure ([`TieredAdapter::on_invoke_backends`]), each tier's factory
//! builds that backend's definition from the bead, and each tier's code is
//! released through the backend that compiled it (with
//! [`JitBackend::after_compile`] run after each compile), as in a
//! [`BackendAdapter`](crate::BackendAdapter).
//!
//! The workers (one per tier) share the domain's queue, so a slow
//! optimising compile never blocks a baseline compile of another function.
//! A compile closure that returns null is a failed compile: the bead keeps
//! whatever code it runs (or keeps interpreting), and kiln's failure policy
//! decides when to try again.

use std::sync::Arc;

use crate::SubmitResult;
use crate::backend::{JitBackend, OsrBuild, backend_work, factory_failure};
use crate::bead::{Bead, CoreHandle};
use crate::beadie::{Beadie, BeadieConfig};
use crate::code::CompileFailure;
use crate::deopt::{BailoutInfo, DeoptDecision, DeoptPolicy, TieredDeoptPolicy};
use crate::policy::{HotnessPolicy, PolicyLadder};
use crate::promote;
use crate::work::{CompileWork, entry_work};

/// A bead registered with a [`TieredAdapter`]. Cloning shares the bead and
/// its per-tier "queued" flags.
///
/// The flags live in the bead's side-table entry (off its hot words), created by
/// the first promotion past tier 0: a bead that never climbs that far costs
/// what a plain bead costs, and registering one allocates nothing more.
#[derive(Debug, Clone)]
pub struct TieredBound {
    bead: Arc<Bead>,
    /// Tiers of the adapter (flags exist for tiers `1..tiers`).
    tiers: u8,
}

impl TieredBound {
    /// The bead.
    pub fn bead(&self) -> &Arc<Bead> {
        &self.bead
    }

    /// Tier of the code the bead runs now (0 = first compiled tier), or
    /// `None` if it interprets.
    pub fn current_tier(&self) -> Option<usize> {
        self.bead.kiln_bead.compiled().and(self.bead.kiln_bead.tier()).map(usize::from)
    }

    /// The bead's generation (see [`Bead::generation`]). kiln bumps it on
    /// swaps, reloads, bailouts and invalidation, not on a tier-up.
    pub fn generation(&self) -> u64 {
        self.bead.generation()
    }

    /// Whether the bead runs code of a tier above `tier`.
    pub fn is_promoted_beyond(&self, tier: usize) -> bool {
        self.current_tier().is_some_and(|current| current > tier)
    }

    /// Whether promotion to `tier` (≥ 1) was queued since registration or
    /// the last reset.
    pub fn is_queued_for(&self, tier: usize) -> bool {
        self.queued_bit(tier)
            .is_some_and(|bit| self.bead.read_extras(|extras| extras.queued_tiers & bit != 0).unwrap_or(false))
    }

    /// The highest tier this bead may still reach (lowered to 0 by a
    /// `RevertToTier1` bailout, restored by a reset).
    pub fn max_tier(&self) -> usize {
        usize::from(self.bead.kiln_bead.tier_cap()).min(usize::from(self.tiers) - 1)
    }

    /// Back to the interpreter with every tier allowed again: code is
    /// dropped, queued flags cleared, the tier cap restored.
    pub fn reset_to_interpreter(&self) {
        self.bead.reload();
        self.clear_queued();
    }

    /// The flag bit of `tier` in `Extras::queued_tiers`, if it has one.
    fn queued_bit(&self, tier: usize) -> Option<u16> {
        let index = tier.checked_sub(1)?;
        (tier < usize::from(self.tiers)).then(|| 1 << index)
    }

    /// Sets `tier`'s queued flag; false if it was set already (or `tier`
    /// has none). Runs on a promotion only, never on a plain call.
    fn mark_queued(&self, tier: usize) -> bool {
        self.queued_bit(tier).is_some_and(|bit| {
            self.bead.update_extras(|extras| {
                let was_clear = extras.queued_tiers & bit == 0;
                extras.queued_tiers |= bit;
                was_clear
            })
        })
    }

    /// Clears `tier`'s queued flag (its promotion was refused).
    fn unmark_queued(&self, tier: usize) {
        if let Some(bit) = self.queued_bit(tier) {
            self.bead.read_extras(|extras| extras.queued_tiers &= !bit);
        }
    }

    fn clear_queued(&self) {
        self.bead.read_extras(|extras| extras.queued_tiers = 0);
    }
}

/// Coordinates N compilation tiers, each with its own promotion policy,
/// compiled by one closure that receives the tier index (0 = the first
/// compiled tier).
pub struct TieredAdapter {
    beadie: Beadie,
    tiers: usize,
    deopt_policy: Arc<dyn DeoptPolicy>,
    /// One per tier when made by [`with_backends`](Self::with_backends),
    /// else empty.
    backends: Vec<TierBackend>,
}

/// One tier's compiler for [`TieredAdapter::with_backends`]: a
/// [`JitBackend`] and the factory that builds its definition of a bead's
/// function (from [`Bead::core_handle`], say). Code it compiles is
/// released through that backend.
#[derive(Clone)]
pub struct TierBackend(Arc<dyn ErasedTier>);

impl std::fmt::Debug for TierBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierBackend").finish_non_exhaustive()
    }
}

impl TierBackend {
    /// A tier compiled by `backend` from the definitions `factory` builds.
    /// The factory runs on the compiling thread, once per compile at this
    /// tier; an `Err` is a failed compile ([`CompileFailure::Factory`]),
    /// and the bead keeps the code it runs. `'static` for the reasons
    /// given at [`BackendAdapter::attach`](crate::BackendAdapter::attach).
    pub fn new<B, F, E>(backend: B, factory: F) -> Self
    where
        B: JitBackend,
        F: Fn(&Arc<Bead>) -> Result<B::FunctionDef, E> + Send + Sync + 'static,
        E: std::fmt::Display,
    {
        Self::shared(Arc::new(backend), factory)
    }

    /// [`new`](Self::new) with a backend shared with other tiers or
    /// adapters.
    pub fn shared<B, F, E>(backend: Arc<B>, factory: F) -> Self
    where
        B: JitBackend,
        F: Fn(&Arc<Bead>) -> Result<B::FunctionDef, E> + Send + Sync + 'static,
        E: std::fmt::Display,
    {
        Self(Arc::new(BackendTier { backend, factory }))
    }
}

/// A tier's backend with its definition type erased.
trait ErasedTier: Send + Sync {
    /// The compile work of one promotion to this tier.
    fn work(self: Arc<Self>) -> CompileWork;
}

struct BackendTier<B, F> {
    backend: Arc<B>,
    factory: F,
}

impl<B, F, E> ErasedTier for BackendTier<B, F>
where
    B: JitBackend,
    F: Fn(&Arc<Bead>) -> Result<B::FunctionDef, E> + Send + Sync + 'static,
    E: std::fmt::Display,
{
    fn work(self: Arc<Self>) -> CompileWork {
        let backend = Arc::clone(&self.backend);
        backend_work(&backend, move |bead| {
            (self.factory)(bead).map(|def| OsrBuild { def, osr: Vec::new() }).map_err(factory_failure)
        })
    }
}

impl std::fmt::Debug for TieredAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredAdapter")
            .field("tiers", &self.tiers)
            .field("beadie", &self.beadie)
            .finish_non_exhaustive()
    }
}

impl TieredAdapter {
    /// An adapter with one tier per policy (tier 0 first), one worker
    /// thread per tier, and [`TieredDeoptPolicy::default`] for bailouts.
    ///
    /// # Panics
    ///
    /// If `policies` is empty or has more than 15 tiers.
    pub fn new(policies: Vec<Box<dyn HotnessPolicy>>) -> Self {
        Self::with_deopt_policy(policies, TieredDeoptPolicy::default())
    }

    /// [`new`](Self::new) with `deopt` deciding what a bailout does.
    ///
    /// # Panics
    ///
    /// As for [`new`](Self::new).
    pub fn with_deopt_policy(policies: Vec<Box<dyn HotnessPolicy>>, deopt: impl DeoptPolicy) -> Self {
        let config = BeadieConfig { workers: policies.len(), ..BeadieConfig::default() };
        Self::with_config(policies, deopt, config)
    }

    /// [`with_deopt_policy`](Self::with_deopt_policy) with kiln's settings:
    /// `config.workers` replaces the one-per-tier default, and dropping the
    /// adapter waits at most `config.shutdown_timeout` for running compiles.
    ///
    /// # Panics
    ///
    /// As for [`new`](Self::new).
    pub fn with_config(policies: Vec<Box<dyn HotnessPolicy>>, deopt: impl DeoptPolicy, config: BeadieConfig) -> Self {
        assert!(!policies.is_empty(), "TieredAdapter needs at least one tier");
        let tiers = policies.len();
        Self {
            beadie: Beadie::with_ladder(PolicyLadder::new(policies), &config, "tier"),
            tiers,
            deopt_policy: Arc::new(deopt),
            backends: Vec::new(),
        }
    }

    /// An adapter whose tier `i` is promoted by `policies[i]` and compiled
    /// by `backends[i]`; use [`on_invoke_backends`](Self::on_invoke_backends),
    /// which passes no closure. `config` as for
    /// [`with_config`](Self::with_config).
    ///
    /// # Panics
    ///
    /// As for [`new`](Self::new), and if there is not one backend per tier.
    pub fn with_backends(
        policies: Vec<Box<dyn HotnessPolicy>>,
        backends: Vec<TierBackend>,
        deopt: impl DeoptPolicy,
        config: BeadieConfig,
    ) -> Self {
        assert_eq!(policies.len(), backends.len(), "TieredAdapter::with_backends needs one backend per tier");
        Self { backends, ..Self::with_config(policies, deopt, config) }
    }

    /// Registers a function named `name` (for log lines, see
    /// [`logs`](crate::logs)); otherwise as [`register`](Self::register).
    pub fn register_named(
        &self,
        name: &str,
        core: CoreHandle,
        on_invalidate: Option<Box<dyn Fn() + Send + Sync>>,
    ) -> TieredBound {
        let bead = self.beadie.chain().push_named(Some(name), core, on_invalidate);
        TieredBound { bead, tiers: self.tiers as u8 }
    }

    /// On every call, for an adapter made by
    /// [`with_backends`](Self::with_backends): the entry of the code the
    /// bead runs, if any, else `None` (interpret). A call that crosses the
    /// next tier's policy queues a compile by that tier's backend. (On an
    /// adapter without backends, that compile fails:
    /// [`CompileFailure::NoFactory`].)
    #[inline(always)]
    pub fn on_invoke_backends(&self, bound: &TieredBound) -> Option<*mut ()> {
        promote::on_invoke(&bound.bead, |tier| {
            bound.mark_queued(usize::from(tier));
            match self.backends.get(usize::from(tier)) {
                Some(backend) => Arc::clone(&backend.0).work(),
                None => Box::new(|_, _| Err(CompileFailure::NoFactory)),
            }
        })
    }

    /// Number of tiers.
    pub fn num_tiers(&self) -> usize {
        self.tiers
    }

    /// Registers a function (see [`Beadie::register`]).
    pub fn register(&self, core: CoreHandle, on_invalidate: Option<Box<dyn Fn() + Send + Sync>>) -> TieredBound {
        // At most 15 tiers (checked by `PolicyLadder::new`): the count fits a byte
        // and the flags of tiers 1..=14 fit `Extras::queued_tiers`.
        TieredBound { bead: self.beadie.register(core, on_invalidate), tiers: self.tiers as u8 }
    }

    /// On every call: the entry of the code the bead runs, if any, else
    /// `None` (interpret). A call that crosses the next tier's policy hands
    /// `compile` to a worker, which calls it with that tier's index (from
    /// 0); a null
    /// result is a failed compile and the bead keeps its current code.
    ///
    /// The bound is beadie's (`Fn + Clone + Sync`), so a program moves
    /// between the two unchanged; kiln calls `compile` at most once per
    /// promotion and never clones it.
    #[inline(always)]
    pub fn on_invoke<F>(&self, bound: &TieredBound, compile: F) -> Option<*mut ()>
    where
        F: Fn(usize, &Arc<Bead>) -> *mut () + Send + Sync + Clone + 'static,
    {
        promote::on_invoke(&bound.bead, |tier| {
            bound.mark_queued(usize::from(tier));
            tier_work(compile)
        })
    }

    /// Queues a compile of `bound` at `target_tier` now, whatever its count.
    /// `false` if the bead runs no code yet, `target_tier` is 0 or out of
    /// range, or a promotion to it was already queued (or could not be).
    pub fn force_promote(
        &self,
        bound: &TieredBound,
        target_tier: usize,
        compile: impl FnOnce(&Arc<Bead>) -> *mut () + Send + 'static,
    ) -> bool {
        if bound.bead.compiled().is_none() || target_tier == 0 || target_tier >= self.tiers {
            return false;
        }
        if !bound.mark_queued(target_tier) {
            return false;
        }
        let accepted =
            promote::submit_at(&bound.bead, target_tier as u8, entry_work(compile)) == SubmitResult::Accepted;
        if !accepted {
            bound.unmark_queued(target_tier);
        }
        accepted
    }

    /// Reports a bailout of `bound`'s code and applies the adapter's deopt
    /// policy (see [`Bead::on_bailout`]). `RevertToTier1` caps the bead at
    /// tier 0 (the first compiled tier) and clears its queued flags.
    pub fn on_bailout(&self, bound: &TieredBound, info: BailoutInfo) -> DeoptDecision {
        let decision = bound.bead.on_bailout(info, &*self.deopt_policy);
        if decision == DeoptDecision::RevertToTier1 {
            bound.clear_queued();
        }
        decision
    }

    /// Drops invalidated beads from the chain.
    pub fn prune(&self) {
        self.beadie.prune();
    }

    /// Registered beads.
    pub fn chain_len(&self) -> usize {
        self.beadie.chain_len()
    }

    /// Calls `f` on every registered bead.
    pub fn walk(&self, f: impl FnMut(&Arc<Bead>)) {
        self.beadie.walk(f);
    }

    /// The policy [`on_bailout`](Self::on_bailout) consults.
    pub fn deopt_policy(&self) -> &Arc<dyn DeoptPolicy> {
        &self.deopt_policy
    }

    /// Reloads every bead; returns how many will recompile. Queued flags
    /// of [`TieredBound`]s are left alone, as in beadie.
    pub fn reload_all(&self) -> usize {
        self.beadie.reload_all()
    }

    /// The `Beadie` underneath (stats, quiescence, ...).
    pub fn beadie(&self) -> &Beadie {
        &self.beadie
    }
}

/// Compile work calling `compile` with the tier the job was queued at.
fn tier_work<F>(compile: F) -> CompileWork
where
    F: Fn(usize, &Arc<Bead>) -> *mut () + Send + 'static,
{
    // A null entry becomes `CompileFailure::NullEntry` when it is boxed.
    Box::new(move |bead, tier| Ok(bead.built(compile(usize::from(tier), bead), Vec::new(), None)))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::{BeadState, ThresholdDeoptPolicy, ThresholdPolicy};

    extern "C" fn tier0() -> i64 {
        0
    }
    extern "C" fn tier1() -> i64 {
        1
    }
    extern "C" fn tier2() -> i64 {
        2
    }

    fn entry(tier: usize) -> *mut () {
        [tier0, tier1, tier2].get(tier).map_or(std::ptr::null_mut(), |f| *f as *mut ())
    }

    fn adapter(thresholds: &[u32]) -> TieredAdapter {
        TieredAdapter::new(
            thresholds.iter().map(|&t| Box::new(ThresholdPolicy::new(t)) as Box<dyn HotnessPolicy>).collect(),
        )
    }

    /// Calls `on_invoke` until `done` holds (at most 5 s).
    fn drive(adapter: &TieredAdapter, bound: &TieredBound, done: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            if Instant::now() > deadline {
                return false;
            }
            adapter.on_invoke(bound, |tier, _| entry(tier));
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }

    #[test]
    fn climbs_every_tier_then_takes_the_fast_path() {
        let adapter = adapter(&[5, 20, 60]);
        let bound = adapter.register(std::ptr::null_mut(), None);
        assert_eq!((adapter.num_tiers(), bound.max_tier(), bound.current_tier()), (3, 2, None));
        assert!(drive(&adapter, &bound, || bound.current_tier() == Some(0)));
        assert_eq!(adapter.on_invoke(&bound, |tier, _| entry(tier)), Some(entry(0)));
        assert!(drive(&adapter, &bound, || bound.current_tier() == Some(2)));
        assert!(bound.is_queued_for(1) && bound.is_queued_for(2) && !bound.is_queued_for(0));
        assert!(bound.is_promoted_beyond(1));
        let counted = bound.bead().invocation_count();
        for _ in 0..1_000 {
            assert_eq!(adapter.on_invoke(&bound, |tier, _| entry(tier)), Some(entry(2)));
        }
        assert_eq!(bound.bead().invocation_count(), counted, "the top tier does not count");
        assert_eq!(bound.bead().state(), BeadState::Compiled);
    }

    #[test]
    fn each_tier_is_compiled_once() {
        let calls: Arc<[AtomicUsize; 2]> = Arc::new(Default::default());
        let adapter = adapter(&[2, 10]);
        let bound = adapter.register(std::ptr::null_mut(), None);
        let counted = Arc::clone(&calls);
        let compile = move |tier: usize, _: &Arc<Bead>| {
            counted[tier].fetch_add(1, Ordering::Relaxed);
            entry(tier)
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while bound.current_tier() != Some(1) && Instant::now() < deadline {
            adapter.on_invoke(&bound, compile.clone());
        }
        assert_eq!(bound.current_tier(), Some(1));
        assert_eq!(calls[0].load(Ordering::Relaxed), 1);
        assert_eq!(calls[1].load(Ordering::Relaxed), 1);
    }

    #[test]
    fn failed_higher_tier_keeps_the_lower_tier_running() {
        let adapter = adapter(&[2, 4]);
        let bound = adapter.register(std::ptr::null_mut(), None);
        let compile = |tier: usize, _: &Arc<Bead>| if tier == 0 { entry(0) } else { std::ptr::null_mut() };
        let deadline = Instant::now() + Duration::from_secs(5);
        while adapter.beadie().stats().failures == 0 && Instant::now() < deadline {
            adapter.on_invoke(&bound, compile);
            std::thread::sleep(Duration::from_micros(200));
        }
        assert!(adapter.beadie().stats().failures >= 1);
        assert_eq!(adapter.on_invoke(&bound, compile), Some(entry(0)));
        assert_eq!(bound.current_tier(), Some(0));
    }

    #[test]
    fn revert_caps_at_tier_zero_and_reset_restores() {
        let adapter = adapter(&[2, 5]);
        let bound = adapter.register(std::ptr::null_mut(), None);
        assert!(drive(&adapter, &bound, || bound.current_tier() == Some(1)));
        let info = BailoutInfo { guard_id: 3, pc_offset: 0, generation: 1 };
        assert_eq!(adapter.on_bailout(&bound, info), DeoptDecision::RevertToTier1);
        assert_eq!((bound.max_tier(), bound.is_queued_for(1), bound.current_tier()), (0, false, None));
        assert!(drive(&adapter, &bound, || bound.current_tier() == Some(0)));
        for _ in 0..200 {
            assert_eq!(adapter.on_invoke(&bound, |tier, _| entry(tier)), Some(entry(0)));
        }
        assert!(!bound.is_queued_for(1));
        bound.reset_to_interpreter();
        assert_eq!((bound.max_tier(), bound.current_tier()), (1, None));
        assert!(drive(&adapter, &bound, || bound.current_tier() == Some(1)));
    }

    #[test]
    fn force_promote_skips_the_threshold_once() {
        let adapter = adapter(&[2, 1_000_000]);
        let bound = adapter.register(std::ptr::null_mut(), None);
        assert!(!adapter.force_promote(&bound, 1, |_| entry(1)), "nothing compiled yet");
        assert!(drive(&adapter, &bound, || bound.current_tier() == Some(0)));
        assert!(!adapter.force_promote(&bound, 2, |_| entry(1)), "out of range");
        assert!(adapter.force_promote(&bound, 1, |_| entry(1)));
        assert!(!adapter.force_promote(&bound, 1, |_| entry(1)), "already queued");
        assert!(drive(&adapter, &bound, || bound.current_tier() == Some(1)));
        assert_eq!(adapter.on_invoke(&bound, |tier, _| entry(tier)), Some(entry(1)));
    }

    #[test]
    fn threshold_deopt_blacklists_and_stops_compiling() {
        let policies: Vec<Box<dyn HotnessPolicy>> = vec![Box::new(ThresholdPolicy::new(2))];
        let adapter = TieredAdapter::with_deopt_policy(policies, ThresholdDeoptPolicy::new(0));
        let bound = adapter.register(std::ptr::null_mut(), None);
        assert!(drive(&adapter, &bound, || bound.current_tier() == Some(0)));
        let info = BailoutInfo { guard_id: 0, pc_offset: 0, generation: 0 };
        assert_eq!(adapter.on_bailout(&bound, info), DeoptDecision::Blacklist);
        assert!(bound.bead().is_blacklisted());
        for _ in 0..100 {
            assert_eq!(adapter.on_invoke(&bound, |tier, _| entry(tier)), None);
        }
        assert_eq!(
            adapter.deopt_policy().on_bailout(
                bound.bead(),
                &BailoutInfo { guard_id: 0, pc_offset: 0, generation: 0 },
                1
            ),
            DeoptDecision::Blacklist
        );
    }
}
