//! The shared state behind a `Beadie` and its beads: the kiln-core broker,
//! the wake-up hook for the worker threads, the code ledger and the
//! reclamation mode.
//!
//! Beads hold an `Arc<Domain>` so that `bead.invalidate()`, `swap_compiled`
//! and friends work on the bead alone, as in beadie. The domain's queue
//! holds beads too; `Beadie`'s drop empties it, which breaks that cycle.
//!
//! # Reclamation
//!
//! Retired code is freed only once no thread can run it: see `reclaim` (the
//! registry and limbo) on top of kiln-core's `reclaim` (the rules). Modes:
//! unmanaged (nobody declares quiescence: code is parked, never handed to
//! its backend), host (`Beadie::quiesce`), registered threads
//! (`Beadie::register_thread`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use kiln_core::{CodeHandle, CompileRequest, Compiled, Compiler};

use crate::reclaim::Reclaimer;
pub(crate) use crate::reclaim::ThreadSlot;

use crate::code::{CompileFailure, HostPanics};
use crate::code_object::{self, Books, ReleaseCode};
use crate::extras::ExtrasTable;
use crate::job::JobHandle;
use crate::policy::PolicyLadder;
use crate::sink::Sinks;
use crate::sleepers::Sleepers;

/// Jobs the queue can hold at most (`Beadie::with_policy_and_capacity` may
/// lower it). Inline in the broker, so kept moderate: debug builds copy the
/// broker a few times on the stack while constructing it.
pub(crate) const QUEUE: usize = 1024;
/// Retired code objects waiting for quiescence.
pub(crate) const RETIRE: usize = 1024;

pub(crate) type CoreBroker = kiln_core::Broker<JobHandle, PolicyLadder, DynDeopt, Waker, Sinks, QUEUE, RETIRE>;

/// The broker-level deopt policy (compile failures), type-erased.
pub(crate) struct DynDeopt(pub(crate) Box<dyn kiln_core::DeoptPolicy + Send + Sync>);

impl kiln_core::DeoptPolicy for DynDeopt {
    fn on_bailout(&self, bailout: &kiln_core::Bailout) -> kiln_core::DeoptDecision {
        self.0.on_bailout(bailout)
    }
    fn blacklist_decay(&self) -> Option<core::num::NonZeroU32> {
        self.0.blacklist_decay()
    }
}

/// kiln-std's wake hook. The first job of a burst (kiln-core's coalesced
/// `wake`) is only counted: kiln-std's workers poll the queue by
/// themselves, so a lone promotion's caller never pays a syscall or an
/// unpark (see `worker`). A push that leaves a burst queued wakes one
/// sleeping worker (see `sleepers`).
#[derive(Default)]
pub(crate) struct Waker {
    wakes: AtomicU64,
    /// The domain's workers asleep between polls.
    pub(crate) sleepers: Sleepers,
}

impl Waker {
    pub(crate) fn wakes(&self) -> u64 {
        // Relaxed: a statistic; it orders nothing.
        self.wakes.load(Ordering::Relaxed)
    }
}

impl kiln_core::WakeHook for Waker {
    fn wake(&self) {
        // Relaxed: a statistic; it orders nothing. The job this wake-up
        // announces was pushed under the broker's lock before this call;
        // a polling worker sees it through the queue length.
        self.wakes.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    fn pushed(&self, queued: usize) {
        self.sleepers.wake_for_burst(queued);
    }
}

/// Counts code objects, so tests can check compiled = released + live.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    compiled: AtomicU64,
    released: AtomicU64,
}

/// Relaxed throughout: the counts are statistics that order no other data
/// (a test reads them after the threads that counted were joined or
/// quiesced).
impl Ledger {
    pub(crate) fn compiled(&self) {
        self.compiled.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn released(&self) {
        self.released.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.compiled.load(Ordering::Relaxed), self.released.load(Ordering::Relaxed))
    }
}

