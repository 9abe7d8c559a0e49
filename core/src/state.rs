//! The bead's state word: lifecycle state, installed tier and generation in
//! one `u32`, so a single compare-and-swap moves all three together.
//!
//! ```text
//!  bits 0..4   state      (BeadState discriminant)
//!  bits 4..8   tier       (installed code's tier, 15 = no code)
//!  bits 8..32  generation (24 bits, wraps)
//! ```
//!
//! The lifecycle, with the function that takes each arrow:
//!
//! ```text
//!                    (1) promote                (3) claim
//!   Interpreted ──────────────────► Queued ──────────────► Compiling
//!    │ ▲ ▲ ▲ ◄────────────────────── │ (4) cancel            │ │
//!    │ │ │ └─────────────────────────────────────────────────┘ │ (5) publish
//!    │ │ │   (6) fail, (7) job dropped, (15) reload              ▼
//!    │ │ │                                           ┌──► Compiled(tier) ──(2) next tier──► Queued
//!    │ │ └───────────────────────────────────────────┼─── (10) bailout, (13) evict,
//!    │ │     (14) reload, (16) retire_installed      │    (9) swap back into Compiled
//!    │ │ (8) swap ───────────────────────────────────┘         │
//!    │ │                                                       │ (11) bailout: blacklist
//!    │ └──(17) decay── Blacklisted ◄───────────────────────────┘
//!    └──(12) blacklist ──►┘
//!
//!   (18) invalidate, (19) invalidate_or_hand_back: any state but
//!   Invalidated ──► Invalidated (terminal; code retired or handed back)
//!   (20) blacklist_for: Interpreted ──► Blacklisted on a saved profile's
//!   hint; it decays by (17) whatever the deopt policy says
//! ```
//!
//! Each arrow, as the transition table in `lifecycle.rs` lists it (a test
//! checks this legend is that table, line for line, and walks the table
//! against the broker):
//!
//! ```text
//! ( 1) Interpreted ──► Queued      Broker::on_invoke (the policy promotes (also on_backedge, submit)); generation kept
//! ( 2) Compiled    ──► Queued      Broker::on_invoke (the policy promotes to a higher tier); generation kept
//! ( 3) Queued      ──► Compiling   Broker::claim; generation kept
//! ( 4) Queued      ──► Interpreted Broker::cancel_queued; generation kept
//! ( 5) Compiling   ──► Compiled    Job::publish; generation kept
//! ( 6) Compiling   ──► Interpreted Job::fail (the deopt policy recompiles later); generation kept
//! ( 7) Compiling   ──► Interpreted drop(Job); generation kept
//! ( 8) Interpreted ──► Compiled    Broker::swap_compiled; generation +1
//! ( 9) Compiled    ──► Compiled    Broker::swap_compiled; generation +1
//! (10) Compiled    ──► Interpreted Broker::record_bailout (the deopt policy recompiles); generation +1
//! (11) Compiled    ──► Blacklisted Broker::record_bailout (the deopt policy blacklists); generation +1
//! (12) Interpreted ──► Blacklisted Broker::blacklist; generation +1
//! (13) Compiled    ──► Interpreted Broker::evict; generation +1
//! (14) Compiled    ──► Interpreted Broker::reload; generation +1
//! (15) Compiling   ──► Interpreted Broker::reload (the job in flight turns stale); generation +1
//! (16) Compiled    ──► Interpreted Broker::retire_installed; generation +1
//! (17) Blacklisted ──► Interpreted Broker::on_invoke (the blacklist decays); generation kept
//! (18) Compiled    ──► Invalidated Broker::invalidate (from any state but Invalidated); generation +1
//! (19) Queued      ──► Invalidated Broker::invalidate_or_hand_back (from any state but Invalidated); generation +1
//! (20) Interpreted ──► Blacklisted Broker::blacklist_for (a saved profile's hint); generation kept
//! ```
//!
//! Every arrow except (1), (2), (17) and (20) is taken under the broker's
//! lock, so the other fields of the bead never change half-way through a
//! transition; (1) and (2) are a CAS on this word (exactly one racing
//! caller wins), (17) and (20) a CAS under the lock. Every arrow that changes the
//! published code (5, 8–16, 18, 19) goes through `Broker::change_code`,
//! which also applies the generation rule: every change of code bumps the
//! generation, except a publish by the job of the current generation (5).
//! A bump turns any job still in flight for the old generation into a
//! stale one whose result is released, never installed. Replaced code goes
//! to the retire ring (see `reclaim`).

