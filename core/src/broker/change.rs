//! Change of code: the one step that replaces or removes a bead's published
//! code, and every transition built on it.
//!
//! [`Broker::change_code`] does, under the broker's lock and in this order:
//!
//! 1. check what the caller expects of the bead ([`Expect`]): refuse, and
//!    change nothing, if it does not hold;
//! 2. check the retire ring has room for the code being replaced (a job
//!    that publishes uses the slot it reserved at claim), else refuse or
//!    hand the code back ([`Change::or_hand_back`]);
//! 3. publish the new code, or unpublish, and retire the old code;
//! 4. apply **the generation rule**: every change bumps the generation,
//!    except a publish by the job issued for the bead's current generation;
//! 5. hand the new state word (new tier, generation per the rule) to the
//!    caller, who stores the phase the transition ends in and re-arms.
//!
//! Why publish keeps the generation: a generation names the request a job
//! was issued for, and only one job can hold it (the promotion CAS picks one
//! winner, and the bead is Compiling until that job ends). Publishing
//! fulfils that request, so there is no other job to make stale; bumping
//! would only spend the 24-bit counter once per compile. Every other change
//! (swap, bailout, blacklist, evict, invalidate, hand-back, reload, retire)
//! comes from outside the job, so it bumps and any job in flight turns stale:
//! its result is released, never installed.

use core::num::NonZeroU32;
use core::ptr;

use super::{Broker, IDLE, Shared};
use crate::bead::{AsBead, Bead};
use crate::compiler::{CodeHandle, Compiled};
use crate::deopt::{Bailout, BailoutReason, DeoptDecision, DeoptPolicy};
use crate::error::{KilnError, Refused};
use crate::job::Ticket;
use crate::policy::HotnessPolicy;
use crate::state::{Generation, MAX_TIER, Phase, StateWord};
use crate::stats::Events;

/// What must hold for a change to apply, checked under the lock. It also
/// decides the generation rule: only [`Expect::Job`] keeps the generation.
pub(super) enum Expect<'t, H> {
    /// The job holding this ticket publishes its own result: the bead is
    /// still Compiling at the ticket's generation. Refused with `StaleJob`.
    Job(&'t Ticket<H>),
    /// Any state but Invalidated, which is refused with this error.
    Live(KilnError),
    /// Code is installed and, if given, the generation is still the one the
    /// caller saw. Refused with `Invalidated` or `NotCompiled`.
    Installed(Option<Generation>),
}

/// New code to publish with [`Broker::change_code`].
struct Install {
    compiled: Compiled,
    tier: u8,
    with_osr: bool,
    is_final: bool,
}

/// What [`Broker::change_code`] puts in place of a bead's code.
pub(super) struct Change {
    install: Option<Install>,
    /// A full retire ring hands the old code back instead of refusing.
    hand_back: bool,
}

impl Change {
    /// Publish `compiled` at `tier` (with its OSR table if `with_osr`) on
    /// the fast path if `is_final`, else as warm code.
    pub(super) fn install(compiled: Compiled, tier: u8, with_osr: bool, is_final: bool) -> Self {
        Self { install: Some(Install { compiled, tier, with_osr, is_final }), hand_back: false }
    }

    /// Unpublish, leaving no code.
    pub(super) fn unpublish() -> Self {
        Self { install: None, hand_back: false }
    }

    /// Never refuse for a full retire ring: hand the old code to the caller.
    pub(super) fn or_hand_back(mut self) -> Self {
        self.hand_back = true;
        self
    }

    fn into_compiled(self) -> Option<Compiled> {
        self.install.map(|install| install.compiled)
    }
}

/// A change that applied.
pub(super) struct Changed<T> {
    /// What the caller's `finish` returned.
    pub(super) value: T,
    /// Old code the full ring could not take ([`Change::or_hand_back`]).
    pub(super) handed_back: Option<CodeHandle>,
}

