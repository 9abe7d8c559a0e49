//! kiln-std's bead: a layer over a kiln-core bead, not a second one. The
//! kiln-core bead (`kiln_bead`, first, so the fast path reads it straight
//! through the `Arc`) holds the whole lifecycle; kiln-std adds the domain
//! the bead belongs to and one word: its link in its `Beadie`'s chain, with
//! two flag bits in the low bits. Its methods are beadie's, so `Arc<Bead>`
//! works as in beadie. Compile work is not stored here: it travels with its
//! job (see `job`).

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, Ordering};

use kiln_core::KilnError;

use crate::OsrEntry;
use crate::code::{Built, ReleaseHook};
use crate::code_object;
use crate::deopt::{BailoutInfo, DeoptDecision, DeoptPolicy};
use crate::domain::Domain;
use crate::extras::{Extras, InvalidateHook};
use crate::state::BeadState;

/// The host's opaque pointer to its function object.
pub type CoreHandle = *mut ();

/// What `swap_compiled` replaced.
#[derive(Debug)]
pub struct SwapResult {
    /// The entry that was installed before (now retired).
    pub old_code: *mut (),
    /// The bead's generation after the swap.
    pub new_generation: u64,
}

// SAFETY: plain addresses and a number; kiln never dereferences `old_code`.
unsafe impl Send for SwapResult {}
// SAFETY: as above, nothing to share but immutable values.
unsafe impl Sync for SwapResult {}

/// What `reload` did (beadie's outcomes, by the state the bead was in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// Code was installed: it was dropped, and the bead, still hot,
    /// re-promotes on its next call.
    WillRecompile,
    /// A compile was running: its result is discarded and the bead re-promotes.
    PendingCurrentCompile,
    /// A compile was queued: the job is dropped and the bead re-promotes.
    Reverted,
    /// Was interpreted (or blacklisted, which stays): nothing to do.
    AlreadyInterpreting,
    /// The bead was invalidated.
    Dead,
}

impl ReloadOutcome {
    /// Whether the bead will be compiled again.
    pub fn will_recompile(self) -> bool {
        matches!(self, Self::WillRecompile | Self::PendingCurrentCompile | Self::Reverted)
    }
}

/// One function's promotion record: a kiln-core bead plus its domain and
/// chain link.
///
/// ```text
///  Arc header        16 B  strong and weak counts
///  kiln_bead         64 B  kiln-core's bead (the fast path's word first)
///  domain             8 B  broker, ledger, panic counter, side table
///  link               8 B  next bead in the chain | EMBEDS_CORE | HAS_EXTRAS
///                    ----
///                    96 B  of heap per registered bead, chain included
/// ```
///
/// Everything else a bead may have is rarely used and lives in the
/// domain's side table: the `on_invalidate` hook, the function's name, an
/// attached compile factory and a tiered adapter's queued flags; a bead
/// without them pays nothing. The panic counter is the domain's.
///
/// Words: "core" in this API is the seed's word for the host's function
/// object (`CoreHandle`, `update_core`, `core_handle`); the kiln-core bead
/// inside is `kiln_bead`.
#[repr(C)]
pub struct Bead {
    /// The kiln-core bead: state, counters, installed code.
    pub(crate) kiln_bead: kiln_core::Bead,
    pub(crate) domain: Arc<Domain>,
    /// The next bead of the chain (changed only under the chain's lock)
    /// in the high bits, [`EMBEDS_CORE`] and [`HAS_EXTRAS`] in the low
    /// bits (a bead is at least 4-byte aligned).
    link: AtomicPtr<Bead>,
}

/// Flag bit of `Bead::link`: the bead's code embeds its core's address
/// (see [`Bead::set_code_embeds_core`]).
const EMBEDS_CORE: usize = 0b01;
/// Flag bit of `Bead::link`: the bead has an entry in its domain's side
/// table (see `extras`).
const HAS_EXTRAS: usize = 0b10;
const FLAGS: usize = EMBEDS_CORE | HAS_EXTRAS;

const _: () = assert!(std::mem::align_of::<Bead>() > FLAGS, "the flags live in the link's alignment bits");
const _: () = assert!(
    std::mem::offset_of!(Bead, kiln_bead) == 0,
    "the log events find a bead's side-table entry from its kiln-core bead's address"
);

