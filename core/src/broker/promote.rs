//! Promotion: counting calls and back-edges, asking the hotness policy when
//! a countdown runs out, winning the Queued state by CAS, and queueing the
//! job (which wakes the host through its `WakeHook`).
//!
//! The compiled and counting paths at the top of this file are the hot
//! paths guarded by `ci/callgrind.sh` (kiln-core) and
//! `ci/callgrind_std.sh` (kiln-std, through [`Bead::count_call`]).
//!
//! A layer above hands kiln-core its [`Bead`] and a `make_handle` closure
//! (`on_invoke_lazy`, `count_invoke`, `invoke_due`, `submit_lazy`): the
//! queue's handle `H` is built by the call that wins a promotion, and only
//! by it, so a handle may own a refcount and the job's work without any
//! call paying for them. The `H`-taking forms (`on_invoke`,
//! `on_invoke_with`, ...) are those with `make_handle = clone`.
//!
//! No call takes the broker's lock unless it decides something: a waiting
//! call (job queued or compiling) reads the state word, never the lock.

use core::ptr::NonNull;

use super::{Broker, IDLE, PENDING};
use crate::bead::{Bead, BeadRef, HandleOf};
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

/// What counting one call found ([`Bead::count_call`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallCount {
    /// Interpret, or call the warm code if some is installed (code that
    /// still counts toward a higher tier). The call was counted, or a job
    /// for the bead is queued or compiling (the waiting path).
    Interpret(Option<NonNull<()>>),
    /// The countdown ran out: the broker must look at the bead
    /// ([`Broker::invoke_due`]), which counts this call.
    Due,
}

impl Bead {
    /// The counting path of a call whose compiled path found nothing
    /// ([`fast_entry`](Self::fast_entry) empty), without the broker, waiting
    /// path first: a layer that inlines the compiled path calls this out of
    /// line, and [`Broker::invoke_due`] only if it returns
    /// [`CallCount::Due`].
    ///
    /// - **Waiting** (a job is queued or compiling): the state word alone
    ///   says so, one Relaxed load and a bit test; nothing is counted,
    ///   written or locked. The transition that ends the job changes the
    ///   word and re-arms the countdown; the next call sees the word (a
    ///   stale read costs one call interpreted or counted in the wrong
    ///   phase). A call that sees the new word but still the countdown
    ///   armed at promotion (`PENDING`) may overwrite the re-arm: the
    ///   damage is bounded by `PENDING` calls, as for any lost re-arm.
    /// - **Counting**: a Relaxed load and a plain store of the countdown
    ///   (see `bead` on why a lost count is fine), two instructions more
    ///   than [`Broker::count_invoke`], which counts first.
    #[inline(always)]
    pub fn count_call(&self) -> CallCount {
        if self.state.is_pending() {
            // Acquire pairs with the Release store of the warm entry in
            // `Bead::install`: whoever sees the pointer sees the code.
            return CallCount::Interpret(NonNull::new(self.warm_entry.load(Ordering::Acquire)));
        }
        let left = self.countdown.load(Ordering::Relaxed);
        if left > 1 {
            self.countdown.store(left - 1, Ordering::Relaxed);
            // Always loaded, as in `Broker::count_invoke`; Acquire pairs
            // with `Bead::install`, as above.
            return CallCount::Interpret(NonNull::new(self.warm_entry.load(Ordering::Acquire)));
        }
        CallCount::Due
    }
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
    pub fn on_invoke<'b>(&self, bead: &'b (impl HandleOf<'b, H> + ?Sized)) -> Option<NonNull<()>> {
        self.on_invoke_lazy(bead.as_bead(), |_, _| bead.to_handle())
    }

