//! The broker: counts, decides, queues, publishes and retires.
//!
//! Paths by cost:
//!
//! - **Compiled** ([`Broker::on_invoke`] on a bead at its final tier): one
//!   Acquire load of the bead's entry and a null test. Nothing else.
//! - **Counting**: a Relaxed load and a Relaxed store of the countdown, and
//!   one load of the warm entry (non-null while lower-tier code runs).
//! - **Deciding** (countdown ran out): the hotness policy; on "promote" a CAS
//!   of the state word picks the single winner, which takes the lock once to
//!   push the job and calls `Pump::wake` (coalesced).
//! - **Everything else** (claim, publish, bailout, invalidate, reload, swap,
//!   quiesce) happens under one lock per broker, never held across a call
//!   into host code (policies, compiler, events, pump, handle drops).
//!
//! Beads are referred to through `H: BeadRef` (`&Bead`, an `Arc`-based
//! handle, ...), cloned into the queue on promotion only.

use core::num::NonZeroU32;
use core::ptr::{self, NonNull};

use crate::bead::{Bead, BeadRef};
use crate::compiler::{CodeHandle, Compiled, Compiler};
use crate::deopt::{Bailout, BailoutReason, DeoptDecision, DeoptPolicy};
use crate::error::{KilnError, Refused};
use crate::job::{Job, JobKind, JobOutcome, JobOwner, Ticket};
use crate::policy::{Decision, HotnessPolicy, HotnessStats};
use crate::pump::{Budget, Pump, PumpReport, PumpStop};
use crate::queue::{JobQueue, QueueEntry};
use crate::reclaim::{ReclaimMode, Reclamation};
use crate::state::{MAX_TIER, Phase, StateWord};
use crate::stats::{Counters, Events, Stats};
use crate::sync::{AtomicBool, AtomicU32, AtomicUsize, Lock, Ordering};

/// Countdown while a job is queued or compiling: the slow path re-checks the
/// state this often. Small, because a transition's re-arm of the countdown
/// can be overwritten by a counting call that loaded the countdown just
/// before it (a plain store, not a read-modify-write, by design), and the
/// damage of such a lost re-arm is bounded by the value that call loaded.
const PENDING: u32 = 64;

/// Countdown for beads that expect no transition from counting (blacklisted
/// without decay, invalidated, final code installed). Bounded for the same
/// reason as [`PENDING`], and as large as that allows.
const IDLE: u32 = crate::bead::MAX_COUNTDOWN;

/// State behind the broker's lock.
struct Shared<H, const QUEUE: usize, const RETIRE: usize> {
    queue: JobQueue<H, QUEUE>,
    reclaim: Reclamation<RETIRE>,
    compile_ticks: u64,
}

/// A promotion the slow path (or `submit`) wants to queue.
struct Promotion {
    tier: u8,
    priority: u32,
    kind: JobKind,
    /// Calls this promotion counts (1 for the crossing call, 0 otherwise).
    calls: u32,
}

/// Why [`Broker::claim`] returned no job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ClaimError {
    /// Nothing is queued.
    Empty,
    /// The next job would replace code and the retire ring is full.
    RetireFull,
}

/// The promotion broker. `QUEUE` bounds queued jobs, `RETIRE` bounds code
/// waiting for quiescence; both are checked at compile time and the whole
/// broker can be built in a `const` (a `static` on a microcontroller).
pub struct Broker<H, P, D, W = crate::NoPump, E = crate::NoEvents, const QUEUE: usize = 64, const RETIRE: usize = 64> {
    policy: P,
    deopt: D,
    pump: W,
    events: E,
    wake_pending: AtomicBool,
    queue_len: AtomicUsize,
    queue_limit: AtomicUsize,
    shared: Lock<Shared<H, QUEUE, RETIRE>>,
    /// Mirrors of the reclamation epoch and mode, written under the lock,
    /// so reporting threads read them without it.
    epoch: AtomicU32,
    reclaim_mode: AtomicU32,
    counters: Counters,
}

impl<H, P, D, W, E, const QUEUE: usize, const RETIRE: usize> core::fmt::Debug for Broker<H, P, D, W, E, QUEUE, RETIRE> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Broker")
            .field("queue_len", &self.queue_len.load(Ordering::Relaxed))
            .field("queue_capacity", &QUEUE)
            .field("retire_capacity", &RETIRE)
            .finish_non_exhaustive()
    }
}

impl<H, P, D, W, E, const QUEUE: usize, const RETIRE: usize> Broker<H, P, D, W, E, QUEUE, RETIRE> {
    crate::sync::const_fn! {
        /// A broker with the given policies, wake-up hook and events.
        pub const fn new(policy: P, deopt: D, pump: W, events: E) -> Self {
            Self {
                policy,
                deopt,
                pump,
                events,
                wake_pending: AtomicBool::new(false),
                queue_len: AtomicUsize::new(0),
                queue_limit: AtomicUsize::new(QUEUE),
                shared: Lock::new(Shared { queue: JobQueue::new(), reclaim: Reclamation::new(), compile_ticks: 0 }),
                epoch: AtomicU32::new(0),
                reclaim_mode: AtomicU32::new(ReclaimMode::Unmanaged as u32),
                counters: Counters::new(),
            }
        }
    }

    /// The hotness policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// The deopt policy.
    pub fn deopt_policy(&self) -> &D {
        &self.deopt
    }

    /// The wake-up hook.
    pub fn pump_hook(&self) -> &W {
        &self.pump
    }

    /// The events hook.
    pub fn events(&self) -> &E {
        &self.events
    }

    /// Lowers the queue's capacity to `limit` (at most `QUEUE`, at least 1),
    /// for layers whose capacity is a runtime setting.
    pub fn set_queue_limit(&self, limit: usize) {
        self.queue_limit.store(limit.clamp(1, QUEUE), Ordering::Relaxed);
    }

    /// The queue's capacity now.
    pub fn queue_capacity(&self) -> usize {
        self.queue_limit.load(Ordering::Relaxed)
    }

    /// Jobs waiting in the queue.
    pub fn queue_len(&self) -> usize {
        self.queue_len.load(Ordering::Relaxed)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let mut stats = self.counters.snapshot();
        self.shared.with(|shared| {
            stats.queue_depth = shared.queue.len() as u32;
            stats.retire_depth = shared.reclaim.len() as u32;
            stats.compile_ticks = shared.compile_ticks;
            stats.epoch = shared.reclaim.epoch();
        });
        stats
    }
}

