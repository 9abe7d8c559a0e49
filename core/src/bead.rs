//! A bead: the per-function record the interpreter consults on every call.

use core::ptr::{self, NonNull};

use crate::osr::OsrTable;
use crate::state::{AtomicStateWord, BeadState, Generation, Phase, StateWord};
use crate::sync::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

/// The per-function promotion record.
///
/// 64 bytes, laid out so the fast path touches its first word only and a
/// counting call its first 16 bytes:
///
/// ```text
///  entry            final-tier native entry; non-null = take it (the fast path)
///  countdown        calls until the policy looks again (Relaxed load + store)
///  state            StateWord: lifecycle, installed tier, generation
///  warm_entry       installed code that still counts toward a higher tier
///  osr              OSR table of the installed code, or null
///  code             CodeHandle of the installed code, or 0
///  core             the host's opaque function pointer (update_core)
///  invocation_mark  calls counted = invocation_mark - countdown
///  backedge_countdown / backedge_mark   the same pair for loop back-edges
///  meta             bailouts (16) | tier cap (8) | highest tier reached + 1 (4) | hinted blacklist (1)
/// ```
///
/// Counting uses a plain load and store, not a locked read-modify-write:
/// racing calls may lose a count, which a heuristic counter can afford (as
/// HotSpot's can), and the single promotion winner is chosen by a CAS on the
/// state word when the countdown runs out. Beads live wherever the host puts
/// them (`static`, arena, `Box`, `Arc`, a [`BeadPool`](crate::BeadPool));
/// the broker refers to them through a [`BeadRef`].
///
/// 64 bytes at word alignment, not aligned to a cache line: alignment would
/// send every heap bead down the allocator's aligned path and round a bead
/// with any header (an `Arc`'s, kiln-std's fields) up to 128 bytes, and
/// measured with two threads calling heap neighbours it bought nothing
/// (ARCHITECTURE.md, "Memory per bead"). A host packing beads in an array
/// that wants one per line wraps them in its own aligned type.
#[repr(C)]
pub struct Bead {
    pub(crate) entry: AtomicPtr<()>,
    pub(crate) countdown: AtomicU32,
    pub(crate) state: AtomicStateWord,
    pub(crate) warm_entry: AtomicPtr<()>,
    pub(crate) osr: AtomicPtr<OsrTable<'static>>,
    pub(crate) code: AtomicUsize,
    core: AtomicPtr<()>,
    invocation_mark: AtomicU32,
    pub(crate) backedge_countdown: AtomicU32,
    backedge_mark: AtomicU32,
    meta: AtomicU32,
}

#[cfg(not(loom))]
const _: () = {
    assert!(core::mem::size_of::<Bead>() <= 64);
    assert!(core::mem::align_of::<Bead>() <= 8);
};

const BAILOUT_MASK: u32 = 0xFFFF;

/// The longest countdown ever armed. Policies may ask for longer waits; the
/// slow path then simply asks again. Bounding it bounds the damage of a
/// re-arm lost to a racing counting call (see `broker::PENDING`).
pub(crate) const MAX_COUNTDOWN: u32 = 1 << 16;
const CAP_SHIFT: u32 = 16;
const CAP_MASK: u32 = 0xFF << CAP_SHIFT;
/// The highest tier ever installed, plus one (0: never compiled; 4 bits
/// hold `MAX_TIER + 1`), for hotness profiles (see `profile`). Written
/// under the broker's lock, like the rest of `meta`.
const REACHED_SHIFT: u32 = 24;
const REACHED_MASK: u32 = 0xF << REACHED_SHIFT;
const _: () = assert!(crate::state::MAX_TIER < 0xF, "the reached tier fits its 4 bits");
/// Set while the bead is blacklisted on a hint (a saved profile): the
/// blacklist decays whatever the deopt policy says (see
/// `Broker::blacklist_for`).
const HINTED: u32 = 1 << 28;

impl Bead {
    crate::sync::const_fn! {
        /// A bead for the function the host knows as `core`. kiln stores
        /// `core` and never dereferences it.
        pub const fn new(core: *mut ()) -> Self {
            Self {
                entry: AtomicPtr::new(ptr::null_mut()),
                // 1: the first call asks the policy, which arms the real countdown.
                countdown: AtomicU32::new(1),
                state: AtomicStateWord::new(),
                warm_entry: AtomicPtr::new(ptr::null_mut()),
                osr: AtomicPtr::new(ptr::null_mut()),
                code: AtomicUsize::new(0),
                core: AtomicPtr::new(core),
                invocation_mark: AtomicU32::new(1),
                backedge_countdown: AtomicU32::new(1),
                backedge_mark: AtomicU32::new(1),
                meta: AtomicU32::new((crate::state::MAX_TIER as u32) << CAP_SHIFT),
            }
        }
    }