    /// [`on_invoke`](Self::on_invoke), calling `on_promote(tier, kind)` if and
    /// only if this call wins a promotion, after the win and before the job is
    /// queued — so a layer above can attach what the compile needs (a closure,
    /// a definition) to the bead before any pumper can claim it. `on_promote`
    /// runs on the calling thread without the broker's lock. If the queue
    /// then turns out to be full, the promotion is undone (`QueueFull`, the
    /// bead cools down) after the hook ran; the next winner's hook runs again.
    #[inline(always)]
    pub fn on_invoke_with<'b>(
        &self,
        bead: &'b (impl HandleOf<'b, H> + ?Sized),
        on_promote: impl FnOnce(u8, JobKind),
    ) -> Option<NonNull<()>> {
        self.on_invoke_lazy(bead.as_bead(), |tier, kind| {
            on_promote(tier, kind);
            bead.to_handle()
        })
    }

    /// [`on_invoke`](Self::on_invoke) for a caller that holds the bead, not
    /// a handle: the queue's handle is made by `make_handle(tier, kind)`, on
    /// the calling thread, if and only if this call wins a promotion (after
    /// the win, before the job is queued; see
    /// [`on_invoke_with`](Self::on_invoke_with)). A call that does not win
    /// builds no handle, so a handle may own what its job needs (a refcount,
    /// the compile work) without any call paying for it. The handle must
    /// refer to `bead` (checked in debug builds).
    #[inline(always)]
    pub fn on_invoke_lazy(&self, bead: &Bead, make_handle: impl FnOnce(u8, JobKind) -> H) -> Option<NonNull<()>> {
        if let Some(entry) = bead.fast_entry() {
            return Some(entry);
        }
        self.count_invoke(bead, make_handle)
    }

    /// The part of [`on_invoke_lazy`](Self::on_invoke_lazy) after the
    /// compiled path, for a layer that has just found
    /// [`Bead::fast_entry`] empty: counts the call, returns warm code if
    /// some is installed, and may queue a compile.
    ///
    /// Counting comes first here (9 instructions net, `ci/callgrind.sh`);
    /// a call whose job is pending counts down like any other and re-checks
    /// the state word, without a lock, every `PENDING` calls. A layer
    /// whose waiting path matters more than its counting path (kiln-std)
    /// uses [`Bead::count_call`], which looks at the state word first.
    #[inline(always)]
    pub fn count_invoke(&self, bead: &Bead, make_handle: impl FnOnce(u8, JobKind) -> H) -> Option<NonNull<()>> {
        let left = bead.countdown.load(Ordering::Relaxed);
        if left > 1 {
            bead.countdown.store(left - 1, Ordering::Relaxed);
            // Always loaded, even under a one-tier policy (where it is null,
            // since every install there is final): one load from the line
            // the countdown just came from costs what zeroing the result
            // would, and asking a policy whose `max_tier` is chosen at run
            // time would cost a chain of loads. Acquire pairs with the
            // Release store of the warm entry in `Bead::install`: whoever
            // sees the pointer sees the code.
            return NonNull::new(bead.warm_entry.load(Ordering::Acquire));
        }
        self.invoke_slow(bead, make_handle)
    }

    /// The call whose countdown ran out ([`CallCount::Due`]): asks the
    /// policy, may win and queue a promotion (building the queue's handle
    /// with `make_handle` only then), re-arms the countdown, and returns the
    /// entry to call, if any. Out of line. For a layer that calls
    /// [`Bead::count_call`] itself, so its own counting path needs no
    /// broker.
    #[inline]
    pub fn invoke_due(&self, bead: &Bead, make_handle: impl FnOnce(u8, JobKind) -> H) -> Option<NonNull<()>> {
        self.invoke_slow(bead, make_handle)
    }

    /// A loop back-edge probe at `site`. Returns an OSR entry for `site` if
    /// the installed code has one; otherwise counts the back-edge and may
    /// queue an OSR compile.
    #[inline]
    pub fn on_backedge<'b>(&self, bead: &'b (impl HandleOf<'b, H> + ?Sized), site: u64) -> Option<NonNull<()>> {
        self.on_backedge_lazy(bead.as_bead(), site, |_, _| bead.to_handle())
    }

    /// [`on_backedge`](Self::on_backedge) with a promotion hook, as in
    /// [`on_invoke_with`](Self::on_invoke_with).
    #[inline]
    pub fn on_backedge_with<'b>(
        &self,
        bead: &'b (impl HandleOf<'b, H> + ?Sized),
        site: u64,
        on_promote: impl FnOnce(u8, JobKind),
    ) -> Option<NonNull<()>> {
        self.on_backedge_lazy(bead.as_bead(), site, |tier, kind| {
            on_promote(tier, kind);
            bead.to_handle()
        })
    }

    /// [`on_backedge`](Self::on_backedge) for a caller that holds the bead:
    /// the queue's handle is made by `make_handle` only if this probe wins,
    /// as in [`on_invoke_lazy`](Self::on_invoke_lazy).
    #[inline]
    pub fn on_backedge_lazy(
        &self,
        bead: &Bead,
        site: u64,
        make_handle: impl FnOnce(u8, JobKind) -> H,
    ) -> Option<NonNull<()>> {
        if let Some(entry) = bead.osr_entry(site) {
            return Some(entry);
        }
        self.count_backedge(bead, site, make_handle)
    }

    /// The part of [`on_backedge_lazy`](Self::on_backedge_lazy) after the
    /// OSR lookup, for a layer that has just found no entry for `site`.
    #[inline]
    pub fn count_backedge(
        &self,
        bead: &Bead,
        site: u64,
        make_handle: impl FnOnce(u8, JobKind) -> H,
    ) -> Option<NonNull<()>> {
        let weight = self.policy.backedge_weight().max(1);
        let left = bead.backedge_countdown.load(Ordering::Relaxed);
        if left > weight {
            bead.backedge_countdown.store(left - weight, Ordering::Relaxed);
            return None;
        }
        self.backedge_slow(bead, site, weight, make_handle)
    }

    #[cold]
    #[inline(never)]
    fn invoke_slow(&self, bead: &Bead, make_handle: impl FnOnce(u8, JobKind) -> H) -> Option<NonNull<()>> {
        let word = bead.word();
        match word.phase() {
            Phase::Interpreted | Phase::Compiled => {
                let stats = self.hotness(bead, word, 1, 0);
                match self.policy.decide(&stats) {
                    Decision::Wait(calls) => bead.arm(calls.get(), 1),
                    Decision::Promote { tier, priority } => {
                        // A lost race or a full queue is already handled (and counted) inside.
                        let promotion = Promotion { tier, priority, kind: JobKind::Invoke, calls: 1 };
                        let _ = self.promote(bead, word, promotion, make_handle);
                    }
                }
            }
            Phase::Blacklisted => self.decay(bead, word),
            // The lock-free re-check of a waiting bead: the word read above
            // is the answer. It may be stale (the Relaxed countdown load
            // that led here orders nothing): the job may just have ended
            // and re-armed the countdown, and this arm overwrites that. The
            // damage is `PENDING` calls counted before the next re-check
            // reads the word again — the same bound as a re-arm lost to a
            // racing counting call's plain store (see `PENDING`). No lock.
            Phase::Queued | Phase::Compiling => bead.arm(PENDING, 1),
            Phase::Invalidated => bead.arm(IDLE, 1),
        }
        bead.compiled()
    }

    #[cold]
    #[inline(never)]
    fn backedge_slow(
        &self,
        bead: &Bead,
        site: u64,
        weight: u32,
        make_handle: impl FnOnce(u8, JobKind) -> H,
    ) -> Option<NonNull<()>> {
        let word = bead.word();
        match word.phase() {
            Phase::Interpreted | Phase::Compiled => {
                let stats = self.hotness(bead, word, 0, weight);
                match self.policy.decide_backedge(&stats) {
                    Decision::Wait(units) => bead.arm_backedges(units.get(), weight),
                    Decision::Promote { tier, priority } => {
                        bead.arm_backedges(PENDING, weight);
                        let promotion = Promotion { tier, priority, kind: JobKind::Osr { site }, calls: 0 };
                        let _ = self.promote(bead, word, promotion, make_handle);
                    }
                }
            }
            Phase::Queued | Phase::Compiling => bead.arm_backedges(PENDING, weight),
            Phase::Blacklisted | Phase::Invalidated => bead.arm_backedges(IDLE, weight),
        }
        bead.osr_entry(site)
    }

    /// Blacklisted bead whose countdown ran out: give it another chance if
    /// the deopt policy lets blacklists decay.
    fn decay(&self, bead: &Bead, word: StateWord) {
        // A blacklist taken from a hint (a saved profile) decays whatever
        // the policy says: the hint may be stale.
        match self.deopt.blacklist_decay().or_else(|| bead.is_hinted().then_some(core::num::NonZeroU32::MIN)) {
            Some(_) => {
                let revived = word.with_phase(Phase::Interpreted);
                let won = self.shared.with(|_| {
                    let won = bead.state.compare_exchange(word, revived).is_ok();
                    if won {
                        bead.reset_bailouts();
                        bead.set_hinted(false);
                    }
                    won
                });
                if won {
                    debug!(
                        "bead@{:?}: blacklist decayed, generation {:?}",
                        core::ptr::from_ref(bead),
                        word.generation().get()
                    );
                }
                bead.arm(1, 1);
            }
            None => bead.arm(IDLE, 1),
        }
    }

    /// Tries to win the promotion of `bead` from `word` and queue its job,
    /// whose handle `make_handle` makes only once the promotion is won.
    fn promote(
        &self,
        bead: &Bead,
        word: StateWord,
        promotion: Promotion,
        make_handle: impl FnOnce(u8, JobKind) -> H,
    ) -> Result<(), KilnError> {
        let Promotion { tier, priority, kind, calls } = promotion;
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
        let handle = make_handle(tier, kind);
        debug_assert!(core::ptr::eq(handle.bead(), bead), "a promotion's handle must refer to its bead");
        let entry = QueueEntry { priority, sequence: 0, generation: word.generation(), tier, kind, bead: handle };
        let limit = self.queue_capacity();
        let pushed = self.shared.with(|shared| {
            let pushed = shared.queue.push_within(entry, limit);
            if let Pushed::Evicted(evicted) = &pushed {
                self.rest_evicted(evicted);
            }
            self.queue_len.store(shared.queue.len(), Ordering::Relaxed);
            pushed
        });
        // The depth just stored, or a later one if another thread pushed or
        // popped since: `pushed` is a hint (the depth is not carried out of
        // the lock, which costs the crossing call a copy of the push result).
        let queue_len = || self.queue_len.load(Ordering::Relaxed);
        match pushed {
            Pushed::Queued | Pushed::Evicted(_) => {
                if let Pushed::Evicted(evicted) = pushed {
                    self.turned_away(evicted.bead.bead(), evicted.generation);
                }
                self.counters.promotions.bump();
                self.events.promoted(bead, tier, kind);
                self.wake();
                self.wake_hook.pushed(queue_len());
                Ok(())
            }
            Pushed::Refused(refused) => {
                // Back to rest, unless something else moved the bead meanwhile.
                self.shared.with(|_| {
                    let _ = bead.state.compare_exchange(queued, queued.at_rest());
                });
                self.turned_away(bead, word.generation());
                drop(refused);
                self.wake_hook.pushed(queue_len());
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
        self.events.queue_full(bead);
    }

    /// Queues a compile of `bead` at `tier` now, whatever its count (the
    /// seed's `submit`). Refuses if a job is already pending, the bead is
    /// blacklisted or invalidated, or the queue is full.
    pub fn submit<'b>(
        &self,
        bead: &'b (impl HandleOf<'b, H> + ?Sized),
        tier: u8,
        kind: JobKind,
    ) -> Result<(), KilnError> {
        self.submit_with(bead, tier, kind, |_, _| {})
    }

    /// [`submit`](Self::submit) with a promotion hook, called only if the job
    /// is about to be queued (see [`on_invoke_with`](Self::on_invoke_with)).
    pub fn submit_with<'b>(
        &self,
        bead: &'b (impl HandleOf<'b, H> + ?Sized),
        tier: u8,
        kind: JobKind,
        on_promote: impl FnOnce(u8, JobKind),
    ) -> Result<(), KilnError> {
        self.submit_lazy(bead.as_bead(), tier, kind, |tier, kind| {
            on_promote(tier, kind);
            bead.to_handle()
        })
    }

    /// [`submit`](Self::submit) for a caller that holds the bead: the
    /// queue's handle is made by `make_handle` only if the job is about to be
    /// queued (see [`on_invoke_lazy`](Self::on_invoke_lazy)). `Ok` means it
    /// was made and queued, except when the installed code is already final
    /// (`Ok` without a handle: nothing above it is allowed).
    pub fn submit_lazy(
        &self,
        bead: &Bead,
        tier: u8,
        kind: JobKind,
        make_handle: impl FnOnce(u8, JobKind) -> H,
    ) -> Result<(), KilnError> {
        if tier > MAX_TIER {
            return Err(KilnError::TierOutOfRange);
        }
        let word = bead.word();
        match word.phase() {
            Phase::Interpreted | Phase::Compiled => {}
            Phase::Queued | Phase::Compiling => return Err(KilnError::AlreadyQueued),
            Phase::Blacklisted => return Err(KilnError::Blacklisted),
            Phase::Invalidated => return Err(KilnError::Invalidated),
        }
        let stats = self.hotness(bead, word, 0, 0);
        self.promote(bead, word, Promotion { tier, priority: stats.hotness(), kind, calls: 0 }, make_handle)
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