impl std::fmt::Debug for Bead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.kiln_bead.fmt(f)
    }
}

impl Bead {
    /// A bead outside any `Beadie` (it never promotes by itself; code comes
    /// through `eager_install` / `swap_compiled`).
    pub fn new(core: CoreHandle, on_invalidate: Option<Box<dyn Fn() + Send + Sync>>) -> Arc<Self> {
        Self::in_domain(Domain::detached(), core, on_invalidate)
    }

    /// A bead of `domain`, in no chain yet.
    pub(crate) fn in_domain(domain: Arc<Domain>, core: CoreHandle, on_invalidate: Option<InvalidateHook>) -> Arc<Self> {
        let bead = Arc::new(Self {
            kiln_bead: kiln_core::Bead::new(core),
            domain,
            link: AtomicPtr::new(std::ptr::null_mut()),
        });
        if let Some(hook) = on_invalidate {
            bead.update_extras(|extras| extras.on_invalidate = Some(hook));
        }
        bead
    }

    /// A compile's output for this bead, before it is published.
    pub(crate) fn built(&self, entry: *mut (), osr: Vec<OsrEntry>, release: Option<ReleaseHook>) -> Built {
        Built { entry, osr, release, panics: Arc::clone(&self.domain.panics) }
    }

    /// The function's name, if it was given one at registration (see
    /// [`Beadie::register_named`](crate::Beadie::register_named)). Kept in
    /// the domain's side table, off the bead: this takes a lock, so it is
    /// for logs and tools, not for a call path.
    pub fn name(&self) -> Option<Arc<str>> {
        self.read_extras(|extras| extras.name.clone()).flatten()
    }

    /// Names the function (for log lines); `None` removes the name.
    pub(crate) fn set_name(&self, name: Option<Arc<str>>) {
        if name.is_some() || self.flags() & HAS_EXTRAS != 0 {
            self.update_extras(|extras| extras.name = name);
        }
    }

    /// The function as log lines name it (see `logs`).
    pub(crate) fn who(&self) -> crate::logs::Who {
        crate::logs::Who { name: self.name(), address: self.extras_key() }
    }

    /// This bead's key in its domain's side table.
    fn extras_key(&self) -> usize {
        std::ptr::from_ref(self).addr()
    }

    /// Runs `f` on this bead's side-table entry, creating it first.
    pub(crate) fn update_extras<R>(&self, f: impl FnOnce(&mut Extras) -> R) -> R {
        let created = || {
            // Relaxed: set under the table's lock, which orders it with the
            // entry's creation; readers outside the lock only skip the
            // table when it is clear (see `read_extras`).
            self.link.fetch_or(HAS_EXTRAS, Ordering::Relaxed);
        };
        self.domain.extras.update(self.extras_key(), created, f)
    }

    /// Runs `f` on this bead's side-table entry, if it has one; never
    /// takes the table's lock for a bead without one.
    pub(crate) fn read_extras<R>(&self, f: impl FnOnce(&mut Extras) -> R) -> Option<R> {
        // Relaxed: a bead without an entry has nothing to read; an entry
        // created concurrently by another thread is one this call may miss,
        // as it would if it had run first. The `on_invalidate` hook is
        // stored before the `Arc` is shared, so every holder sees the flag.
        if self.flags() & HAS_EXTRAS == 0 {
            return None;
        }
        self.domain.extras.read(self.extras_key(), f)
    }

    /// The next bead of the chain. Call under the chain's lock.
    pub(crate) fn next_in_chain(&self) -> *const Bead {
        // Relaxed: the link changes only under the chain's lock, which
        // orders every change with this read.
        self.link.load(Ordering::Relaxed).map_addr(|link| link & !FLAGS).cast_const()
    }

    /// The flag bits of the link word.
    fn flags(&self) -> usize {
        // Relaxed: each flag's own comment says what orders it.
        self.link.load(Ordering::Relaxed).addr() & FLAGS
    }