    /// The host's current core pointer.
    pub fn core_handle(&self) -> *mut () {
        self.core.load(Ordering::Acquire) // pairs with the Release in `update_core`
    }

    /// Points the bead at a moved function object (a GC moved it, say).
    pub fn update_core(&self, core: *mut ()) {
        self.core.store(core, Ordering::Release); // pairs with `core_handle`
    }

    /// The lifecycle state.
    pub fn state(&self) -> BeadState {
        self.state.load().public()
    }

    /// The generation: bumped whenever in-flight compiles become stale.
    pub fn generation(&self) -> Generation {
        self.state.load().generation()
    }

    /// Tier of the installed code, if any.
    pub fn tier(&self) -> Option<u8> {
        self.state.load().tier()
    }

    /// Whether the bead was invalidated.
    pub fn is_invalidated(&self) -> bool {
        self.state.load().phase() == Phase::Invalidated
    }

    /// Whether compilation is currently refused.
    pub fn is_blacklisted(&self) -> bool {
        self.state.load().phase() == Phase::Blacklisted
    }

    /// The final-tier entry, if installed: the one Acquire load of the fast
    /// path, for layers that check it before reaching their broker.
    #[inline(always)]
    pub fn fast_entry(&self) -> Option<NonNull<()>> {
        // Acquire pairs with the Release stores in `install`.
        NonNull::new(self.entry.load(Ordering::Acquire))
    }

    /// The native entry to call, if code is installed: the final-tier entry,
    /// else code that is still counting toward a higher tier.
    #[inline]
    pub fn compiled(&self) -> Option<NonNull<()>> {
        // Acquire pairs with the Release stores in `install`.
        NonNull::new(self.entry.load(Ordering::Acquire))
            .or_else(|| NonNull::new(self.warm_entry.load(Ordering::Acquire)))
    }

    /// The OSR entry of the installed code at loop `site`: one Acquire load,
    /// then a binary search; `None` (after one load) when there is no table.
    #[inline]
    pub fn osr_entry(&self, site: u64) -> Option<NonNull<()>> {
        // Acquire pairs with the Release store of the table in `install`.
        let table = self.osr.load(Ordering::Acquire);
        // A non-null pointer was published by `install` from a `Compiled`;
        // its code is released only after unpublishing and two quiesces.
        // SAFETY: `with_osr` 1 keeps the table valid until that release.
        unsafe { table.as_ref() }.and_then(|table| table.lookup(site))
    }

    /// Counts one call without ever deciding anything (the seed's `tick`):
    /// the countdown is left for the next `on_invoke` when it is due.
    /// Returns the calls counted so far.
    pub fn tick(&self) -> u32 {
        let left = self.countdown.load(Ordering::Relaxed);
        if left > 1 {
            self.countdown.store(left - 1, Ordering::Relaxed);
        } else {
            // Due: keep the countdown at 1 for `on_invoke`, count via the mark.
            let mark = self.invocation_mark.load(Ordering::Relaxed);
            self.invocation_mark.store(mark.wrapping_add(1), Ordering::Relaxed);
        }
        self.invocation_count()
    }

    /// Calls counted so far (approximate: racing calls may lose counts).
    #[inline]
    pub fn invocation_count(&self) -> u32 {
        let mark = self.invocation_mark.load(Ordering::Relaxed);
        mark.wrapping_sub(self.countdown.load(Ordering::Relaxed))
    }

    /// Weighted back-edges counted so far.
    #[inline]
    pub fn backedge_count(&self) -> u32 {
        let mark = self.backedge_mark.load(Ordering::Relaxed);
        mark.wrapping_sub(self.backedge_countdown.load(Ordering::Relaxed))
    }

    /// Bailouts (and failed compiles) since the last reset.
    pub fn bailout_count(&self) -> u32 {
        self.meta.load(Ordering::Relaxed) & BAILOUT_MASK
    }

    /// Highest tier this bead may still be compiled at.
    #[inline]
    pub fn tier_cap(&self) -> u8 {
        (self.meta.load(Ordering::Relaxed) >> CAP_SHIFT) as u8
    }