pub(crate) struct Domain {
    pub(crate) broker: CoreBroker,
    pub(crate) ledger: Arc<Ledger>,
    /// Registered threads and parked code (see `reclaim`).
    reclaimer: Reclaimer,
    /// Where panics of host callbacks are counted (the `Beadie`'s counter),
    /// here rather than on each bead.
    pub(crate) panics: Arc<HostPanics>,
    /// The beads' rarely used parts (see `extras`).
    pub(crate) extras: Arc<ExtrasTable>,
    /// The backend whose code needs no block (see `code_object`).
    backend: OnceLock<Arc<dyn ReleaseCode>>,
}

impl Domain {
    pub(crate) fn new(
        policy: PolicyLadder,
        deopt: DynDeopt,
        queue_capacity: usize,
        panics: Arc<HostPanics>,
    ) -> Arc<Self> {
        let extras = Arc::<ExtrasTable>::default();
        // The sinks read the domain's gauges (queue depth, live code) through
        // a weak link: the domain owns the broker that owns them.
        let domain = Arc::new_cyclic(|domain| Domain {
            broker: kiln_core::Broker::new(
                policy,
                deopt,
                Waker::default(),
                Sinks::new(Arc::clone(&extras), domain.clone()),
            ),
            ledger: Arc::default(),
            reclaimer: Reclaimer::default(),
            panics,
            extras,
            backend: OnceLock::new(),
        });
        domain.broker.set_queue_limit(queue_capacity);
        domain
    }

    /// The domain of beads created without a `Beadie` (`Bead::new`).
    pub(crate) fn detached() -> Arc<Self> {
        static DETACHED: OnceLock<Arc<Domain>> = OnceLock::new();
        Arc::clone(DETACHED.get_or_init(|| {
            let ladder = PolicyLadder::single(Box::new(crate::ThresholdPolicy::default()));
            let deopt = DynDeopt(Box::new(kiln_core::ExponentialBackoffPolicy::default()));
            Domain::new(ladder, deopt, QUEUE, HostPanics::detached())
        }))
    }

    /// Runs `operation`; if the retire ring was full, frees what can be
    /// freed (one reclamation step) and runs it once more.
    pub(crate) fn retry_if_ring_full<T>(
        self: &Arc<Self>,
        operation: impl Fn() -> Result<T, kiln_core::KilnError>,
    ) -> Result<T, kiln_core::KilnError> {
        match operation() {
            Err(kiln_core::KilnError::RetireFull) => {
                self.reclaim_step();
                operation()
            }
            result => result,
        }
    }

    /// Keeps `code` (retired, possibly still running) out of reach: a
    /// retirement the ring could not take. Released two advances later in a
    /// managed mode, kept until the domain drops otherwise.
    pub(crate) fn park(&self, code: CodeHandle) {
        self.reclaimer.park(&self.broker, code);
    }

    /// Code objects parked (see [`park`](Self::park) and `reclaim`).
    pub(crate) fn parked(&self) -> usize {
        self.reclaimer.parked()
    }

    /// The compiler for a pump whose budget may have no clock: it times
    /// each compile itself, for the `compiled` event.
    pub(crate) fn compiler(self: &Arc<Self>) -> StdCompiler {
        StdCompiler { domain: Arc::clone(self), times_itself: true }
    }

    /// The compiler for a pump whose budget is timed by a nanosecond clock
    /// (a worker's): kiln-core's ticks time each compile, so the compiler
    /// does not time it again (two clock reads and a thread-local note, a
    /// tenth of a worker's own work per job).
    pub(crate) fn compiler_on_timed_pump(self: &Arc<Self>) -> StdCompiler {
        StdCompiler { domain: Arc::clone(self), times_itself: false }
    }