use crate::sync::{AtomicU32, Ordering};

/// Where a bead is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum BeadState {
    /// Running in the interpreter and counting calls.
    Interpreted,
    /// A compile job is waiting in the queue.
    Queued,
    /// A pumper is compiling it.
    Compiling,
    /// Native code of the given tier is installed.
    Compiled(u8),
    /// Compilation is refused (too many bailouts) until the blacklist decays.
    Blacklisted,
    /// The function is gone; the bead never compiles again.
    Invalidated,
}

/// A bead's generation: bumped by every change of a bead's code that does
/// not come from the job of the current generation (swap, bailout,
/// blacklist, evict, invalidate, reload, retire), which makes in-flight
/// compiles stale. Publishing keeps it. 24 bits, wrapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Generation(pub(crate) u32);

impl Generation {
    /// The generation as a number (0 ..= 2^24 - 1).
    pub const fn get(self) -> u32 {
        self.0
    }
}

/// Highest tier number a bead can carry (tiers are `0 ..= MAX_TIER`).
pub const MAX_TIER: u8 = 14;

const STATE_MASK: u32 = 0xF;
/// Set in the phases of a bead whose job is queued or compiling, and only
/// in those: one bit test tells a call it is waiting (see `broker::promote`).
const PENDING_BIT: u32 = 0x8;
const TIER_SHIFT: u32 = 4;
const TIER_MASK: u32 = 0xF << TIER_SHIFT;
const NO_TIER: u32 = 0xF;
const GENERATION_SHIFT: u32 = 8;
const GENERATION_MASK: u32 = (1 << 24) - 1;

/// The raw lifecycle state (tier lives in its own field of the word).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    Interpreted = 0,
    Queued = PENDING_BIT as u8 | 1,
    Compiling = PENDING_BIT as u8 | 2,
    Compiled = 3,
    Blacklisted = 4,
    Invalidated = 5,
}

/// A decoded copy of the state word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StateWord(u32);

impl StateWord {
    pub(crate) const INITIAL: StateWord = StateWord(Phase::Interpreted as u32 | NO_TIER << TIER_SHIFT);

    pub(crate) fn phase(self) -> Phase {
        match self.0 & STATE_MASK {
            0 => Phase::Interpreted,
            9 => Phase::Queued,
            10 => Phase::Compiling,
            3 => Phase::Compiled,
            4 => Phase::Blacklisted,
            _ => Phase::Invalidated,
        }
    }

    /// Tier of the installed code, if any.
    pub(crate) fn tier(self) -> Option<u8> {
        let tier = (self.0 & TIER_MASK) >> TIER_SHIFT;
        (tier != NO_TIER).then_some(tier as u8)
    }

    pub(crate) fn generation(self) -> Generation {
        Generation(self.0 >> GENERATION_SHIFT)
    }

    /// The staleness test, written once: whether the bead is still in
    /// `phase` at `generation` — the state a queue entry (Queued) or a
    /// claimed job (Compiling) was issued for. Anything else means the bead
    /// moved on and the entry or job is stale.
    pub(crate) fn is_at(self, phase: Phase, generation: Generation) -> bool {
        self.phase() == phase && self.generation() == generation
    }

    pub(crate) fn with_phase(self, phase: Phase) -> Self {
        StateWord(self.0 & !STATE_MASK | phase as u32)
    }

    pub(crate) fn with_tier(self, tier: Option<u8>) -> Self {
        let tier = match tier {
            Some(t) => {
                debug_assert!(t <= MAX_TIER);
                u32::from(t.min(MAX_TIER))
            }
            None => NO_TIER,
        };
        StateWord(self.0 & !TIER_MASK | tier << TIER_SHIFT)
    }

    pub(crate) fn next_generation(self) -> Self {
        let next = (self.generation().0 + 1) & GENERATION_MASK;
        StateWord(self.0 & (STATE_MASK | TIER_MASK) | next << GENERATION_SHIFT)
    }