impl<H, P, D, W, E, const QUEUE: usize, const RETIRE: usize> Broker<H, P, D, W, E, QUEUE, RETIRE>
where
    H: BeadRef,
    P: HotnessPolicy,
    D: DeoptPolicy,
    W: Pump,
    E: Events,
{
    /// Asks "is native code ready?" on a call. Returns the entry to call, or
    /// `None` to interpret. Counts the call and may queue a compile.
    #[inline(always)]
    pub fn on_invoke(&self, bead: &H) -> Option<NonNull<()>> {
        self.on_invoke_with(bead, |_, _| {})
    }

    /// [`on_invoke`](Self::on_invoke), calling `on_promote(tier, kind)` if and
    /// only if this call wins a promotion, after the win and before the job is
    /// queued — so a layer above can attach what the compile needs (a closure,
    /// a definition) to the bead before any pumper can claim it. `on_promote`
    /// runs on the calling thread without the broker's lock. If the queue
    /// then turns out to be full, the promotion is undone (`QueueFull`, the
    /// bead cools down) after the hook ran; the next winner's hook runs again.
    #[inline(always)]
    pub fn on_invoke_with(&self, bead: &H, on_promote: impl FnOnce(u8, JobKind)) -> Option<NonNull<()>> {
        let record = bead.bead();
        // Acquire pairs with the Release store of the entry in `Bead::install`:
        // whoever sees the pointer sees the code behind it.
        if let Some(entry) = NonNull::new(record.entry.load(Ordering::Acquire)) {
            return Some(entry);
        }
        let left = record.countdown.load(Ordering::Relaxed);
        if left > 1 {
            record.countdown.store(left - 1, Ordering::Relaxed);
            if self.policy.max_tier() == 0 {
                // Every install is final under a one-tier policy, so there is
                // never warm code; for a const `max_tier` this folds away.
                return None;
            }
            // Acquire pairs with `Bead::install`, as above.
            return NonNull::new(record.warm_entry.load(Ordering::Acquire));
        }
        self.invoke_slow(bead, on_promote)
    }

    /// A loop back-edge probe at `site`. Returns an OSR entry for `site` if
    /// the installed code has one; otherwise counts the back-edge and may
    /// queue an OSR compile.
    #[inline]
    pub fn on_backedge(&self, bead: &H, site: u64) -> Option<NonNull<()>> {
        self.on_backedge_with(bead, site, |_, _| {})
    }

    /// [`on_backedge`](Self::on_backedge) with a promotion hook, as in
    /// [`on_invoke_with`](Self::on_invoke_with).
    #[inline]
    pub fn on_backedge_with(&self, bead: &H, site: u64, on_promote: impl FnOnce(u8, JobKind)) -> Option<NonNull<()>> {
        let record = bead.bead();
        if let Some(entry) = record.osr_entry(site) {
            return Some(entry);
        }
        let weight = self.policy.backedge_weight().max(1);
        let left = record.backedge_countdown.load(Ordering::Relaxed);
        if left > weight {
            record.backedge_countdown.store(left - weight, Ordering::Relaxed);
            return None;
        }
        self.backedge_slow(bead, site, weight, on_promote)
    }

    fn hotness(&self, bead: &Bead, word: StateWord, calls: u32, backedges: u32) -> HotnessStats {
        HotnessStats {
            invocations: bead.invocation_count().wrapping_add(calls),
            backedges: bead.backedge_count().wrapping_add(backedges),
            tier: word.tier(),
            tier_cap: bead.tier_cap().min(self.policy.max_tier()),
            queue_len: self.queue_len(),
            queue_capacity: self.queue_capacity(),
        }
    }

    /// The tier at which code for `bead` is final (no further promotion).
    fn final_tier(&self, bead: &Bead) -> u8 {
        self.policy.max_tier().min(bead.tier_cap())
    }

    #[cold]
    #[inline(never)]
    fn invoke_slow(&self, handle: &H, on_promote: impl FnOnce(u8, JobKind)) -> Option<NonNull<()>> {
        let bead = handle.bead();
        let word = self.settled_word(bead);
        match word.phase() {
            Phase::Interpreted | Phase::Compiled => {
                let stats = self.hotness(bead, word, 1, 0);
                match self.policy.decide(&stats) {
                    Decision::Wait(calls) => bead.arm(calls.get(), 1),
                    Decision::Promote { tier, priority } => {
                        // A lost race or a full queue is already handled (and counted) inside.
                        let promotion = Promotion { tier, priority, kind: JobKind::Invoke, calls: 1 };
                        let _ = self.promote(handle, word, promotion, on_promote);
                    }
                }
            }
            Phase::Blacklisted => self.decay(bead, word),
            Phase::Queued | Phase::Compiling => bead.arm(PENDING, 1),
            Phase::Invalidated => bead.arm(IDLE, 1),
        }
        bead.compiled()
    }

    #[cold]
    #[inline(never)]
    fn backedge_slow(
        &self,
        handle: &H,
        site: u64,
        weight: u32,
        on_promote: impl FnOnce(u8, JobKind),
    ) -> Option<NonNull<()>> {
        let bead = handle.bead();
        let word = self.settled_word(bead);
        match word.phase() {
            Phase::Interpreted | Phase::Compiled => {
                let stats = self.hotness(bead, word, 0, weight);
                match self.policy.decide_backedge(&stats) {
                    Decision::Wait(units) => bead.arm_backedges(units.get(), weight),
                    Decision::Promote { tier, priority } => {
                        bead.arm_backedges(PENDING, weight);
                        let promotion = Promotion { tier, priority, kind: JobKind::Osr { site }, calls: 0 };
                        let _ = self.promote(handle, word, promotion, on_promote);
                    }
                }
            }
            Phase::Queued | Phase::Compiling => bead.arm_backedges(PENDING, weight),
            Phase::Blacklisted | Phase::Invalidated => bead.arm_backedges(IDLE, weight),
        }
        bead.osr_entry(site)
    }

    /// The state word as the slow path must see it. The Relaxed countdown
    /// load that led here orders nothing, so a Queued/Compiling word may be
    /// stale: the job may have ended (abandoned, failed) and re-armed the
    /// countdown. Re-reading under the lock, which every such transition
    /// holds, sees its result.
    fn settled_word(&self, bead: &Bead) -> StateWord {
        let word = bead.word();
        match word.phase() {
            Phase::Queued | Phase::Compiling => self.shared.with(|_| bead.word()),
            _ => word,
        }
    }

    /// Blacklisted bead whose countdown ran out: give it another chance if
    /// the deopt policy lets blacklists decay.
    fn decay(&self, bead: &Bead, word: StateWord) {
        match self.deopt.blacklist_decay() {
            Some(_) => {
                let revived = word.with_phase(Phase::Interpreted);
                let won = self.shared.with(|_| {
                    let won = bead.state.compare_exchange(word, revived).is_ok();
                    if won {
                        bead.reset_bailouts();
                    }
                    won
                });
                if won {
                    debug!("kiln: blacklist decayed, generation {:?}", word.generation().get());
                }
                bead.arm(1, 1);
            }
            None => bead.arm(IDLE, 1),
        }
    }

    /// Tries to win the promotion of `handle` from `word` and queue its job.
    fn promote(
        &self,
        handle: &H,
        word: StateWord,
        promotion: Promotion,
        on_promote: impl FnOnce(u8, JobKind),
    ) -> Result<(), KilnError> {
        let Promotion { tier, priority, kind, calls } = promotion;
        let bead = handle.bead();
        let tier = tier.min(self.final_tier(bead));
        if word.tier().is_some_and(|installed| tier <= installed) {
            // Nothing above the installed code is allowed: it is final now.
            self.shared.with(|_| {
                if bead.word() == word {
                    bead.finalize();
                }
            });
            bead.arm(IDLE, calls);
            return Ok(());
        }
        let queued = word.with_phase(Phase::Queued);
        if bead.state.compare_exchange(word, queued).is_err() {
            // Another caller won, or the bead moved on; its winner arms the countdown.
            return Err(KilnError::AlreadyQueued);
        }
        bead.arm(PENDING, calls);
        on_promote(tier, kind);
        let entry =
            QueueEntry { priority, sequence: 0, generation: word.generation(), tier, kind, bead: handle.clone() };
        let limit = self.queue_capacity();
        let pushed = self.shared.with(|shared| {
            let result = if shared.queue.len() >= limit { Err(entry) } else { shared.queue.push(entry) };
            self.queue_len.store(shared.queue.len(), Ordering::Relaxed);
            result
        });
        match pushed {
            Ok(()) => {
                self.counters.promotions.bump();
                debug!("kiln: promoted to tier {:?} ({:?}), priority {:?}", tier, kind, priority);
                self.events.promoted(bead, tier, kind);
                self.wake();
                Ok(())
            }
            Err(refused) => {
                // Back to rest, unless something else moved the bead meanwhile.
                self.shared.with(|_| {
                    let _ = bead.state.compare_exchange(queued, queued.at_rest());
                });
                bead.arm(self.policy.queue_full_cooldown().get(), 0);
                self.counters.queue_full.bump();
                debug!("kiln: queue full, bead cools down");
                self.events.queue_full(bead);
                drop(refused);
                Err(KilnError::QueueFull)
            }
        }
    }

    /// Queues a compile of `bead` at `tier` now, whatever its count (the
    /// seed's `submit`). Refuses if a job is already pending, the bead is
    /// blacklisted or invalidated, or the queue is full.
    pub fn submit(&self, bead: &H, tier: u8, kind: JobKind) -> Result<(), KilnError> {
        self.submit_with(bead, tier, kind, |_, _| {})
    }

    /// [`submit`](Self::submit) with a promotion hook, called only if the job
    /// is about to be queued (see [`on_invoke_with`](Self::on_invoke_with)).
    pub fn submit_with(
        &self,
        bead: &H,
        tier: u8,
        kind: JobKind,
        on_promote: impl FnOnce(u8, JobKind),
    ) -> Result<(), KilnError> {
        if tier > MAX_TIER {
            return Err(KilnError::TierOutOfRange);
        }
        let record = bead.bead();
        let word = record.word();
        match word.phase() {
            Phase::Interpreted | Phase::Compiled => {}
            Phase::Queued | Phase::Compiling => return Err(KilnError::AlreadyQueued),
            Phase::Blacklisted => return Err(KilnError::Blacklisted),
            Phase::Invalidated => return Err(KilnError::Invalidated),
        }
        let stats = self.hotness(record, word, 0, 0);
        self.promote(bead, word, Promotion { tier, priority: stats.hotness(), kind, calls: 0 }, on_promote)
    }

    /// Calls the host's `Pump::wake` unless a wake-up is already pending.
    fn wake(&self) {
        // SeqCst pairs with the SeqCst clear in `pump`: either the pumper
        // clears after this swap (and then sees the job we pushed before it,
        // through the lock), or this swap sees the cleared flag and wakes.
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            self.pump.wake();
        }
    }

    /// Claims the next job for any worker to run. Stale queue entries are
    /// dropped on the way.
    pub fn claim(&self) -> Result<Job<'_, H>, ClaimError> {
        // A claiming host drains like a pumping one: clear the flag first so
        // the next promotion wakes it (SeqCst pairs with the swap in `wake`).
        self.wake_pending.store(false, Ordering::SeqCst);
        let mut dropped = 0;
        self.claim_counting(&mut dropped)
    }

    fn claim_counting(&self, dropped: &mut u32) -> Result<Job<'_, H>, ClaimError> {
        loop {
            let claimed = self.shared.with(|shared| {
                let entry = shared.queue.pop();
                let result = match entry {
                    None => Err(Err(ClaimError::Empty)),
                    Some(entry) => {
                        let bead = entry.bead.bead();
                        let word = bead.word();
                        if word.phase() != Phase::Queued || word.generation() != entry.generation {
                            Err(Ok(entry))
                        } else {
                            let reserved = bead.has_code();
                            if reserved && !shared.reclaim.reserve() {
                                let _ = shared.queue.push(entry);
                                Err(Err(ClaimError::RetireFull))
                            } else {
                                bead.state.store(word.with_phase(Phase::Compiling));
                                Ok(Ticket {
                                    bead: entry.bead,
                                    generation: entry.generation,
                                    tier: entry.tier,
                                    kind: entry.kind,
                                    reserved,
                                })
                            }
                        }
                    }
                };
                self.queue_len.store(shared.queue.len(), Ordering::Relaxed);
                result
            });
            match claimed {
                Ok(ticket) => return Ok(Job::new(self, ticket)),
                Err(Err(error)) => return Err(error),
                // Dropped outside the lock: the handle's drop may run host code.
                Err(Ok(stale)) => {
                    *dropped += 1;
                    self.counters.stale_jobs.bump();
                    drop(stale);
                }
            }
        }
    }

    /// Runs queued jobs with `compiler` until the queue is empty or the
    /// budget is spent, and reports what it did. Several threads may pump
    /// the same broker at once.
    pub fn pump<C: Compiler<H>>(&self, compiler: &mut C, budget: Budget<'_>) -> PumpReport {
        // SeqCst pairs with the swap in `wake`.
        self.wake_pending.store(false, Ordering::SeqCst);
        let started = budget.now();
        let mut report = PumpReport::default();
        loop {
            if report.ran >= budget.max_jobs {
                report.stop = PumpStop::JobLimit;
                break;
            }
            if budget.expired() {
                report.stop = PumpStop::Deadline;
                break;
            }
            match self.claim_counting(&mut report.dropped) {
                Ok(job) => {
                    report.ran += 1;
                    match job.run_timed(compiler, budget.clock) {
                        JobOutcome::Published => report.published += 1,
                        JobOutcome::Failed => report.failed += 1,
                        JobOutcome::Stale => report.stale += 1,
                    }
                }
                Err(ClaimError::Empty) => {
                    report.stop = PumpStop::Idle;
                    break;
                }
                Err(ClaimError::RetireFull) => {
                    report.stop = PumpStop::RetireFull;
                    break;
                }
            }
        }
        report.remaining = self.queue_len() as u32;
        report.ticks = budget.now().zip(started).map_or(0, |(now, started)| now.saturating_sub(started));
        if report.remaining > 0 && matches!(report.stop, PumpStop::JobLimit | PumpStop::Deadline) {
            // Work is left: make sure a pumping thread does not go to sleep on it.
            self.wake();
        }
        report
    }

    /// Installs `compiled` as `bead`'s code at `tier` without its OSR table
    /// (a tier-up done by the host). The old code and table are retired;
    /// in-flight compiles for the bead become stale.
    pub fn swap_compiled(&self, bead: &impl BeadRef, compiled: Compiled, tier: u8) -> Result<(), Refused<Compiled>> {
        self.install_swap(bead, compiled, tier, false)
    }

    /// Like [`swap_compiled`](Self::swap_compiled), but publishes the OSR
    /// table with the code, so OSR stays available across the swap.
    pub fn swap_compiled_with_osr(
        &self,
        bead: &impl BeadRef,
        compiled: Compiled,
        tier: u8,
    ) -> Result<(), Refused<Compiled>> {
        self.install_swap(bead, compiled, tier, true)
    }

    fn install_swap(
        &self,
        handle: &impl BeadRef,
        compiled: Compiled,
        tier: u8,
        with_osr: bool,
    ) -> Result<(), Refused<Compiled>> {
        if tier > MAX_TIER {
            return Err(Refused::new(KilnError::TierOutOfRange, compiled));
        }
        let bead = handle.bead();
        let is_final = tier >= self.final_tier(bead);
        let result = self.shared.with(|shared| {
            let word = bead.word();
            if word.phase() == Phase::Invalidated {
                return Err(Refused::new(KilnError::Invalidated, compiled));
            }
            if bead.has_code() && shared.reclaim.free() == 0 {
                return Err(Refused::new(KilnError::RetireFull, compiled));
            }
            let osr = if with_osr { compiled.osr.map_or(ptr::null_mut(), NonNull::as_ptr) } else { ptr::null_mut() };
            let old = bead.install(compiled.entry, compiled.handle.get(), osr, is_final);
            self.retire_locked(shared, old, false);
            bead.state.store(word.next_generation().with_phase(Phase::Compiled).with_tier(Some(tier)));
            Ok(())
        });
        if result.is_ok() && !is_final {
            bead.arm(1, 0);
        }
        result
    }

    /// Retires `old` (a raw handle, 0 = none) into the ring. The caller has
    /// checked there is room (or holds a reservation).
    fn retire_locked(&self, shared: &mut Shared<H, QUEUE, RETIRE>, old: usize, reserved: bool) {
        match CodeHandle::from_raw(old) {
            Some(code) => {
                let retired = shared.reclaim.retire(code, reserved);
                debug_assert!(retired.is_ok(), "retire ring was checked for room");
                self.counters.retired.bump();
            }
            None if reserved => shared.reclaim.unreserve(),
            None => {}
        }
    }

    /// Reports that `bead`'s compiled code bailed out. The code is retired,
    /// the generation bumped, and the deopt policy decides what follows.
    pub fn record_bailout(&self, handle: &impl BeadRef, reason: BailoutReason) -> Result<DeoptDecision, KilnError> {
        self.record_bailout_with(handle, reason, |bailout| self.deopt.on_bailout(bailout))
    }

    /// [`record_bailout`](Self::record_bailout) with the decision made by
    /// `decide` instead of the broker's deopt policy (a layer above with its
    /// own policy object). `decide` runs without the broker's lock; if the
    /// bead moved on meanwhile (its code already gone), nothing is applied
    /// and the result is `NotCompiled`.
    pub fn record_bailout_with(
        &self,
        handle: &impl BeadRef,
        reason: BailoutReason,
        decide: impl FnOnce(&Bailout) -> DeoptDecision,
    ) -> Result<DeoptDecision, KilnError> {
        let bead = handle.bead();
        let seen = bead.word();
        if seen.phase() == Phase::Invalidated {
            return Err(KilnError::Invalidated);
        }
        let Some(tier) = seen.tier() else { return Err(KilnError::NotCompiled) };
        // Refuse before deciding, so a refused bailout is not decided (the
        // check is repeated under the lock; losing that race is the one case
        // where a decision is made and then refused).
        if self.shared.with(|shared| shared.reclaim.free()) == 0 {
            return Err(KilnError::RetireFull);
        }
        let bailout =
            Bailout { reason, bailouts: bead.bailout_count() + 1, tier, invocations: bead.invocation_count() };
        let decision = decide(&bailout);
        self.shared.with(|shared| {
            let word = bead.word();
            if word.generation() != seen.generation() || word.tier().is_none() {
                return Err(if word.phase() == Phase::Invalidated {
                    KilnError::Invalidated
                } else {
                    KilnError::NotCompiled
                });
            }
            if shared.reclaim.free() == 0 {
                return Err(KilnError::RetireFull);
            }
            bead.add_bailout();
            let old = bead.uninstall();
            self.retire_locked(shared, old, false);
            self.apply_decision(bead, word.next_generation().with_tier(None), decision, 1);
            Ok(())
        })?;
        self.counters.bailouts.bump();
        debug!("kiln: bailout, decision {:?}", decision);
        self.events.deoptimized(bead, decision);
        Ok(decision)
    }

    /// Stops compiling `bead`: its code (if any) is retired and it stays
    /// interpreted until the deopt policy's blacklist decay, if any.
    pub fn blacklist(&self, handle: &impl BeadRef) -> Result<(), KilnError> {
        let bead = handle.bead();
        self.shared.with(|shared| {
            let word = self.unpublish_locked(shared, bead, KilnError::Invalidated)?;
            self.apply_decision(bead, word, DeoptDecision::Blacklist, 1);
            Ok::<(), KilnError>(())
        })?;
        self.events.deoptimized(bead, DeoptDecision::Blacklist);
        Ok(())
    }

    /// Under the lock: refuses an invalidated bead (with `if_invalidated`) or
    /// a full retire ring, changing nothing; else unpublishes and retires the
    /// bead's code and returns its word with the generation bumped and no
    /// tier, for the caller to finish the transition.
    fn unpublish_locked(
        &self,
        shared: &mut Shared<H, QUEUE, RETIRE>,
        bead: &Bead,
        if_invalidated: KilnError,
    ) -> Result<StateWord, KilnError> {
        let word = bead.word();
        if word.phase() == Phase::Invalidated {
            return Err(if_invalidated);
        }
        if bead.has_code() && shared.reclaim.free() == 0 {
            return Err(KilnError::RetireFull);
        }
        let old = bead.uninstall();
        self.retire_locked(shared, old, false);
        Ok(word.next_generation().with_tier(None))
    }

    /// Sends `bead`'s code back to the interpreter without calling it a
    /// bailout (a code-memory budget evicting cold code): the code is
    /// retired, in-flight compiles become stale, the bailout count is
    /// untouched, and the policy is not asked again for `pause` calls.
    pub fn evict(&self, handle: &impl BeadRef, pause: NonZeroU32) -> Result<(), KilnError> {
        let bead = handle.bead();
        self.shared.with(|shared| {
            if bead.word().tier().is_none() {
                return Err(if bead.is_invalidated() { KilnError::Invalidated } else { KilnError::NotCompiled });
            }
            let word = self.unpublish_locked(shared, bead, KilnError::Invalidated)?;
            bead.state.store(word.with_phase(Phase::Interpreted));
            bead.arm(pause.get(), 0);
            Ok(())
        })?;
        debug!("kiln: evicted");
        Ok(())
    }

    /// Moves `bead` (whose code, if any, is already settled) to the state
    /// `decision` asks for. `retry` is the countdown for "recompile".
    fn apply_decision(&self, bead: &Bead, word: StateWord, decision: DeoptDecision, retry: u32) {
        let rest = word.at_rest();
        match decision {
            DeoptDecision::Recompile => {
                bead.state.store(rest);
                bead.arm(retry, 0);
            }
            DeoptDecision::PauseRecompile { calls } => {
                bead.state.store(rest);
                bead.arm(calls.get().max(retry), 0);
            }
            DeoptDecision::RevertToTier(cap) => {
                bead.set_tier_cap(cap.min(MAX_TIER));
                if word.tier().is_some_and(|installed| installed >= cap) {
                    bead.finalize();
                    bead.state.store(rest);
                    bead.arm(IDLE, 0);
                } else {
                    bead.state.store(rest);
                    bead.arm(retry, 0);
                }
            }
            DeoptDecision::Blacklist => {
                if let Some(installed) = word.tier() {
                    // Keep the working lower-tier code, but never go higher.
                    bead.set_tier_cap(installed);
                    bead.finalize();
                    bead.state.store(rest);
                    bead.arm(IDLE, 0);
                } else {
                    bead.state.store(word.with_phase(Phase::Blacklisted));
                    bead.arm(self.deopt.blacklist_decay().map_or(IDLE, NonZeroU32::get), 0);
                }
            }
        }
    }

    /// The function behind `bead` is gone: its code is retired, any job in
    /// flight becomes stale, and `Events::invalidated` runs (exactly once).
    pub fn invalidate(&self, handle: &impl BeadRef) -> Result<(), KilnError> {
        let bead = handle.bead();
        self.shared.with(|shared| {
            let word = self.unpublish_locked(shared, bead, KilnError::AlreadyInvalidated)?;
            bead.state.store(word.with_phase(Phase::Invalidated));
            bead.arm(IDLE, 0);
            bead.arm_backedges(IDLE, 0);
            Ok::<(), KilnError>(())
        })?;
        self.counters.invalidations.bump();
        debug!("kiln: invalidated");
        self.events.invalidated(bead);
        Ok(())
    }

    /// [`invalidate`](Self::invalidate) that cannot be refused for a full
    /// retire ring: the unpublished code is then handed to `overflow`
    /// instead, which must keep it until no thread can run it (a std layer
    /// parks it). Still refuses `AlreadyInvalidated`.
    pub fn invalidate_or_hand_back(
        &self,
        handle: &impl BeadRef,
        overflow: impl FnOnce(CodeHandle),
    ) -> Result<(), KilnError> {
        let bead = handle.bead();
        let spilled = self.shared.with(|shared| {
            let word = bead.word();
            if word.phase() == Phase::Invalidated {
                return Err(KilnError::AlreadyInvalidated);
            }
            let old = bead.uninstall();
            let spilled = match CodeHandle::from_raw(old) {
                Some(code) if shared.reclaim.free() == 0 => Some(code),
                _ => {
                    self.retire_locked(shared, old, false);
                    None
                }
            };
            bead.state.store(word.next_generation().with_tier(None).with_phase(Phase::Invalidated));
            bead.arm(IDLE, 0);
            bead.arm_backedges(IDLE, 0);
            Ok(spilled)
        })?;
        if let Some(code) = spilled {
            overflow(code);
        }
        self.counters.invalidations.bump();
        debug!("kiln: invalidated");
        self.events.invalidated(bead);
        Ok(())
    }

    /// Forces recompilation (hot reload): the code is retired, in-flight
    /// compiles become stale, bailouts and the tier cap are reset, and the
    /// next call asks the policy again — so a bead that is still hot is
    /// promoted at once.
    pub fn reload(&self, handle: &impl BeadRef) -> Result<(), KilnError> {
        let bead = handle.bead();
        self.shared.with(|shared| {
            let word = self.unpublish_locked(shared, bead, KilnError::Invalidated)?;
            bead.reset_bailouts();
            bead.set_tier_cap(MAX_TIER);
            bead.state.store(word.with_phase(Phase::Interpreted));
            bead.arm(1, 0);
            bead.arm_backedges(1, 0);
            Ok(())
        })
    }

    /// Retires the installed code of `handle`'s bead (released after two
    /// quiesces, like any retired code) and makes its in-flight compiles
    /// stale (their results are released, never installed), keeping its
    /// bailout count and tier cap — unlike [`reload`](Self::reload), nothing about the
    /// function's history is forgotten. The next call asks the policy again,
    /// so a bead that is still hot is promoted at once; a blacklisted bead
    /// stays blacklisted. For code that went stale without the function
    /// changing (it embeds an address that moved). Refuses an invalidated
    /// bead (`Invalidated`) and a full retire ring (`RetireFull`), changing
    /// nothing.
    pub fn retire_installed(&self, handle: &impl BeadRef) -> Result<(), KilnError> {
        let bead = handle.bead();
        self.shared.with(|shared| {
            let word = self.unpublish_locked(shared, bead, KilnError::Invalidated)?;
            if word.phase() != Phase::Blacklisted {
                bead.state.store(word.with_phase(Phase::Interpreted));
                bead.arm(1, 0);
                bead.arm_backedges(1, 0);
            } else {
                bead.state.store(word);
            }
            Ok(())
        })
    }

    /// Retires `code` taken out of a bead by hand ([`Bead::take_code`]); it is
    /// released after two quiesces like any other. A full ring hands it back.
    pub fn retire(&self, code: CodeHandle) -> Result<(), Refused<CodeHandle>> {
        self.shared
            .with(|shared| shared.reclaim.retire(code, false))
            .map_err(|code| Refused::new(KilnError::RetireFull, code))?;
        self.counters.retired.bump();
        Ok(())
    }

    /// Declares quiescence for every thread: each thread that may run
    /// kiln-published code has passed a point where it holds no entry, table
    /// or code pointer obtained from kiln, since the previous declaration.
    /// Advances the epoch; code retired two declarations ago (counted from
    /// the later of its retirement and the last reclamation-mode switch) is
    /// released through `compiler`. Returns how many.
    ///
    /// The first call moves an `Unmanaged` broker to [`ReclaimMode::Host`].
    /// See [`crate::reclaim`]'s invariants for the whole protocol.
    pub fn quiesce<C: Compiler<H>>(&self, compiler: &mut C) -> usize {
        self.quiesce_with(|code| compiler.release(code))
    }

    /// [`quiesce`](Self::quiesce), handing released code to `release`
    /// instead of a compiler (a layer that frees code itself).
    pub fn quiesce_with(&self, release: impl FnMut(CodeHandle)) -> usize {
        let mut releasable = heapless::Vec::<CodeHandle, RETIRE>::new();
        self.shared.with(|shared| {
            shared.reclaim.advance(&mut releasable);
            self.mirror_reclaim(shared);
        });
        self.release_all(release, &releasable)
    }

    /// One round of registered threads: every registered thread reported a
    /// quiescent point after reading [`epoch`](Self::epoch) `expected`.
    /// Advances and releases as [`quiesce`](Self::quiesce) does, but only if
    /// the epoch is still `expected` and the broker is in
    /// [`ReclaimMode::Registered`] — checked and advanced in one step, so two
    /// reclaimers that gathered the same round cannot both advance on it.
    /// Released code goes to `release`. `None` means the round is void
    /// (gather a new one); `Some(n)` that the epoch advanced and `n` handles
    /// were released.
    pub fn quiesce_from(&self, expected: u32, release: impl FnMut(CodeHandle)) -> Option<usize> {
        let mut releasable = heapless::Vec::<CodeHandle, RETIRE>::new();
        let advanced = self.shared.with(|shared| {
            let advanced = shared.reclaim.advance_from(expected, &mut releasable);
            self.mirror_reclaim(shared);
            advanced
        });
        advanced.then(|| self.release_all(release, &releasable))
    }

    /// The reclamation epoch. A registered thread reads it and reports it as
    /// the epoch of its quiescent point; Acquire pairs with the Release store
    /// in `mirror_reclaim`, so the reader sees every unpublish made before
    /// that epoch began.
    pub fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Who declares quiescence now.
    pub fn reclaim_mode(&self) -> ReclaimMode {
        // Relaxed: a hint for picking a path; every decision that depends on
        // the mode is re-checked under the lock.
        ReclaimMode::from_u8(self.reclaim_mode.load(Ordering::Relaxed) as u8)
    }

    /// Moves to `mode` if it is further along (`Unmanaged → Host →
    /// Registered`; modes never move back). A switch is a grace period of its
    /// own: code retired before it needs two advances under the new mode.
    /// Returns the floor (the epoch of the last switch).
    pub fn enter_reclaim_mode(&self, mode: ReclaimMode) -> u32 {
        self.shared.with(|shared| {
            let floor = shared.reclaim.enter(mode);
            self.mirror_reclaim(shared);
            floor
        })
    }

    /// The epoch of the last reclamation-mode switch: code parked before it
    /// (by [`park_retired`](Self::park_retired)) may be released once
    /// [`epoch`](Self::epoch) is two past it.
    pub fn reclaim_floor(&self) -> u32 {
        self.shared.with(|shared| shared.reclaim.floor())
    }

    /// In [`ReclaimMode::Unmanaged`] (nobody declares quiescence), moves
    /// every retired handle out of the ring to `park`, without advancing the
    /// epoch: parked code must never be freed while it may run; it is only
    /// kept from filling the ring. Does nothing in a managed mode. Returns
    /// how many were parked.
    pub fn park_retired(&self, mut park: impl FnMut(CodeHandle)) -> usize {
        let mut parked = heapless::Vec::<CodeHandle, RETIRE>::new();
        self.shared.with(|shared| shared.reclaim.park(&mut parked));
        for &code in &parked {
            park(code);
        }
        parked.len()
    }

    fn mirror_reclaim(&self, shared: &Shared<H, QUEUE, RETIRE>) {
        self.reclaim_mode.store(shared.reclaim.mode() as u32, Ordering::Relaxed);
        // Release pairs with the Acquire in `epoch`: a thread that reads the
        // new epoch sees every unpublish made under the lock before it.
        self.epoch.store(shared.reclaim.epoch(), Ordering::Release);
    }

    fn release_all(&self, mut release: impl FnMut(CodeHandle), handles: &[CodeHandle]) -> usize {
        for &code in handles {
            release(code);
            self.events.released(code);
        }
        self.counters.released.add(handles.len() as u32);
        handles.len()
    }

    /// Cancels every queued job (shutdown): their beads return to rest with
    /// a cooldown; nothing is compiled. Returns how many were cancelled.
    pub fn cancel_queued(&self) -> usize {
        let mut cancelled = 0;
        loop {
            let popped = self.shared.with(|shared| {
                let entry = shared.queue.pop()?;
                self.queue_len.store(shared.queue.len(), Ordering::Relaxed);
                let bead = entry.bead.bead();
                let word = bead.word();
                if word.phase() == Phase::Queued && word.generation() == entry.generation {
                    bead.state.store(word.at_rest());
                    bead.arm(self.policy.queue_full_cooldown().get(), 0);
                }
                Some(entry)
            });
            match popped {
                Some(entry) => {
                    cancelled += 1;
                    drop(entry);
                }
                None => return cancelled,
            }
        }
    }

    /// Releases every retired handle now, whatever its epoch (shutdown).
    ///
    /// # Safety
    ///
    /// 1. No thread is running, or will run, code or OSR entries it obtained
    ///    from this broker before the call, other than code still installed
    ///    in a bead.
    pub unsafe fn release_retired_now<C: Compiler<H>>(&self, compiler: &mut C) -> usize {
        let mut releasable = heapless::Vec::<CodeHandle, RETIRE>::new();
        self.shared.with(|shared| shared.reclaim.drain(&mut releasable));
        self.release_all(|code| compiler.release(code), &releasable)
    }
}