    /// Points this bead's chain link at `next`, keeping the flags. Call
    /// under the chain's lock.
    pub(crate) fn set_next_in_chain(&self, next: *const Bead) {
        debug_assert_eq!(next.addr() & FLAGS, 0, "a bead is aligned");
        // Relaxed: ordered by the chain's lock (see `next_in_chain`); an
        // update rather than a store, so a flag set concurrently is kept.
        let _ = self.link.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |link| {
            Some(next.cast_mut().map_addr(|next| next | link.addr() & FLAGS))
        });
    }

    /// The kiln-core bead inside (its lifecycle state, tier and counters
    /// in kiln-core's terms).
    pub fn kiln_bead(&self) -> &kiln_core::Bead {
        &self.kiln_bead
    }

    /// The kiln-core bead inside: the old name of
    /// [`kiln_bead`](Self::kiln_bead).
    #[deprecated(note = "use `kiln_bead`: \"core\" is the seed's word for the host's function object")]
    pub fn core(&self) -> &kiln_core::Bead {
        &self.kiln_bead
    }

    /// Counts one call and returns (calls so far, state). Never promotes.
    pub fn tick(&self) -> (u32, BeadState) {
        (self.kiln_bead.tick(), self.state())
    }

    /// The native entry, if compiled.
    #[inline]
    pub fn compiled(&self) -> Option<*mut ()> {
        self.kiln_bead.compiled().map(NonNull::as_ptr)
    }

    /// The OSR entry at loop `site`, if the installed code has one. Lock-free.
    #[inline]
    pub fn osr_entry(&self, site: u64) -> Option<*mut ()> {
        self.kiln_bead.osr_entry(site).map(NonNull::as_ptr)
    }

    /// Replaces compiled code (a tier-up done by the runtime). Returns `None`
    /// if the bead is not compiled or `new_code` is null. The OSR table is
    /// retired with the old code; the old code is freed after quiescence.
    pub fn swap_compiled(&self, new_code: *mut ()) -> Option<SwapResult> {
        self.swap(new_code, Vec::new(), false)
    }

    /// Replaces compiled code and its OSR table together.
    pub fn swap_compiled_with_osr(&self, new_code: *mut (), osr: Vec<OsrEntry>) -> Option<SwapResult> {
        self.swap(new_code, osr, false)
    }

    /// Installs `code` whatever the state (ahead-of-time compilation).
    /// Returns false for a null pointer or an invalidated bead.
    pub fn eager_install(&self, code: *mut ()) -> bool {
        self.swap(code, Vec::new(), true).is_some()
    }

    fn swap(&self, new_code: *mut (), osr: Vec<OsrEntry>, eager: bool) -> Option<SwapResult> {
        self.install_built(self.built(new_code, osr, None), eager)
    }

    /// Publishes `built` as this bead's code at the installed tier (tier 0
    /// if `eager` and nothing is installed). Code that is not published is
    /// handed to its release hook at once: no thread ever saw it.
    pub(crate) fn install_built(&self, built: Built, eager: bool) -> Option<SwapResult> {
        let tier = match (self.kiln_bead.state(), self.kiln_bead.tier()) {
            (kiln_core::BeadState::Invalidated, _) => None,
            (_, Some(tier)) => Some(tier),
            _ if eager => Some(0),
            _ => None,
        };
        let Some(tier) = tier else {
            built.release_unpublished();
            return None;
        };
        let old_code = self.compiled().unwrap_or(std::ptr::null_mut());
        let compiled = match code_object::publishable(built, &self.domain.books()) {
            Ok(compiled) => compiled,
            Err(error) => {
                log::warn!(target: "kiln", "{}: swap refused: {error}", self.who());
                return None;
            }
        };
        let broker = &self.domain.broker;
        let mut result = broker.swap_compiled_with_osr(&&self.kiln_bead, compiled, tier);
        if let Err(refused) = &result
            && refused.error == KilnError::RetireFull
        {
            // Backpressure: free what can be freed and try once more.
            self.domain.reclaim_step();
            result = broker.swap_compiled_with_osr(&&self.kiln_bead, result.err()?.into_value(), tier);
        }
        match result {
            Ok(()) => Some(SwapResult { old_code, new_generation: self.generation() }),
            Err(refused) => {
                log::warn!(target: "kiln", "{}: swap refused: {}", self.who(), refused.error);
                // SAFETY: (1) never published, so released exactly once, here;
                // (2) no thread ever saw it.
                unsafe { code_object::release(refused.into_value().into_handle(), &self.domain.books()) };
                None
            }
        }
    }

    /// Forces recompilation (hot reload): code is dropped, an in-flight
    /// compile is discarded, and the bead re-promotes when hot.
    pub fn reload(&self) -> ReloadOutcome {
        let before = self.kiln_bead.state();
        let outcome = match before {
            kiln_core::BeadState::Invalidated => return ReloadOutcome::Dead,
            // beadie keeps a blacklist across a reload.
            kiln_core::BeadState::Blacklisted => return ReloadOutcome::AlreadyInterpreting,
            _ if self.kiln_bead.tier().is_some() => ReloadOutcome::WillRecompile,
            kiln_core::BeadState::Queued => ReloadOutcome::Reverted,
            kiln_core::BeadState::Compiling => ReloadOutcome::PendingCurrentCompile,
            _ => ReloadOutcome::AlreadyInterpreting,
        };
        let result = self.domain.retry_if_ring_full(|| self.domain.broker.reload(&&self.kiln_bead));
        match result {
            Ok(()) => outcome,
            Err(KilnError::Invalidated) => ReloadOutcome::Dead,
            Err(error) => {
                log::warn!(target: "kiln", "{}: reload refused: {error}", self.who());
                ReloadOutcome::AlreadyInterpreting
            }
        }
    }

    /// Points the bead at a moved function object (the host's GC moved it).
    ///
    /// By default a moved object is the same function: installed code stays,
    /// and a compile running across the move is installed as usual. If the
    /// bead's code embeds its core's address
    /// ([`set_code_embeds_core`](Self::set_code_embeds_core)), that code is
    /// stale instead: installed code is retired (released after the usual
    /// two quiesces) and a compile in flight is discarded (released, never
    /// installed); bailouts and the tier cap are kept, and the next hot call
    /// promotes the bead again, compiling against the new address.
    pub fn update_core(&self, new_ptr: CoreHandle) {
        // The new address is stored before the generation bump below: a
        // compile claimed after the bump reads it (the broker's lock orders
        // the claim after the bump, and the bump after this store).
        self.kiln_bead.update_core(new_ptr);
        log::trace!(target: "kiln", "{}: core moved to {new_ptr:p}", self.who());
        if !self.code_embeds_core() {
            return;
        }
        match self.domain.retry_if_ring_full(|| self.domain.broker.retire_installed(&&self.kiln_bead)) {
            Ok(()) | Err(KilnError::Invalidated) => {}
            Err(error) => {
                log::warn!(target: "kiln", "{}: code embedding the moved core not retired: {error}", self.who())
            }
        }
    }

    /// Declares whether this bead's compiled code embeds its core's address
    /// (kiln-only; default `false`). With `true`, [`update_core`](Self::update_core)
    /// retires installed code and discards compiles in flight, so code
    /// compiled against the old address never runs after the move.
    ///
    /// Such a bead can starve: if the object moves more often than a compile
    /// takes, every compile is discarded and the bead keeps interpreting.
    pub fn set_code_embeds_core(&self, embeds: bool) {
        // Relaxed: a setting read by `update_core`; it orders no other data.
        if embeds {
            self.link.fetch_or(EMBEDS_CORE, Ordering::Relaxed);
        } else {
            self.link.fetch_and(!EMBEDS_CORE, Ordering::Relaxed);
        }
    }

    /// Whether this bead's code embeds its core's address (see
    /// [`set_code_embeds_core`](Self::set_code_embeds_core)).
    pub fn code_embeds_core(&self) -> bool {
        // Relaxed: see `set_code_embeds_core`.
        self.flags() & EMBEDS_CORE != 0
    }

    /// The function is gone: code retired, in-flight compiles discarded, the
    /// `on_invalidate` hook run — exactly once, however often this is called.
    pub fn invalidate(&self) {
        // Never refused for a full retire ring: the code then waits in the
        // domain's parking list (freed only when the domain drops, its
        // backend code never), with a warning.
        let mut result = self.domain.broker.invalidate(&&self.kiln_bead);
        if result == Err(KilnError::RetireFull) {
            self.domain.reclaim_step();
            result = self.domain.broker.invalidate_or_hand_back(&&self.kiln_bead, |code| {
                log::warn!(target: "kiln", "{}: retire ring full, invalidated code parked until shutdown", self.who());
                self.domain.park(code);
            });
        }
        self.after_invalidate(result);
    }

    /// Runs the hook after a successful invalidate (once: a second one is
    /// `AlreadyInvalidated`).
    fn after_invalidate(&self, result: Result<(), KilnError>) {
        match result {
            Ok(()) => {
                // Taken out of the side table first: the hook runs with no
                // lock held, so it may call back into kiln.
                let hook = self.read_extras(|extras| extras.on_invalidate.take()).flatten();
                if let Some(hook) = hook {
                    // The bead is invalidated already; a panicking hook must
                    // not unwind into the caller of `invalidate`.
                    self.domain.panics.isolate("on_invalidate", hook);
                }
            }
            Err(KilnError::AlreadyInvalidated) => {}
            Err(error) => log::warn!(target: "kiln", "{}: invalidate refused: {error}", self.who()),
        }
    }

    /// Reports a bailout of this bead's compiled code and applies `policy`'s
    /// decision: the code is retired, and the bead recompiles, pauses,
    /// falls back to the first compiled tier (tier 0: the seed's
    /// `RevertToTier1`) or is blacklisted.
    pub fn on_bailout(&self, info: BailoutInfo, policy: &dyn DeoptPolicy) -> DeoptDecision {
        let mut seed_decision = None;
        let result = self.domain.broker.record_bailout_with(&&self.kiln_bead, info.reason(), |bailout| {
            let decision = self.ask_deopt(policy, &info, bailout.bailouts);
            let applied = decision.to_kiln(bailout.invocations);
            seed_decision = Some(decision);
            applied
        });
        match (result, seed_decision) {
            (Ok(_), Some(decision)) => decision,
            // No code to retire: still honour a blacklist, as beadie does.
            (_, decision) => {
                let decision = decision
                    .unwrap_or_else(|| self.ask_deopt(policy, &info, self.kiln_bead.bailout_count().saturating_add(1)));
                if decision == DeoptDecision::Blacklist {
                    self.blacklist();
                }
                decision
            }
        }
    }

    /// Asks the host's deopt `policy`, under `catch_unwind`: a panic is
    /// counted with the host panics and decides `Recompile` (the mildest
    /// decision: the code that bailed out is retired either way).
    fn ask_deopt(&self, policy: &dyn DeoptPolicy, info: &BailoutInfo, bailouts: u32) -> DeoptDecision {
        self.domain
            .panics
            .isolate("DeoptPolicy", || policy.on_bailout(self, info, bailouts))
            .unwrap_or(DeoptDecision::Recompile)
    }

    /// Sends the installed code back to the interpreter without counting a
    /// bailout (a code-memory budget evicting cold code); the bead is not
    /// promoted again for `pause` calls. False if no code was installed or
    /// kiln refused (the retire ring is full).
    pub fn evict(&self, pause: u32) -> bool {
        let pause = core::num::NonZeroU32::new(pause).unwrap_or(core::num::NonZeroU32::MIN);
        self.domain.retry_if_ring_full(|| self.domain.broker.evict(&&self.kiln_bead, pause)).is_ok()
    }

    /// Stops compiling this bead (its code is retired).
    pub fn blacklist(&self) {
        if let Err(error) = self.domain.broker.blacklist(&&self.kiln_bead) {
            log::warn!(target: "kiln", "{}: blacklist refused: {error}", self.who());
        }
    }

    /// The host's current core pointer.
    pub fn core_handle(&self) -> CoreHandle {
        self.kiln_bead.core_handle()
    }

    /// The state, in beadie's terms (for kiln-core's, with the tier, see
    /// [`kiln_bead`](Self::kiln_bead)).
    ///
    /// Code that keeps running while a higher tier compiles counts as
    /// `Compiled`, as in beadie's tiered adapter.
    pub fn state(&self) -> BeadState {
        BeadState::of(&self.kiln_bead)
    }

    /// Whether the bead was not invalidated.
    pub fn is_valid(&self) -> bool {
        !self.kiln_bead.is_invalidated()
    }

    /// Whether compilation is refused.
    pub fn is_blacklisted(&self) -> bool {
        self.kiln_bead.is_blacklisted()
    }

    /// Calls counted so far.
    pub fn invocation_count(&self) -> u32 {
        self.kiln_bead.invocation_count()
    }

    /// Bailouts so far.
    pub fn bailout_count(&self) -> u32 {
        self.kiln_bead.bailout_count()
    }

    /// The generation: bumped by swaps, reloads, bailouts and invalidation.
    pub fn generation(&self) -> u64 {
        u64::from(self.kiln_bead.generation().get())
    }

    /// Always false: kiln applies a reload at once, even during a compile
    /// (whose result is then discarded).
    pub fn reload_pending(&self) -> bool {
        false
    }

    /// Always 0: kiln keeps a pause as a countdown inside the bead rather
    /// than as an invocation count to reach.
    pub fn recompile_after(&self) -> u32 {
        0
    }
}