    /// The state a bead rests in when no job is in flight for it.
    pub(crate) fn at_rest(self) -> Self {
        match self.tier() {
            Some(_) => self.with_phase(Phase::Compiled),
            None => self.with_phase(Phase::Interpreted),
        }
    }

    pub(crate) fn public(self) -> BeadState {
        match self.phase() {
            Phase::Interpreted => BeadState::Interpreted,
            Phase::Queued => BeadState::Queued,
            Phase::Compiling => BeadState::Compiling,
            Phase::Compiled => BeadState::Compiled(self.tier().unwrap_or(0)),
            Phase::Blacklisted => BeadState::Blacklisted,
            Phase::Invalidated => BeadState::Invalidated,
        }
    }
}

/// The atomic cell holding a [`StateWord`].
pub(crate) struct AtomicStateWord(AtomicU32);

impl AtomicStateWord {
    crate::sync::const_fn! {
        pub(crate) const fn new() -> Self {
            AtomicStateWord(AtomicU32::new(StateWord::INITIAL.0))
        }
    }

    /// Acquire pairs with the Release of [`store`](Self::store) and
    /// [`compare_exchange`](Self::compare_exchange), so the fields written
    /// before a transition are visible after reading its state.
    pub(crate) fn load(&self) -> StateWord {
        StateWord(self.0.load(Ordering::Acquire))
    }

    /// Whether a job is queued or compiling for the bead (Queued or
    /// Compiling): one Relaxed load and a bit test, for the waiting path. It
    /// orders nothing: a stale answer costs one call interpreted or counted
    /// in the wrong phase, never a missed transition (the next call looks
    /// again).
    #[inline(always)]
    pub(crate) fn is_pending(&self) -> bool {
        self.0.load(Ordering::Relaxed) & PENDING_BIT != 0
    }

    /// Release: publishes the fields written before the transition.
    pub(crate) fn store(&self, word: StateWord) {
        self.0.store(word.0, Ordering::Release);
    }

    /// AcqRel on success (pairs with `load` and other transitions), Acquire
    /// on failure so the caller sees the state that beat it.
    #[inline]
    pub(crate) fn compare_exchange(&self, current: StateWord, new: StateWord) -> Result<StateWord, StateWord> {
        self.0.compare_exchange(current.0, new.0, Ordering::AcqRel, Ordering::Acquire).map(StateWord).map_err(StateWord)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_independent() {
        let word = StateWord::INITIAL.with_phase(Phase::Compiling).with_tier(Some(3));
        assert_eq!(word.phase(), Phase::Compiling);
        assert_eq!(word.tier(), Some(3));
        assert_eq!(word.generation(), Generation(0));
        let next = word.next_generation();
        assert_eq!(next.phase(), Phase::Compiling);
        assert_eq!(next.tier(), Some(3));
        assert_eq!(next.generation(), Generation(1));
        assert_eq!(next.with_tier(None).tier(), None);
    }

    #[test]
    fn generation_wraps_at_24_bits() {
        let mut word = StateWord(GENERATION_MASK << GENERATION_SHIFT | Phase::Queued as u32);
        assert_eq!(word.generation(), Generation(GENERATION_MASK));
        word = word.next_generation();
        assert_eq!(word.generation(), Generation(0));
        assert_eq!(word.phase(), Phase::Queued);
    }

    #[test]
    fn only_queued_and_compiling_are_pending() {
        let phases = [
            Phase::Interpreted,
            Phase::Queued,
            Phase::Compiling,
            Phase::Compiled,
            Phase::Blacklisted,
            Phase::Invalidated,
        ];
        for phase in phases {
            let word = StateWord::INITIAL.with_phase(phase).with_tier(Some(MAX_TIER)).next_generation();
            assert_eq!(word.phase(), phase, "the encoding round-trips");
            let atomic = AtomicStateWord::new();
            atomic.store(word);
            let pending = matches!(phase, Phase::Queued | Phase::Compiling);
            assert_eq!(atomic.is_pending(), pending, "{phase:?}");
        }
    }

    #[test]
    fn rest_state_follows_installed_code() {
        let queued = StateWord::INITIAL.with_phase(Phase::Queued);
        assert_eq!(queued.at_rest().public(), BeadState::Interpreted);
        assert_eq!(queued.with_tier(Some(1)).at_rest().public(), BeadState::Compiled(1));
    }
}
