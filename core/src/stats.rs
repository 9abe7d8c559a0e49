//! Observability: an [`Events`] hook with no-op defaults, [`LogEvents`]
//! (one log line per transition), and counters.
//!
//! Each transition is logged once, by the events the broker was built
//! with, never by the broker itself: a layer above (kiln-std) that knows
//! more (the function's name, the compile's error, the clock) logs it with
//! its own events, and no second line appears. Transitions without an
//! event (a stale result, an abandoned job, a decayed blacklist) are logged
//! by the broker at `debug`, target `kiln`, naming the bead by address.
//!
//! Events are called outside the broker's lock, on whichever thread took the
//! transition (an interpreter thread for promotions, a pumper for compiles),
//! so they must be cheap and must not block. The counters are plain relaxed
//! atomics on slow paths only; [`Broker::stats`](crate::Broker::stats) takes
//! a snapshot.

use crate::bead::Bead;
use crate::compiler::CodeHandle;
use crate::deopt::DeoptDecision;
use crate::job::JobKind;
use crate::sync::{AtomicU32, Ordering};

/// Hooks called on every state transition worth knowing about. All methods
/// default to doing nothing. They must not panic: kiln-core catches nothing,
/// so a panic unwinds into the broker call that fired the event (a panic in
/// `released` loses the rest of that `quiesce`'s batch, as for
/// [`Compiler::release`](crate::Compiler::release)).
pub trait Events {
    /// A bead won promotion and its job was queued.
    fn promoted(&self, bead: &Bead, tier: u8, kind: JobKind) {
        let _ = (bead, tier, kind);
    }
    /// A promotion found the queue full; the bead cools down.
    fn queue_full(&self, bead: &Bead) {
        let _ = bead;
    }
    /// Code was published; `ticks` is the compile time if the pump had a clock.
    fn compiled(&self, bead: &Bead, tier: u8, ticks: Option<u64>) {
        let _ = (bead, tier, ticks);
    }
    /// A compile failed (error, no code, or panic).
    fn compile_failed(&self, bead: &Bead, tier: u8) {
        let _ = (bead, tier);
    }
    /// Compiled code bailed out and the deopt policy decided.
    fn deoptimized(&self, bead: &Bead, decision: DeoptDecision) {
        let _ = (bead, decision);
    }
    /// A bead was invalidated (its function is gone). Runs exactly once per bead.
    fn invalidated(&self, bead: &Bead) {
        let _ = bead;
    }
    /// A bead's code was evicted ([`Broker::evict`](crate::Broker::evict),
    /// a code-memory budget): back to the interpreter, not a bailout.
    fn evicted(&self, bead: &Bead) {
        let _ = bead;
    }
    /// Retired code was handed back to the compiler.
    fn released(&self, code: CodeHandle) {
        let _ = code;
    }
    /// A pumper claimed `bead`'s job and is about to compile it at `tier`
    /// (on the compiling thread; `compiled` or `compile_failed` follows on
    /// the same thread unless the job goes stale or is abandoned).
    fn compile_started(&self, bead: &Bead, tier: u8, kind: JobKind) {
        let _ = (bead, tier, kind);
    }
    /// The host swapped code in ([`Broker::swap_compiled`](crate::Broker::swap_compiled)).
    fn swapped(&self, bead: &Bead, tier: u8) {
        let _ = (bead, tier);
    }
    /// `bead` entered the Blacklisted phase (a bailout, a failed compile or
    /// [`Broker::blacklist`](crate::Broker::blacklist)); it follows the
    /// `deoptimized` or `compile_failed` event of the same transition.
    fn blacklisted(&self, bead: &Bead) {
        let _ = bead;
    }
    /// A quiesce round advanced the epoch to `epoch` and released
    /// `released` code handles (each also reported by `released`).
    fn quiesced(&self, epoch: u32, released: usize) {
        let _ = (epoch, released);
    }
}

/// Events that do nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoEvents;

impl Events for NoEvents {}

impl<E: Events + ?Sized> Events for &E {
    fn promoted(&self, bead: &Bead, tier: u8, kind: JobKind) {
        (**self).promoted(bead, tier, kind)
    }
    fn queue_full(&self, bead: &Bead) {
        (**self).queue_full(bead)
    }
    fn compiled(&self, bead: &Bead, tier: u8, ticks: Option<u64>) {
        (**self).compiled(bead, tier, ticks)
    }
    fn compile_failed(&self, bead: &Bead, tier: u8) {
        (**self).compile_failed(bead, tier)
    }
    fn deoptimized(&self, bead: &Bead, decision: DeoptDecision) {
        (**self).deoptimized(bead, decision)
    }
    fn invalidated(&self, bead: &Bead) {
        (**self).invalidated(bead)
    }
    fn evicted(&self, bead: &Bead) {
        (**self).evicted(bead)
    }
    fn released(&self, code: CodeHandle) {
        (**self).released(code)
    }
    fn compile_started(&self, bead: &Bead, tier: u8, kind: JobKind) {
        (**self).compile_started(bead, tier, kind)
    }
    fn swapped(&self, bead: &Bead, tier: u8) {
        (**self).swapped(bead, tier)
    }
    fn blacklisted(&self, bead: &Bead) {
        (**self).blacklisted(bead)
    }
    fn quiesced(&self, epoch: u32, released: usize) {
        (**self).quiesced(epoch, released)
    }
}