impl<H, P, D, W, E, const QUEUE: usize, const RETIRE: usize> Broker<H, P, D, W, E, QUEUE, RETIRE>
where
    P: HotnessPolicy,
    D: DeoptPolicy,
    E: Events,
{
    /// The one step that changes a bead's published code; see the module
    /// notes for its order and the generation rule. `finish` runs under the
    /// lock with the word the bead moves to (its phase still the old one):
    /// it stores the final state and re-arms. A refusal changes nothing and
    /// hands back the offered code.
    pub(super) fn change_code<T>(
        &self,
        bead: &Bead,
        expect: Expect<'_, H>,
        change: Change,
        finish: impl FnOnce(&mut Shared<H, QUEUE, RETIRE>, StateWord) -> T,
    ) -> Result<Changed<T>, Refused<Option<Compiled>>> {
        self.shared.with(|shared| {
            let word = bead.word();
            let (refusal, reserved, bump) = match expect {
                Expect::Job(ticket) => {
                    ((!ticket.is_current(word)).then_some(KilnError::StaleJob), ticket.reserved, false)
                }
                Expect::Live(error) => ((word.phase() == Phase::Invalidated).then_some(error), false, true),
                Expect::Installed(seen) => {
                    let moved = word.tier().is_none() || seen.is_some_and(|seen| seen != word.generation());
                    let error = match word.phase() {
                        Phase::Invalidated => KilnError::Invalidated,
                        _ => KilnError::NotCompiled,
                    };
                    (moved.then_some(error), false, true)
                }
            };
            if let Some(error) = refusal {
                if reserved {
                    shared.reclaim.unreserve();
                }
                return Err(Refused::new(error, change.into_compiled()));
            }
            let ring_full = !reserved && bead.has_code() && shared.reclaim.free() == 0;
            if ring_full && !change.hand_back {
                return Err(Refused::new(KilnError::RetireFull, change.into_compiled()));
            }
            let (old, tier) = match change.install {
                Some(Install { compiled, tier, with_osr, is_final }) => {
                    let osr = match (with_osr, compiled.osr) {
                        (true, Some(table)) => table.as_ptr(),
                        _ => ptr::null_mut(),
                    };
                    bead.note_tier_reached(tier);
                    (bead.install(compiled.entry, compiled.handle.get(), osr, is_final), Some(tier))
                }
                None => (bead.uninstall(), None),
            };
            let handed_back = if ring_full {
                CodeHandle::from_raw(old)
            } else {
                self.retire_locked(shared, old, reserved);
                None
            };
            let word = if bump { word.next_generation() } else { word };
            Ok(Changed { value: finish(shared, word.with_tier(tier)), handed_back })
        })
    }

    /// Retires `old` (a raw handle, 0 = none) into the ring, using the
    /// caller's reservation if `reserved`. The caller checked there is room.
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

    /// Installs `compiled` as `bead`'s code at `tier` without its OSR table
    /// (a tier-up done by the host). The old code and table are retired;
    /// in-flight compiles for the bead become stale.
    pub fn swap_compiled(&self, bead: &impl AsBead, compiled: Compiled, tier: u8) -> Result<(), Refused<Compiled>> {
        self.install_swap(bead, compiled, tier, false)
    }

    /// Like [`swap_compiled`](Self::swap_compiled), but publishes the OSR
    /// table with the code, so OSR stays available across the swap.
    pub fn swap_compiled_with_osr(
        &self,
        bead: &impl AsBead,
        compiled: Compiled,
        tier: u8,
    ) -> Result<(), Refused<Compiled>> {
        self.install_swap(bead, compiled, tier, true)
    }

    fn install_swap(
        &self,
        handle: &impl AsBead,
        compiled: Compiled,
        tier: u8,
        with_osr: bool,
    ) -> Result<(), Refused<Compiled>> {
        if tier > MAX_TIER {
            return Err(Refused::new(KilnError::TierOutOfRange, compiled));
        }
        let bead = handle.as_bead();
        let is_final = tier >= self.final_tier(bead);
        let change = Change::install(compiled, tier, with_osr, is_final);
        self.change_code(bead, Expect::Live(KilnError::Invalidated), change, |_, word| {
            bead.state.store(word.with_phase(Phase::Compiled));
        })
        .map_err(|refused| Refused::new(refused.error, refused.value.unwrap_or_else(|| unreachable!())))?;
        if !is_final {
            bead.arm(1, 0);
        }
        self.events.swapped(bead, tier);
        Ok(())
    }

    /// Reports that `bead`'s compiled code bailed out. The code is retired,
    /// the generation bumped, and the deopt policy decides what follows.
    pub fn record_bailout(&self, handle: &impl AsBead, reason: BailoutReason) -> Result<DeoptDecision, KilnError> {
        self.record_bailout_with(handle, reason, |bailout| self.deopt.on_bailout(bailout))
    }

    /// [`record_bailout`](Self::record_bailout) with the decision made by
    /// `decide` instead of the broker's deopt policy (a layer above with its
    /// own policy object). `decide` runs without the broker's lock; if the
    /// bead moved on meanwhile (its code already gone), nothing is applied
    /// and the result is `NotCompiled`.
    pub fn record_bailout_with(
        &self,
        handle: &impl AsBead,
        reason: BailoutReason,
        decide: impl FnOnce(&Bailout) -> DeoptDecision,
    ) -> Result<DeoptDecision, KilnError> {
        let bead = handle.as_bead();
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
        let expect = Expect::Installed(Some(seen.generation()));
        self.change_code(bead, expect, Change::unpublish(), |_, word| {
            bead.add_bailout();
            self.apply_decision(bead, word, decision, 1);
        })
        .map_err(|refused| refused.error)?;
        self.counters.bailouts.bump();
        self.events.deoptimized(bead, decision);
        if decision == DeoptDecision::Blacklist && bead.is_blacklisted() {
            self.events.blacklisted(bead);
        }
        Ok(decision)
    }

    /// Stops compiling `bead`: its code (if any) is retired and it stays
    /// interpreted until the deopt policy's blacklist decay, if any.
    pub fn blacklist(&self, handle: &impl AsBead) -> Result<(), KilnError> {
        let bead = handle.as_bead();
        self.change_code(bead, Expect::Live(KilnError::Invalidated), Change::unpublish(), |_, word| {
            self.apply_decision(bead, word, DeoptDecision::Blacklist, 1);
        })
        .map_err(|refused| refused.error)?;
        self.events.deoptimized(bead, DeoptDecision::Blacklist);
        if bead.is_blacklisted() {
            self.events.blacklisted(bead);
        }
        Ok(())
    }

    /// Blacklists `bead` on a hint (a saved profile said its compiles kept
    /// failing) for `calls` calls, after which it may be compiled again
    /// whatever the deopt policy's [`blacklist_decay`](DeoptPolicy::blacklist_decay).
    /// Only an interpreted bead without code changes (one that runs code or
    /// has a compile under way this run knows better than the hint);
    /// `Ok(false)` says it was left alone. No code changes, so the
    /// generation stays.
    pub fn blacklist_for(&self, handle: &impl AsBead, calls: NonZeroU32) -> Result<bool, KilnError> {
        let bead = handle.as_bead();
        let word = bead.word();
        match word.phase() {
            Phase::Invalidated => return Err(KilnError::Invalidated),
            Phase::Interpreted if !bead.has_code() => {}
            _ => return Ok(false),
        }
        // The CAS races a promoting call's (Interpreted → Queued) as the
        // blacklist decay's does; under the lock, like every `meta` write.
        let won = self.shared.with(|_| {
            let won = bead.state.compare_exchange(word, word.with_phase(Phase::Blacklisted)).is_ok();
            if won {
                bead.set_hinted(true);
                bead.arm(calls.get(), 0);
            }
            won
        });
        if won {
            self.events.blacklisted(bead);
        }
        Ok(won)
    }

    /// Sends `bead`'s code back to the interpreter without calling it a
    /// bailout (a code-memory budget evicting cold code): the code is
    /// retired, in-flight compiles become stale, the bailout count is
    /// untouched, and the policy is not asked again for `pause` calls.
    pub fn evict(&self, handle: &impl AsBead, pause: NonZeroU32) -> Result<(), KilnError> {
        let bead = handle.as_bead();
        self.change_code(bead, Expect::Installed(None), Change::unpublish(), |_, word| {
            bead.state.store(word.with_phase(Phase::Interpreted));
            bead.arm(pause.get(), 0);
        })
        .map_err(|refused| refused.error)?;
        self.events.evicted(bead);
        Ok(())
    }

    /// Moves `bead` (whose code, if any, is already settled) to the state
    /// `decision` asks for. `retry` is the countdown for "recompile".
    pub(super) fn apply_decision(&self, bead: &Bead, word: StateWord, decision: DeoptDecision, retry: u32) {
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
    pub fn invalidate(&self, handle: &impl AsBead) -> Result<(), KilnError> {
        self.invalidate_with(handle.as_bead(), Change::unpublish()).map(drop)
    }

    /// [`invalidate`](Self::invalidate) that cannot be refused for a full
    /// retire ring: the unpublished code is then handed to `overflow`
    /// instead, which must keep it until no thread can run it (a std layer
    /// parks it). Still refuses `AlreadyInvalidated`.
    pub fn invalidate_or_hand_back(
        &self,
        handle: &impl AsBead,
        overflow: impl FnOnce(CodeHandle),
    ) -> Result<(), KilnError> {
        if let Some(code) = self.invalidate_with(handle.as_bead(), Change::unpublish().or_hand_back())? {
            overflow(code);
        }
        Ok(())
    }

    /// Both invalidations; returns the code handed back, if any.
    fn invalidate_with(&self, bead: &Bead, change: Change) -> Result<Option<CodeHandle>, KilnError> {
        let changed = self
            .change_code(bead, Expect::Live(KilnError::AlreadyInvalidated), change, |_, word| {
                bead.state.store(word.with_phase(Phase::Invalidated));
                bead.arm(IDLE, 0);
                bead.arm_backedges(IDLE, 0);
            })
            .map_err(|refused| refused.error)?;
        self.counters.invalidations.bump();
        self.events.invalidated(bead);
        Ok(changed.handed_back)
    }

    /// Forces recompilation (hot reload): the code is retired, in-flight
    /// compiles become stale, bailouts and the tier cap are reset, and the
    /// next call asks the policy again — so a bead that is still hot is
    /// promoted at once.
    pub fn reload(&self, handle: &impl AsBead) -> Result<(), KilnError> {
        let bead = handle.as_bead();
        self.change_code(bead, Expect::Live(KilnError::Invalidated), Change::unpublish(), |_, word| {
            bead.reset_bailouts();
            bead.set_tier_cap(MAX_TIER);
            bead.state.store(word.with_phase(Phase::Interpreted));
            bead.arm(1, 0);
            bead.arm_backedges(1, 0);
        })
        .map(drop)
        .map_err(|refused| refused.error)
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
    pub fn retire_installed(&self, handle: &impl AsBead) -> Result<(), KilnError> {
        let bead = handle.as_bead();
        self.change_code(bead, Expect::Live(KilnError::Invalidated), Change::unpublish(), |_, word| {
            if word.phase() == Phase::Blacklisted {
                bead.state.store(word);
            } else {
                bead.state.store(word.with_phase(Phase::Interpreted));
                bead.arm(1, 0);
                bead.arm_backedges(1, 0);
            }
        })
        .map(drop)
        .map_err(|refused| refused.error)
    }
}