    /// The highest tier code was ever installed at in this bead's life (a
    /// recycled pool slot starts again), kept after the code is gone.
    pub fn tier_reached(&self) -> Option<u8> {
        let reached = ((self.meta.load(Ordering::Relaxed) & REACHED_MASK) >> REACHED_SHIFT) as u8;
        reached.checked_sub(1)
    }

    /// Takes the installed code out of a bead nobody else can reach (it is
    /// being dropped), unpublishing it. The caller must still retire the
    /// handle ([`Broker::retire`](crate::Broker::retire)): a thread may be
    /// running the code.
    pub fn take_code(&mut self) -> Option<crate::CodeHandle> {
        crate::CodeHandle::from_raw(self.uninstall())
    }

    // ---- used by the broker, mostly under its lock ----

    /// Arms the call countdown at `calls`, keeping the count continuous.
    /// `consumed` extra calls were counted by the caller (the slow-path call).
    #[inline]
    pub(crate) fn arm(&self, calls: u32, consumed: u32) {
        let calls = calls.min(MAX_COUNTDOWN);
        let counted = self.invocation_count().wrapping_add(consumed);
        self.invocation_mark.store(counted.wrapping_add(calls), Ordering::Relaxed);
        self.countdown.store(calls, Ordering::Relaxed);
    }

    /// Arms the back-edge countdown at `units` (weighted back-edges).
    pub(crate) fn arm_backedges(&self, units: u32, consumed: u32) {
        let units = units.min(MAX_COUNTDOWN);
        let counted = self.backedge_count().wrapping_add(consumed);
        self.backedge_mark.store(counted.wrapping_add(units), Ordering::Relaxed);
        self.backedge_countdown.store(units, Ordering::Relaxed);
    }

    pub(crate) fn word(&self) -> StateWord {
        self.state.load()
    }

    /// Counts one more bailout and returns the new count.
    pub(crate) fn add_bailout(&self) -> u32 {
        let meta = self.meta.load(Ordering::Relaxed);
        let bailouts = ((meta & BAILOUT_MASK) + 1).min(BAILOUT_MASK);
        self.meta.store(meta & !BAILOUT_MASK | bailouts, Ordering::Relaxed);
        bailouts
    }

    pub(crate) fn reset_bailouts(&self) {
        let meta = self.meta.load(Ordering::Relaxed);
        self.meta.store(meta & !BAILOUT_MASK, Ordering::Relaxed);
    }

    pub(crate) fn set_tier_cap(&self, cap: u8) {
        let meta = self.meta.load(Ordering::Relaxed);
        self.meta.store(meta & !CAP_MASK | u32::from(cap) << CAP_SHIFT, Ordering::Relaxed);
    }

    /// Notes that code for `tier` is being installed (under the lock).
    pub(crate) fn note_tier_reached(&self, tier: u8) {
        if self.tier_reached().is_none_or(|reached| tier > reached) {
            let meta = self.meta.load(Ordering::Relaxed);
            let reached = u32::from(tier) + 1;
            self.meta.store(meta & !REACHED_MASK | reached << REACHED_SHIFT, Ordering::Relaxed);
        }
    }

    /// Whether the bead is blacklisted on a hint (see [`HINTED`]).
    pub(crate) fn is_hinted(&self) -> bool {
        self.meta.load(Ordering::Relaxed) & HINTED != 0
    }

    /// Marks (or clears) a hinted blacklist (under the lock).
    pub(crate) fn set_hinted(&self, hinted: bool) {
        let meta = self.meta.load(Ordering::Relaxed);
        self.meta.store(if hinted { meta | HINTED } else { meta & !HINTED }, Ordering::Relaxed);
    }