/// Events that log each transition once, at `debug` (a failed compile at
/// `warn`), target `kiln`, through the crate's `log` or `defmt` feature
/// (nothing without either). Lines name the bead by address; `ticks` are
/// the pump clock's units, printed as given. A host that knows more (names,
/// durations) writes its own [`Events`] instead, as kiln-std does.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogEvents;

impl Events for LogEvents {
    fn promoted(&self, bead: &Bead, tier: u8, kind: JobKind) {
        debug!("bead@{:?}: promoted to tier {:?} ({:?})", bead_address(bead), tier, kind);
    }
    fn queue_full(&self, bead: &Bead) {
        debug!("bead@{:?}: queue full, cools down", bead_address(bead));
    }
    fn compiled(&self, bead: &Bead, tier: u8, ticks: Option<u64>) {
        match ticks {
            Some(ticks) => debug!("bead@{:?}: compiled at tier {:?} in {:?} ticks", bead_address(bead), tier, ticks),
            None => debug!("bead@{:?}: compiled at tier {:?}", bead_address(bead), tier),
        }
    }
    fn compile_failed(&self, bead: &Bead, tier: u8) {
        warn!("bead@{:?}: compile at tier {:?} failed", bead_address(bead), tier);
    }
    fn deoptimized(&self, bead: &Bead, decision: DeoptDecision) {
        debug!("bead@{:?}: bailout, {:?}", bead_address(bead), decision);
    }
    fn invalidated(&self, bead: &Bead) {
        debug!("bead@{:?}: invalidated", bead_address(bead));
    }
    fn evicted(&self, bead: &Bead) {
        debug!("bead@{:?}: evicted", bead_address(bead));
    }
    fn released(&self, code: CodeHandle) {
        trace!("code {:?} released", code.get());
    }
    fn swapped(&self, bead: &Bead, tier: u8) {
        debug!("bead@{:?}: code swapped in at tier {:?}", bead_address(bead), tier);
    }
    fn blacklisted(&self, bead: &Bead) {
        debug!("bead@{:?}: blacklisted", bead_address(bead));
    }
    fn quiesced(&self, epoch: u32, released: usize) {
        trace!("quiesced: epoch {:?}, {:?} released", epoch, released);
    }
}

/// A bead's address, for log lines (a pointer: both `log` and `defmt`
/// format it in hex).
fn bead_address(bead: &Bead) -> *const Bead {
    core::ptr::from_ref(bead)
}

/// A snapshot of the broker's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stats {
    /// Jobs queued.
    pub promotions: u32,
    /// Promotions refused by a full queue.
    pub queue_full: u32,
    /// Compiles whose code was published.
    pub compiles: u32,
    /// Compiles that failed.
    pub failures: u32,
    /// Queue entries dropped because their bead moved on.
    pub stale_jobs: u32,
    /// Compiled results released unpublished because their bead moved on.
    pub stale_results: u32,
    /// Claimed jobs dropped without a result.
    pub abandoned: u32,
    /// Bailouts recorded.
    pub bailouts: u32,
    /// Beads invalidated.
    pub invalidations: u32,
    /// Code handles put in the retire ring.
    pub retired: u32,
    /// Code handles handed back to the compiler.
    pub released: u32,
    /// Jobs in the queue now.
    pub queue_depth: u32,
    /// Handles waiting in the retire ring now.
    pub retire_depth: u32,
    /// Sum of measured compile times, in clock ticks.
    pub compile_ticks: u64,
    /// Quiescence epoch.
    pub epoch: u32,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) promotions: Counter,
    pub(crate) queue_full: Counter,
    pub(crate) compiles: Counter,
    pub(crate) failures: Counter,
    pub(crate) stale_jobs: Counter,
    pub(crate) stale_results: Counter,
    pub(crate) abandoned: Counter,
    pub(crate) bailouts: Counter,
    pub(crate) invalidations: Counter,
    pub(crate) retired: Counter,
    pub(crate) released: Counter,
}

impl Counters {
    crate::sync::const_fn! {
        pub(crate) const fn new() -> Self {
            Self {
                promotions: Counter::new(),
                queue_full: Counter::new(),
                compiles: Counter::new(),
                failures: Counter::new(),
                stale_jobs: Counter::new(),
                stale_results: Counter::new(),
                abandoned: Counter::new(),
                bailouts: Counter::new(),
                invalidations: Counter::new(),
                retired: Counter::new(),
                released: Counter::new(),
            }
        }
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            promotions: self.promotions.get(),
            queue_full: self.queue_full.get(),
            compiles: self.compiles.get(),
            failures: self.failures.get(),
            stale_jobs: self.stale_jobs.get(),
            stale_results: self.stale_results.get(),
            abandoned: self.abandoned.get(),
            bailouts: self.bailouts.get(),
            invalidations: self.invalidations.get(),
            retired: self.retired.get(),
            released: self.released.get(),
            ..Stats::default()
        }
    }
}

/// A relaxed event counter (slow paths only).
#[derive(Default)]
pub(crate) struct Counter(AtomicU32);

impl Counter {
    crate::sync::const_fn! {
        pub(crate) const fn new() -> Self {
            Self(AtomicU32::new(0))
        }
    }

    pub(crate) fn add(&self, n: u32) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn bump(&self) {
        self.add(1);
    }

    pub(crate) fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}