    /// What publishing and releasing this domain's code need.
    pub(crate) fn books(&self) -> Books<'_> {
        Books { ledger: &self.ledger, panics: &self.panics, backend: &self.backend }
    }

    /// Frees a code object kiln-core (or the limbo) released.
    fn release_code(&self, code: CodeHandle) {
        // SAFETY: `release` (1) kiln-core and the limbo hand each accepted
        // handle of this domain over once; (2) only after two certified
        // advances past its retirement.
        unsafe { code_object::release(code, &self.books()) };
    }

    /// The host declared quiescence for every thread.
    pub(crate) fn quiesce_now(&self) -> usize {
        self.reclaimer.quiesce(&self.broker, &mut |code| self.release_code(code))
    }

    pub(crate) fn register_thread(&self) -> crate::sync::Arc<ThreadSlot> {
        self.reclaimer.register(&self.broker)
    }

    pub(crate) fn unregister_thread(&self, slot: &ThreadSlot) {
        self.reclaimer.unregister(slot);
    }

    pub(crate) fn report_quiescent(&self, slot: &ThreadSlot) {
        self.reclaimer.report(&self.broker, slot);
    }

    /// One reclamation step (workers after pumping, host pumps, a full
    /// retire ring): see `Reclaimer::step`.
    pub(crate) fn reclaim_step(&self) {
        self.reclaimer.step(&self.broker, &mut |code| self.release_code(code));
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        // Nothing can reach these objects any more (every bead is gone), but
        // threads may still run their code: free kiln's memory, not the
        // backend's (no release hooks).
        let mut parked = Vec::new();
        // SAFETY: (1) the domain is dropping, so no thread holds a bead of it
        // and none can obtain code or tables from it any more; the handles are
        // discarded below, which frees only kiln's memory, never the code.
        unsafe { self.broker.release_retired_now(|code| parked.push(code)) };
        parked.extend(self.reclaimer.take_parked());
        let mut backend_owns_code = false;
        for handle in parked {
            // Each handle came from `publishable`, handed over once by
            // kiln-core or the limbo; the code itself is not freed.
            // SAFETY: `discard` (1) released once; (2) every bead is gone: no OSR lookup.
            backend_owns_code |= unsafe { code_object::discard(handle, &self.ledger) };
        }
        if backend_owns_code {
            // Dropping the backend may free code a thread still runs.
            std::mem::forget(self.backend.take());
        }
    }
}

/// kiln-std's compiler: runs the compile work the job carries.
pub(crate) struct StdCompiler {
    domain: Arc<Domain>,
    times_itself: bool,
}

impl StdCompiler {
    /// Runs the job's compile work under `catch_unwind` and boxes its code.
    fn compile_work(&mut self, request: &CompileRequest<'_, JobHandle>) -> Result<Compiled, CompileFailure> {
        let bead = request.bead.bead_arc();
        // Every queued handle carries its work (see `job`); one without it
        // would be a kiln bug, failed like any compile that made no code.
        #[allow(deprecated)]
        let work = request.bead.take_work().ok_or(CompileFailure::NoWork)?;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(bead, request.tier)));
        let built = match outcome {
            Ok(result) => result?,
            Err(panic) => {
                // Counted and logged with the other host-callback panics.
                bead.domain.panics.caught("compile", &*panic);
                return Err(CompileFailure::Panicked(crate::code::panic_message(&*panic)));
            }
        };
        code_object::publishable(built, &self.domain.books())
    }
}

impl Compiler<JobHandle> for StdCompiler {
    type Error = CompileFailure;

    fn compile(&mut self, request: &CompileRequest<'_, JobHandle>) -> Result<Compiled, CompileFailure> {
        // The failure's reason goes into the one log line kiln-core's
        // `compile_failed` event writes, on this thread, right after; a
        // reason left by a failed compile whose job went stale (no event)
        // is dropped here.
        crate::logs::take_failure();
        crate::logs::take_compile_nanos();
        let started = self.times_itself.then(std::time::Instant::now);
        let result = self.compile_work(request).inspect_err(crate::logs::note_failure);
        if let Some(started) = started {
            crate::logs::note_compile_time(started.elapsed());
        }
        result
    }

    fn release(&mut self, code: CodeHandle) {
        // kiln-core releases each accepted handle once, two quiesce rounds
        // after retirement; this compiler quiesces only in managed mode.
        // SAFETY: `release` (1) once; (2) managed rounds mean no thread runs it.
        unsafe { code_object::release(code, &self.domain.books()) };
    }
}