impl<H, P, D, W, E, const QUEUE: usize, const RETIRE: usize> JobOwner<H> for Broker<H, P, D, W, E, QUEUE, RETIRE>
where
    H: BeadRef,
    P: HotnessPolicy,
    D: DeoptPolicy,
    W: Pump,
    E: Events,
{
    fn finish_published(&self, ticket: &Ticket<H>, compiled: Compiled, ticks: Option<u64>) -> Result<(), Compiled> {
        let bead = ticket.bead.bead();
        let is_final = ticket.tier >= self.final_tier(bead);
        let published = self.shared.with(|shared| {
            let word = bead.word();
            let current = word.phase() == Phase::Compiling && word.generation() == ticket.generation;
            if !current {
                if ticket.reserved {
                    shared.reclaim.unreserve();
                }
                return Err(compiled);
            }
            let osr = compiled.osr.map_or(ptr::null_mut(), NonNull::as_ptr);
            let old = bead.install(compiled.entry, compiled.handle.get(), osr, is_final);
            self.retire_locked(shared, old, ticket.reserved);
            bead.state.store(word.with_phase(Phase::Compiled).with_tier(Some(ticket.tier)));
            shared.compile_ticks = shared.compile_ticks.saturating_add(ticks.unwrap_or(0));
            Ok(word)
        });
        match published {
            Ok(word) => {
                if !is_final {
                    // Keep counting toward the next tier from where we are.
                    let stats = self.hotness(bead, word.with_tier(Some(ticket.tier)), 0, 0);
                    match self.policy.decide(&stats) {
                        Decision::Wait(calls) => bead.arm(calls.get(), 0),
                        Decision::Promote { .. } => bead.arm(1, 0),
                    }
                }
                self.counters.compiles.bump();
                debug!("kiln: published tier {:?} in {:?} ticks", ticket.tier, ticks);
                self.events.compiled(bead, ticket.tier, ticks);
                Ok(())
            }
            Err(compiled) => {
                self.counters.stale_results.bump();
                debug!("kiln: stale compile result released");
                Err(compiled)
            }
        }
    }

    fn finish_failed(&self, ticket: &Ticket<H>) -> bool {
        let bead = ticket.bead.bead();
        let cooldown = self.policy.queue_full_cooldown().get();
        let current = |word: StateWord| word.phase() == Phase::Compiling && word.generation() == ticket.generation;
        // The policy runs without the lock; only the job's owner moves a
        // Compiling bead of its generation, so the decision cannot go stale
        // except by invalidate/reload/swap, which the re-check below catches.
        let decision = current(bead.word()).then(|| {
            self.deopt.on_bailout(&Bailout {
                reason: BailoutReason::CompileFailed,
                bailouts: bead.bailout_count() + 1,
                tier: ticket.tier,
                invocations: bead.invocation_count(),
            })
        });
        let applied = self.shared.with(|shared| {
            if ticket.reserved {
                shared.reclaim.unreserve();
            }
            let word = bead.word();
            let decision = decision.filter(|_| current(word))?;
            bead.add_bailout();
            // A failed compile leaves any installed code running; "recompile"
            // waits a cooldown so a failing compiler is not hammered.
            self.apply_decision(bead, word, decision, cooldown);
            Some(decision)
        });
        match applied {
            Some(decision) => {
                self.counters.failures.bump();
                debug!("kiln: compile failed at tier {:?}, decision {:?}", ticket.tier, decision);
                self.events.compile_failed(bead, ticket.tier);
                true
            }
            None => {
                self.counters.stale_results.bump();
                false
            }
        }
    }

    fn abandon(&self, ticket: &Ticket<H>) {
        let bead = ticket.bead.bead();
        let cooldown = self.policy.queue_full_cooldown().get();
        self.shared.with(|shared| {
            if ticket.reserved {
                shared.reclaim.unreserve();
            }
            let word = bead.word();
            if word.phase() == Phase::Compiling && word.generation() == ticket.generation {
                bead.state.store(word.at_rest());
                bead.arm(cooldown, 0);
            }
        });
        self.counters.abandoned.bump();
        debug!("kiln: job abandoned, bead back at rest");
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use super::*;
    use crate::osr::{OsrEntry, OsrTable};
    use crate::{
        AlwaysRecompilePolicy, BeadState, BlacklistDecay, NoEvents, NoPump, ThresholdDeoptPolicy, ThresholdPolicy,
        TieredPolicy,
    };

    fn code(n: usize) -> *mut () {
        core::ptr::without_provenance_mut(0x1000 * n)
    }

    /// Hands out entry `0x1000 * n` with handle `n`; fails while `failing`.
    #[derive(Default)]
    struct FakeJit {
        compiled: Vec<(u8, JobKind)>,
        released: Vec<usize>,
        failing: bool,
        osr: Option<&'static OsrTable<'static>>,
    }

    impl<'a> Compiler<&'a Bead> for FakeJit {
        type Error = &'static str;
        fn compile(&mut self, request: &crate::CompileRequest<'_, &'a Bead>) -> Result<Compiled, Self::Error> {
            if self.failing {
                return Err("refused");
            }
            self.compiled.push((request.tier, request.kind));
            let n = self.compiled.len();
            let compiled = Compiled::new(code(n), CodeHandle::from_raw(n).unwrap()).unwrap();
            Ok(match self.osr {
                // SAFETY: the table is 'static, so it outlives any release (1, 2).
                Some(table) => unsafe { compiled.with_osr(NonNull::from(table)) },
                None => compiled,
            })
        }
        fn release(&mut self, code: CodeHandle) {
            self.released.push(code.get());
        }
    }

    type Test<'a, P, D> = Broker<&'a Bead, P, D, NoPump, NoEvents, 4, 4>;

    fn broker<'a, P, D>(policy: P, deopt: D) -> Test<'a, P, D> {
        Broker::new(policy, deopt, NoPump, NoEvents)
    }

    fn call_n<'a, P: HotnessPolicy, D: DeoptPolicy>(
        broker: &Test<'a, P, D>,
        bead: &'a Bead,
        n: u32,
    ) -> Option<NonNull<()>> {
        let mut last = None;
        for _ in 0..n {
            last = broker.on_invoke(&bead);
        }
        last
    }

    #[test]
    fn promotes_exactly_at_the_threshold() {
        let bead = Bead::new(ptr::null_mut());
        let broker = broker(ThresholdPolicy::new(10), ThresholdDeoptPolicy::default());
        call_n(&broker, &bead, 9);
        assert_eq!(bead.state(), BeadState::Interpreted);
        assert_eq!(bead.invocation_count(), 9);
        call_n(&broker, &bead, 1);
        assert_eq!(bead.state(), BeadState::Queued);
        let mut jit = FakeJit::default();
        let report = broker.pump(&mut jit, Budget::unlimited());
        assert_eq!((report.ran, report.published, report.stop), (1, 1, PumpStop::Idle));
        assert_eq!(broker.on_invoke(&&bead), Some(NonNull::new(code(1)).unwrap()));
        assert_eq!(bead.state(), BeadState::Compiled(0));
    }

    #[test]
    fn tiers_climb_through_warm_code_to_the_fast_path() {
        let bead = Bead::new(ptr::null_mut());
        let broker = broker(TieredPolicy { tier1_threshold: 5, tier2_threshold: 50 }, ThresholdDeoptPolicy::default());
        let mut jit = FakeJit::default();
        call_n(&broker, &bead, 5);
        broker.pump(&mut jit, Budget::unlimited());
        assert_eq!(bead.state(), BeadState::Compiled(0));
        // Tier 0 code runs from the warm slot while the bead keeps counting.
        assert_eq!(broker.on_invoke(&&bead), NonNull::new(code(1)));
        assert!(bead.entry.load(Ordering::Relaxed).is_null());
        call_n(&broker, &bead, 44);
        assert_eq!(bead.state(), BeadState::Queued, "tier 1 queued at 50 calls");
        // While tier 1 compiles, tier 0 keeps serving.
        assert_eq!(broker.on_invoke(&&bead), NonNull::new(code(1)));
        broker.pump(&mut jit, Budget::unlimited());
        assert_eq!(bead.state(), BeadState::Compiled(1));
        assert_eq!(bead.entry.load(Ordering::Relaxed), code(2), "top tier takes the fast path");
        assert_eq!(jit.compiled, [(0, JobKind::Invoke), (1, JobKind::Invoke)]);
        // Tier 0 was replaced: retired, then released after two quiesces.
        assert_eq!(broker.quiesce(&mut jit), 0);
        assert_eq!(broker.quiesce(&mut jit), 1);
        assert_eq!(jit.released, [1]);
    }

    #[test]
    fn backedges_queue_an_osr_compile_and_find_its_entry() {
        static ENTRIES: [OsrEntry; 2] = [
            OsrEntry { site: 3, code: ptr::without_provenance_mut(0x3000) },
            OsrEntry { site: 8, code: ptr::without_provenance_mut(0x8000) },
        ];
        static TABLE: std::sync::LazyLock<OsrTable<'static>> =
            std::sync::LazyLock::new(|| OsrTable::new(&ENTRIES).unwrap());
        let bead = Bead::new(ptr::null_mut());
        let broker = broker(ThresholdPolicy::new(1_000).osr_threshold(20), AlwaysRecompilePolicy);
        let mut jit = FakeJit { osr: Some(&TABLE), ..FakeJit::default() };
        broker.on_invoke(&&bead);
        for _ in 0..19 {
            assert_eq!(broker.on_backedge(&&bead, 8), None);
        }
        assert_eq!(bead.state(), BeadState::Interpreted);
        assert_eq!(broker.on_backedge(&&bead, 8), None);
        assert_eq!(bead.state(), BeadState::Queued);
        broker.pump(&mut jit, Budget::unlimited());
        assert_eq!(jit.compiled, [(0, JobKind::Osr { site: 8 })]);
        assert_eq!(broker.on_backedge(&&bead, 8).map(|p| p.as_ptr()), Some(ENTRIES[1].code));
        assert_eq!(bead.osr_entry(3).map(|p| p.as_ptr()), Some(ENTRIES[0].code));
        assert_eq!(bead.osr_entry(4), None);
        // A plain swap drops the table; the `_with_osr` one keeps it.
        let swapped = Compiled::new(code(9), CodeHandle::from_raw(9).unwrap()).unwrap();
        broker.swap_compiled(&&bead, swapped, 0).unwrap();
        assert_eq!(bead.osr_entry(8), None);
        // SAFETY: the table is 'static (1, 2).
        let with_osr = unsafe {
            Compiled::new(code(10), CodeHandle::from_raw(10).unwrap()).unwrap().with_osr(NonNull::from(&*TABLE))
        };
        broker.swap_compiled_with_osr(&&bead, with_osr, 0).unwrap();
        assert!(bead.osr_entry(8).is_some());
    }

    #[test]
    fn bailout_retires_code_and_recompiles_per_policy() {
        let bead = Bead::new(ptr::null_mut());
        let broker = broker(ThresholdPolicy::new(3), ThresholdDeoptPolicy::new(1));
        let mut jit = FakeJit::default();
        call_n(&broker, &bead, 3);
        broker.pump(&mut jit, Budget::unlimited());
        let generation = bead.generation();
        let guard = BailoutReason::Guard { guard_id: 1, pc_offset: 0 };
        assert_eq!(broker.record_bailout(&&bead, guard), Ok(DeoptDecision::Recompile));
        assert_eq!(bead.state(), BeadState::Interpreted);
        assert_ne!(bead.generation(), generation);
        assert_eq!(bead.compiled(), None);
        // Still past the threshold: the next call re-promotes.
        call_n(&broker, &bead, 1);
        assert_eq!(bead.state(), BeadState::Queued);
        broker.pump(&mut jit, Budget::unlimited());
        assert_eq!(broker.record_bailout(&&bead, guard), Ok(DeoptDecision::Blacklist));
        assert_eq!(bead.state(), BeadState::Blacklisted);
        call_n(&broker, &bead, 10_000);
        assert_eq!(bead.state(), BeadState::Blacklisted, "no decay configured");
        assert_eq!(broker.record_bailout(&&bead, guard), Err(KilnError::NotCompiled));
        broker.quiesce(&mut jit);
        broker.quiesce(&mut jit);
        assert_eq!(jit.released, [1, 2]);
    }

    #[test]
    fn blacklist_decays_into_a_second_chance() {
        let bead = Bead::new(ptr::null_mut());
        let deopt = BlacklistDecay::new(ThresholdDeoptPolicy::new(0), NonZeroU32::new(100).unwrap());
        let broker = broker(ThresholdPolicy::new(2), deopt);
        let mut jit = FakeJit::default();
        call_n(&broker, &bead, 2);
        broker.pump(&mut jit, Budget::unlimited());
        let guard = BailoutReason::Guard { guard_id: 0, pc_offset: 0 };
        assert_eq!(broker.record_bailout(&&bead, guard), Ok(DeoptDecision::Blacklist));
        call_n(&broker, &bead, 99);
        assert_eq!(bead.state(), BeadState::Blacklisted);
        call_n(&broker, &bead, 2);
        assert_eq!(bead.bailout_count(), 0);
        assert_eq!(bead.state(), BeadState::Queued, "decayed, still hot, promoted again");
    }

    #[test]
    fn failed_compile_cools_down_instead_of_hammering() {
        let bead = Bead::new(ptr::null_mut());
        let broker = broker(ThresholdPolicy::new(2), AlwaysRecompilePolicy);
        let mut jit = FakeJit { failing: true, ..FakeJit::default() };
        call_n(&broker, &bead, 2);
        let report = broker.pump(&mut jit, Budget::unlimited());
        assert_eq!(report.failed, 1);
        assert_eq!(bead.state(), BeadState::Interpreted);
        assert_eq!(bead.bailout_count(), 1);
        let cooldown = broker.policy().queue_full_cooldown().get();
        call_n(&broker, &bead, cooldown - 1);
        assert_eq!(bead.state(), BeadState::Interpreted);
        call_n(&broker, &bead, 1);
        assert_eq!(bead.state(), BeadState::Queued);
        jit.failing = false;
        broker.pump(&mut jit, Budget::unlimited());
        assert_eq!(bead.state(), BeadState::Compiled(0));
        assert_eq!(broker.stats().failures, 1);
    }

    #[test]
    fn reload_bumps_generation_and_repromotes_hot_beads() {
        let bead = Bead::new(ptr::null_mut());
        let broker = broker(ThresholdPolicy::new(2), AlwaysRecompilePolicy);
        let mut jit = FakeJit::default();
        call_n(&broker, &bead, 2);
        let job = broker.claim().unwrap();
        broker.reload(&&bead).unwrap();
        assert_eq!(job.run(&mut jit), JobOutcome::Stale);
        assert_eq!(jit.released, [1], "stale result released at once");
        assert_eq!(bead.compiled(), None);
        assert_eq!(bead.state(), BeadState::Interpreted);
        call_n(&broker, &bead, 1);
        assert_eq!(bead.state(), BeadState::Queued);
        broker.pump(&mut jit, Budget::unlimited());
        assert_eq!(bead.compiled(), NonNull::new(code(2)));
    }

    #[test]
    fn retire_installed_keeps_history_and_makes_compiles_stale() {
        let bead = Bead::new(ptr::null_mut());
        let broker = broker(ThresholdPolicy::new(2), AlwaysRecompilePolicy);
        let mut jit = FakeJit::default();
        call_n(&broker, &bead, 2);
        broker.pump(&mut jit, Budget::unlimited());
        let guard = BailoutReason::Guard { guard_id: 0, pc_offset: 0 };
        broker.record_bailout_with(&&bead, guard, |_| DeoptDecision::RevertToTier(0)).unwrap();
        call_n(&broker, &bead, 2);
        broker.pump(&mut jit, Budget::unlimited());
        assert_eq!(bead.compiled(), NonNull::new(code(2)));
        let generation = bead.generation();

        broker.retire_installed(&&bead).unwrap();
        assert_eq!((bead.compiled(), bead.state()), (None, BeadState::Interpreted));
        assert_ne!(bead.generation(), generation);
        assert_eq!((bead.bailout_count(), bead.tier_cap()), (1, 0), "history kept, unlike reload");
        broker.quiesce(&mut jit);
        assert_eq!(jit.released, [], "retired code waits for the second quiesce");
        broker.quiesce(&mut jit);
        assert_eq!(jit.released, [1, 2]);

        // A compile in flight goes stale; the next call promotes again.
        call_n(&broker, &bead, 1);
        let job = broker.claim().unwrap();
        broker.retire_installed(&&bead).unwrap();
        assert_eq!(job.run(&mut jit), JobOutcome::Stale);
        assert_eq!(jit.released, [1, 2, 3], "the stale result is released at once");
        assert_eq!(bead.compiled(), None);
        call_n(&broker, &bead, 1);
        assert_eq!(bead.state(), BeadState::Queued);
        broker.invalidate(&&bead).unwrap();
        assert_eq!(broker.retire_installed(&&bead), Err(KilnError::Invalidated));
    }

    #[test]
    fn revert_to_tier_caps_future_promotions() {
        let bead = Bead::new(ptr::null_mut());
        let broker =
            broker(TieredPolicy { tier1_threshold: 2, tier2_threshold: 4 }, crate::TieredDeoptPolicy::default());
        let mut jit = FakeJit::default();
        call_n(&broker, &bead, 4);
        broker.pump(&mut jit, Budget::unlimited());
        call_n(&broker, &bead, 1);
        broker.pump(&mut jit, Budget::unlimited());
        assert_eq!(bead.state(), BeadState::Compiled(1));
        let guard = BailoutReason::Guard { guard_id: 0, pc_offset: 0 };
        assert_eq!(broker.record_bailout(&&bead, guard), Ok(DeoptDecision::RevertToTier(0)));
        assert_eq!(bead.tier_cap(), 0);
        call_n(&broker, &bead, 1);
        broker.pump(&mut jit, Budget::unlimited());
        assert_eq!(bead.state(), BeadState::Compiled(0));
        assert_eq!(bead.entry.load(Ordering::Relaxed), code(3), "capped tier 0 is final");
        assert_eq!(jit.compiled.last(), Some(&(0, JobKind::Invoke)));
    }

    #[test]
    fn budget_limits_jobs_and_leaves_the_rest_queued() {
        let beads: [Bead; 3] = core::array::from_fn(|_| Bead::new(ptr::null_mut()));
        let broker = broker(ThresholdPolicy::new(1), AlwaysRecompilePolicy);
        let mut jit = FakeJit::default();
        for bead in &beads {
            broker.on_invoke(&bead);
        }
        let report = broker.pump(&mut jit, Budget::jobs(2));
        assert_eq!((report.ran, report.remaining, report.stop), (2, 1, PumpStop::JobLimit));
        let report = broker.pump(&mut jit, Budget::jobs(2));
        assert_eq!((report.ran, report.remaining, report.stop), (1, 0, PumpStop::Idle));
    }

    #[test]
    fn promotion_hook_runs_once_for_the_winner_only() {
        let bead = Bead::new(ptr::null_mut());
        let broker = broker(ThresholdPolicy::new(3), AlwaysRecompilePolicy);
        let mut hooks = Vec::new();
        for _ in 0..10 {
            broker.on_invoke_with(&&bead, |tier, kind| hooks.push((tier, kind)));
        }
        assert_eq!(hooks, [(0, JobKind::Invoke)]);
        assert_eq!(broker.queue_len(), 1);
        assert_eq!(
            broker.submit_with(&&bead, 0, JobKind::Invoke, |_, _| panic!("not the winner")),
            Err(KilnError::AlreadyQueued)
        );
    }

    #[test]
    fn invalidate_or_hand_back_never_refuses_for_a_full_ring() {
        let beads: [Bead; 2] = core::array::from_fn(|_| Bead::new(ptr::null_mut()));
        let broker: Broker<&Bead, _, _, NoPump, NoEvents, 4, 1> =
            Broker::new(ThresholdPolicy::new(1), AlwaysRecompilePolicy, NoPump, NoEvents);
        for (n, bead) in beads.iter().enumerate() {
            let code = Compiled::new(code(n + 1), CodeHandle::from_raw(n + 1).unwrap()).unwrap();
            broker.swap_compiled(&bead, code, 0).unwrap();
        }
        broker.invalidate(&&beads[0]).unwrap();
        assert_eq!(broker.invalidate(&&beads[1]), Err(KilnError::RetireFull), "the plain form refuses");
        let mut spilled = None;
        broker.invalidate_or_hand_back(&&beads[1], |code| spilled = Some(code.get())).unwrap();
        assert_eq!(spilled, Some(2), "the code that did not fit is handed back");
        assert_eq!(beads[1].state(), BeadState::Invalidated);
        assert_eq!(beads[1].compiled(), None);
        assert_eq!(
            broker.invalidate_or_hand_back(&&beads[1], |_| panic!("nothing to hand back")),
            Err(KilnError::AlreadyInvalidated)
        );
    }

    #[test]
    fn eviction_is_not_a_bailout() {
        let bead = Bead::new(ptr::null_mut());
        let broker = broker(ThresholdPolicy::new(2), ThresholdDeoptPolicy::new(0));
        let mut jit = FakeJit::default();
        assert_eq!(broker.evict(&&bead, NonZeroU32::new(5).unwrap()), Err(KilnError::NotCompiled));
        call_n(&broker, &bead, 2);
        broker.pump(&mut jit, Budget::unlimited());
        let generation = bead.generation();
        broker.evict(&&bead, NonZeroU32::new(5).unwrap()).unwrap();
        assert_eq!((bead.state(), bead.compiled(), bead.bailout_count()), (BeadState::Interpreted, None, 0));
        assert_ne!(bead.generation(), generation);
        call_n(&broker, &bead, 4);
        assert_eq!(bead.state(), BeadState::Interpreted, "paused for 5 calls");
        call_n(&broker, &bead, 1);
        assert_eq!(bead.state(), BeadState::Queued, "a zero-bailout policy would have blacklisted a bailout");
        broker.quiesce(&mut jit);
        broker.quiesce(&mut jit);
        assert_eq!(jit.released, [1]);
    }

    #[test]
    fn hotter_beads_compile_first() {
        let cold = Bead::new(ptr::null_mut());
        let hot = Bead::new(ptr::null_mut());
        let broker = broker(ThresholdPolicy::new(1_000), AlwaysRecompilePolicy);
        call_n(&broker, &cold, 10);
        call_n(&broker, &hot, 500);
        broker.submit(&&cold, 0, JobKind::Invoke).unwrap();
        broker.submit(&&hot, 0, JobKind::Invoke).unwrap();
        assert_eq!(broker.submit(&&hot, 0, JobKind::Invoke), Err(KilnError::AlreadyQueued));
        let first = broker.claim().unwrap();
        assert!(ptr::eq(*first.bead(), &hot));
    }
}