impl Drop for Bead {
    fn drop(&mut self) {
        // Last reference gone: nobody can call this bead again, but a thread
        // may still run its code, so the code is retired, not freed.
        if let Some(code) = self.kiln_bead.take_code()
            && let Err(refused) = self.domain.broker.retire(code)
        {
            self.domain.park(refused.into_value());
        }
        // Relaxed: the last reference's drop is ordered after every other
        // use of the bead (the `Arc`'s count), flag updates included.
        if self.flags() & HAS_EXTRAS != 0 {
            // Dropped after the table's lock is released: an entry may hold
            // a host closure, whose drop may call into kiln.
            drop(self.domain.extras.remove(self.extras_key()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 96 bytes of heap with the `Arc` header: beadie 0.3's figure, chain
    /// included (the link is on the bead). A field added here is paid by
    /// every registered function: rarely used parts go to `extras`.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn a_bead_with_its_arc_header_is_96_bytes() {
        assert_eq!(std::mem::size_of::<Bead>(), 80);
        assert_eq!(std::mem::align_of::<Bead>(), 8, "the allocator's fast path, not its aligned one");
    }

    #[test]
    fn flags_and_chain_link_share_a_word_without_clobbering() {
        let (bead, next) = (Bead::new(std::ptr::null_mut(), None), Bead::new(std::ptr::null_mut(), None));
        bead.set_code_embeds_core(true);
        bead.set_next_in_chain(Arc::as_ptr(&next));
        assert!(bead.code_embeds_core());
        assert_eq!(bead.next_in_chain(), Arc::as_ptr(&next));
        bead.set_code_embeds_core(false);
        assert_eq!(bead.next_in_chain(), Arc::as_ptr(&next));
        bead.update_extras(|extras| extras.queued_tiers = 1);
        bead.set_next_in_chain(std::ptr::null());
        assert!(bead.next_in_chain().is_null());
        assert!(!bead.code_embeds_core());
        assert_eq!(bead.read_extras(|extras| extras.queued_tiers), Some(1));
    }

    #[test]
    fn a_bead_without_rare_parts_has_no_side_entry_and_a_dropped_one_leaves_none() {
        let ladder = crate::policy::PolicyLadder::single(Box::new(crate::ThresholdPolicy::default()));
        let deopt = crate::domain::DynDeopt(Box::new(kiln_core::ExponentialBackoffPolicy::default()));
        let domain = Domain::new(ladder, deopt, 16, Arc::default());
        let before = domain.extras.len();
        let plain = Bead::in_domain(Arc::clone(&domain), std::ptr::null_mut(), None);
        assert_eq!(plain.read_extras(|_| ()), None);
        assert_eq!(domain.extras.len(), before);
        let hooked = Bead::in_domain(Arc::clone(&domain), std::ptr::null_mut(), Some(Box::new(|| {})));
        assert_eq!(hooked.read_extras(|extras| extras.on_invalidate.is_some()), Some(true));
        assert_eq!(domain.extras.len(), before + 1);
        drop(hooked);
        drop(plain);
        assert_eq!(domain.extras.len(), before, "the dropped bead's entry was removed");
    }
}