    /// Publishes code: OSR table first, then the entry, so a reader that sees
    /// the entry also sees everything it needs. Returns the handle it replaced.
    pub(crate) fn install(
        &self,
        entry: NonNull<()>,
        handle: usize,
        osr: *mut OsrTable<'static>,
        is_final: bool,
    ) -> usize {
        // AcqRel pairs with the swap in `uninstall` and the Acquire load in
        // `has_code`. All three run under the broker's lock (or, for
        // `take_code`, with the bead exclusively borrowed), which orders
        // them already; the handle word is never read without one of those.
        let old = self.code.swap(handle, Ordering::AcqRel);
        // Release: pairs with the Acquire load of the table in `osr_entry`,
        // so a reader that finds the table sees it complete.
        self.osr.store(osr, Ordering::Release);
        // Release: pairs with the Acquire loads of the entries in
        // `on_invoke` (broker), `fast_entry` and `compiled`: whoever sees the
        // pointer sees the code behind it. The table is stored before the
        // entry, so a reader of the entry who then looks up OSR (Acquire in
        // `osr_entry`) finds the new table. Clear the slot we are not using
        // first, so the fast path never returns code about to be retired.
        if is_final {
            self.warm_entry.store(ptr::null_mut(), Ordering::Release);
            self.entry.store(entry.as_ptr(), Ordering::Release);
        } else {
            self.entry.store(ptr::null_mut(), Ordering::Release);
            self.warm_entry.store(entry.as_ptr(), Ordering::Release);
        }
        old
    }

    /// Unpublishes code (entries first, then the table) and returns its handle.
    pub(crate) fn uninstall(&self) -> usize {
        // Release stores of null pair with the same Acquire loads as in
        // `install` (`on_invoke`, `fast_entry`, `compiled`, `osr_entry`); a
        // null publishes nothing to dereference. What makes the old code safe
        // to free is the order "unpublish, then the epoch advances": these
        // stores happen under the broker's lock before the Release store of
        // the epoch in `mirror_reclaim`, which pairs with the Acquire in
        // `Broker::epoch` (see `reclaim`, invariant 1).
        self.entry.store(ptr::null_mut(), Ordering::Release);
        self.warm_entry.store(ptr::null_mut(), Ordering::Release);
        self.osr.store(ptr::null_mut(), Ordering::Release);
        // AcqRel pairs with the swap in `install` (see there).
        self.code.swap(0, Ordering::AcqRel)
    }

    /// Moves warm code to the fast path (no higher tier will come).
    pub(crate) fn finalize(&self) {
        // Acquire pairs with the Release store of the warm entry in
        // `install`, so the code behind it is visible here ...
        let warm = self.warm_entry.load(Ordering::Acquire);
        if !warm.is_null() {
            // ... and Release passes it on to the Acquire load of the entry
            // in `on_invoke` and `fast_entry`.
            self.entry.store(warm, Ordering::Release);
            self.warm_entry.store(ptr::null_mut(), Ordering::Release);
        }
    }

    /// Readies a pool slot for a new function. The slot's previous life was
    /// invalidated (no code installed); its generation moves on.
    pub(crate) fn recycle(&self, core: *mut ()) {
        let word = self.state.load();
        // Release pairs with the Acquire in `core_handle`, as in `update_core`.
        self.core.store(core, Ordering::Release);
        self.meta.store((crate::state::MAX_TIER as u32) << CAP_SHIFT, Ordering::Relaxed);
        self.invocation_mark.store(1, Ordering::Relaxed);
        self.countdown.store(1, Ordering::Relaxed);
        self.backedge_mark.store(1, Ordering::Relaxed);
        self.backedge_countdown.store(1, Ordering::Relaxed);
        let fresh = if word == StateWord::INITIAL {
            word
        } else {
            word.next_generation().with_tier(None).with_phase(Phase::Interpreted)
        };
        self.state.store(fresh);
    }

    pub(crate) fn has_code(&self) -> bool {
        // Acquire pairs with the swaps in `install` and `uninstall`.
        self.code.load(Ordering::Acquire) != 0
    }
}

impl core::fmt::Debug for Bead {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Bead")
            .field("state", &self.state())
            .field("generation", &self.generation().get())
            .field("invocations", &self.invocation_count())
            .field("backedges", &self.backedge_count())
            .field("bailouts", &self.bailout_count())
            .field("compiled", &self.compiled())
            .finish()
    }
}

/// How the broker holds on to a bead while its job waits in the queue:
/// `&'a Bead` for beads in statics or arenas; the std layer uses an
/// `Arc`-based handle. Cloned only on promotion, never per call.
pub trait BeadRef: Clone {
    /// The bead behind the handle.
    fn bead(&self) -> &Bead;
}

impl BeadRef for &Bead {
    #[inline(always)]
    fn bead(&self) -> &Bead {
        self
    }
}

