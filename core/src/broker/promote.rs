//! Promotion: counting calls and back-edges, asking the hotness policy when
//! a countdown runs out, winning the Queued state by CAS, and queueing the
//! job (which wakes the host through its `WakeHook`).
//!
//! The compiled and counting paths at the top of this file are the hot
//! paths guarded by `ci/callgrind.sh`: keep them as they are.

use core::ptr::NonNull;

use super::{Broker, IDLE, PENDING};
use crate::bead::{Bead, BeadRef};
use crate::deopt::DeoptPolicy;
use crate::error::KilnError;
use crate::job::JobKind;
use crate::policy::{Decision, HotnessPolicy};
use crate::queue::{Pushed, QueueEntry};
use crate::state::{MAX_TIER, Phase, StateWord};
use crate::stats::Events;
use crate::sync::Ordering;
use crate::wake::WakeHook;

/// A promotion the slow path (or `submit`) wants to queue.
struct Promotion {
    tier: u8,
    priority: u32,
    kind: JobKind,
    /// Calls this promotion counts (1 for the crossing call, 0 otherwise).
    calls: u32,
}

impl<H, P, D, W, E, const QUEUE: usize, const RETIRE: usize> Broker<H, P, D, W, E, QUEUE, RETIRE>
where
    H: BeadRef,
    P: HotnessPolicy,
    D: DeoptPolicy,
    W: WakeHook,
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
            let pushed = shared.queue.push_within(entry, limit);
            if let Pushed::Evicted(evicted) = &pushed {
                self.rest_evicted(evicted);
            }
            self.queue_len.store(shared.queue.len(), Ordering::Relaxed);
            pushed
        });
        match pushed {
            Pushed::Queued | Pushed::Evicted(_) => {
                if let Pushed::Evicted(evicted) = pushed {
                    self.turned_away(evicted.bead.bead(), evicted.generation);
                }
                self.counters.promotions.bump();
                debug!("kiln: promoted to tier {:?} ({:?}), priority {:?}", tier, kind, priority);
                self.events.promoted(bead, tier, kind);
                self.wake();
                Ok(())
            }
            Pushed::Refused(refused) => {
                // Back to rest, unless something else moved the bead meanwhile.
                self.shared.with(|_| {
                    let _ = bead.state.compare_exchange(queued, queued.at_rest());
                });
                self.turned_away(bead, word.generation());
                drop(refused);
                Err(KilnError::QueueFull)
            }
        }
    }

    /// Queue-full eviction, under the lock: the evicted entry's bead goes
    /// back to rest if that entry was its live job (a stale entry's bead
    /// has moved on and is left alone). Its handle is dropped by the
    /// caller, after the lock.
    fn rest_evicted(&self, evicted: &QueueEntry<H>) {
        let bead = evicted.bead.bead();
        let word = bead.word();
        if word.is_at(Phase::Queued, evicted.generation) {
            bead.state.store(word.at_rest());
        }
    }

    /// A bead a full queue turned away (refused, or evicted for a hotter
    /// one) counts down the policy's queue-full wait before it asks again,
    /// unless it has moved on since (promoted again, invalidated, ...).
    fn turned_away(&self, bead: &Bead, generation: crate::state::Generation) {
        let word = bead.word();
        if word.generation() == generation && matches!(word.phase(), Phase::Interpreted | Phase::Compiled) {
            let stats = self.hotness(bead, word, 0, 0);
            bead.arm(self.policy.queue_full_wait(&stats).get(), 0);
        }
        self.counters.queue_full.bump();
        debug!("kiln: queue full, bead cools down");
        self.events.queue_full(bead);
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

    /// Calls the host's `WakeHook::wake` unless a wake-up is already pending.
    pub(super) fn wake(&self) {
        // SeqCst pairs with the SeqCst clear in `claim` and `pump`: either the pumper
        // clears after this swap (and then sees the job we pushed before it,
        // through the lock), or this swap sees the cleared flag and wakes.
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            self.wake_hook.wake();
        }
    }
}