/// Anything a broker method that only looks at a bead accepts: the
/// [`Bead`] itself (`broker.reload(&bead)`, `broker.reload(BEAD)` for a
/// `&'static Bead`), or any [`BeadRef`] handle (`broker.reload(&handle)`).
///
/// Before, those methods took `&impl BeadRef`, and the only `BeadRef` for a
/// plain bead is `&Bead`, so a host wrote `broker.reload(&&bead)`; that
/// still compiles, and `&bead` now does too.
pub trait AsBead {
    /// The bead.
    fn as_bead(&self) -> &Bead;
}

impl AsBead for Bead {
    #[inline(always)]
    fn as_bead(&self) -> &Bead {
        self
    }
}

impl<H: BeadRef> AsBead for H {
    #[inline(always)]
    fn as_bead(&self) -> &Bead {
        self.bead()
    }
}

/// Anything a broker method that may queue a job accepts, as a reference:
/// a handle `H` (`broker.on_invoke(&handle)`), or, when `H` is `&'b Bead`,
/// the bead itself (`broker.on_invoke(&bead)`). The queue's handle is made
/// by [`to_handle`](Self::to_handle) only when a job is queued.
///
/// Before, those methods took `&H`, so with `H = &Bead` a host wrote
/// `broker.on_invoke(&&bead)`; that still compiles (`&Bead` is an `H`).
pub trait HandleOf<'b, H>: AsBead {
    /// The handle the queue keeps.
    fn to_handle(&'b self) -> H;
}

impl<'b, H: BeadRef> HandleOf<'b, H> for H {
    #[inline(always)]
    fn to_handle(&'b self) -> H {
        self.clone()
    }
}

impl<'b> HandleOf<'b, &'b Bead> for Bead {
    #[inline(always)]
    fn to_handle(&'b self) -> &'b Bead {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bead_is_64_bytes_at_word_alignment() {
        assert_eq!(core::mem::size_of::<Bead>(), 64);
        assert!(core::mem::align_of::<Bead>() <= 8);
    }

    #[test]
    fn counts_stay_continuous_across_arming() {
        let bead = Bead::new(ptr::null_mut());
        assert_eq!(bead.invocation_count(), 0);
        bead.arm(10, 1);
        assert_eq!(bead.invocation_count(), 1);
        bead.countdown.store(4, Ordering::Relaxed);
        assert_eq!(bead.invocation_count(), 7);
        bead.arm(100, 1);
        assert_eq!(bead.invocation_count(), 8);
    }

    #[test]
    fn tick_counts_even_when_the_policy_is_due() {
        let bead = Bead::new(ptr::null_mut());
        assert_eq!(bead.tick(), 1);
        assert_eq!(bead.tick(), 2);
        assert_eq!(bead.countdown.load(Ordering::Relaxed), 1, "still due for on_invoke");
        bead.arm(10, 0);
        assert_eq!(bead.tick(), 3);
        assert_eq!(bead.invocation_count(), 3);
    }

    #[test]
    fn meta_fields_do_not_clobber_each_other() {
        let bead = Bead::new(ptr::null_mut());
        assert_eq!(bead.tier_cap(), crate::state::MAX_TIER);
        assert_eq!(bead.add_bailout(), 1);
        bead.set_tier_cap(0);
        assert_eq!(bead.add_bailout(), 2);
        assert_eq!(bead.tier_cap(), 0);
        bead.note_tier_reached(2);
        bead.note_tier_reached(1);
        assert_eq!(bead.add_bailout(), 3);
        bead.reset_bailouts();
        assert_eq!((bead.bailout_count(), bead.tier_cap(), bead.tier_reached()), (0, 0, Some(2)));
        bead.set_tier_cap(5);
        assert_eq!(bead.tier_reached(), Some(2), "the cap leaves the reached tier alone");
        bead.set_hinted(true);
        bead.note_tier_reached(crate::state::MAX_TIER);
        assert_eq!((bead.tier_reached(), bead.tier_cap(), bead.is_hinted()), (Some(crate::state::MAX_TIER), 5, true));
        bead.set_hinted(false);
        assert!(!bead.is_hinted());
    }

    #[test]
    fn core_handle_follows_updates() {
        let mut a = 1u8;
        let mut b = 2u8;
        let bead = Bead::new(ptr::from_mut(&mut a).cast());
        assert_eq!(bead.core_handle(), ptr::from_mut(&mut a).cast());
        bead.update_core(ptr::from_mut(&mut b).cast());
        assert_eq!(bead.core_handle(), ptr::from_mut(&mut b).cast());
    }
}
