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
//! Retired code is freed only once no thread can run it. kiln-std learns
//! that in one of two ways:
//! - **managed**: threads that run kiln code register
//!   ([`Beadie::register_thread`](crate::Beadie::register_thread)) and report
//!   quiescent points; when every registered thread has reported since the
//!   last round, a worker calls kiln-core's `quiesce`. Or the host calls
//!   [`Beadie::quiesce`](crate::Beadie::quiesce) itself — then, as long as
//!   no thread registered, only the host does (workers never declare
//!   quiescence for a host that declares it). Code is released through its
//!   backend two rounds after retirement.
//! - **unmanaged** (nobody registered, nobody called `quiesce`: a plain
//!   beadie user): kiln-std cannot know when code stops running, so retired
//!   code is parked, never handed to its backend; kiln-std's own memory for
//!   it (the code object, its OSR table) is freed when the last bead of the
//!   domain is gone, and nothing can reach it any more.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::Thread;

use kiln_core::{BeadRef, CodeHandle, CompileRequest, Compiled, Compiler};

use crate::bead::BeadHandle;
use crate::code::{CodeObject, CompileFailure};
use crate::policy::PolicyLadder;

/// Jobs the queue can hold at most (`Beadie::with_policy_and_capacity` may
/// lower it). Inline in the broker, so kept moderate: debug builds copy the
/// broker a few times on the stack while constructing it.
pub(crate) const QUEUE: usize = 1024;
/// Retired code objects waiting for quiescence.
pub(crate) const RETIRE: usize = 1024;

pub(crate) type CoreBroker = kiln_core::Broker<BeadHandle, PolicyLadder, DynDeopt, Waker, LogEvents, QUEUE, RETIRE>;

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

/// Wakes the worker threads. Coalescing happens in kiln-core (at most one
/// `wake` per burst); here a wake costs a syscall only if a worker is in
/// deep sleep — recently active workers poll (see `worker`), so the call
/// that crosses a threshold usually just sets kiln-core's flag.
#[derive(Default)]
pub(crate) struct Waker {
    workers: OnceLock<Box<[Thread]>>,
    wakes: AtomicU64,
    deep_sleepers: AtomicUsize,
}

impl Waker {
    pub(crate) fn attach(&self, workers: Box<[Thread]>) {
        let _ = self.workers.set(workers);
    }

    pub(crate) fn wakes(&self) -> u64 {
        self.wakes.load(Ordering::Relaxed)
    }

    /// SeqCst pairs with the load in `wake`: either the waker sees the
    /// sleeper, or the sleeper's queue check (under the broker's lock) sees
    /// the job. A miss costs at most the deep sleep's timeout.
    pub(crate) fn enter_deep_sleep(&self) {
        self.deep_sleepers.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn leave_deep_sleep(&self) {
        self.deep_sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl kiln_core::Pump for Waker {
    fn wake(&self) {
        self.wakes.fetch_add(1, Ordering::Relaxed);
        // SeqCst pairs with `enter_deep_sleep`.
        if self.deep_sleepers.load(Ordering::SeqCst) > 0 {
            for worker in self.workers.get().into_iter().flatten() {
                worker.unpark();
            }
        }
    }
}

/// Logs every transition through `log` (target `kiln`) and counts failures.
///
/// The logger is host code: each hook runs it under `catch_unwind`, so a
/// panicking logger neither kills a worker nor unwinds into kiln-core (see
/// [`logger_panics`](crate::logger_panics)).
#[derive(Default)]
pub(crate) struct LogEvents;

/// Runs one log call, containing a panic of the logger.
fn logged(record: impl FnOnce()) {
    crate::code::isolate_logger(record);
}

impl kiln_core::Events for LogEvents {
    fn promoted(&self, bead: &kiln_core::Bead, tier: u8, kind: kiln_core::JobKind) {
        logged(
            || log::debug!(target: "kiln", "promote {:p} to tier {tier} ({kind:?}) at {} calls", bead, bead.invocation_count()),
        );
    }
    fn queue_full(&self, bead: &kiln_core::Bead) {
        logged(|| log::debug!(target: "kiln", "queue full: {:p} cools down", bead));
    }
    fn compiled(&self, bead: &kiln_core::Bead, tier: u8, ticks: Option<u64>) {
        let micros = ticks.map_or(0.0, |ns| ns as f64 / 1_000.0);
        logged(|| log::debug!(target: "kiln", "compiled {:p} at tier {tier} in {micros:.1} µs", bead));
    }
    fn compile_failed(&self, bead: &kiln_core::Bead, tier: u8) {
        logged(|| log::warn!(target: "kiln", "compile of {:p} at tier {tier} failed; now {:?}", bead, bead.state()));
    }
    fn deoptimized(&self, bead: &kiln_core::Bead, decision: kiln_core::DeoptDecision) {
        logged(|| log::debug!(target: "kiln", "deopt {:p}: {decision:?}", bead));
    }
    fn invalidated(&self, bead: &kiln_core::Bead) {
        logged(|| log::debug!(target: "kiln", "invalidated {:p}", bead));
    }
    fn released(&self, code: CodeHandle) {
        logged(|| log::trace!(target: "kiln", "released code {:#x}", code.get()));
    }
}

/// Counts code objects, so tests can check compiled = released + live.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    compiled: AtomicU64,
    released: AtomicU64,
}

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

/// One registered thread's quiescence report.
#[derive(Debug)]
pub(crate) struct ThreadSlot {
    seen_round: AtomicU64,
}

/// Managed-mode bookkeeping (see the module docs).
#[derive(Default)]
pub(crate) struct Reclaim {
    managed: AtomicBool,
    /// A thread registered at some point: workers may complete rounds.
    /// Without it, managed mode means the host calls `quiesce` itself, and
    /// workers must never declare quiescence on its behalf.
    threads_registered: AtomicBool,
    round: AtomicU64,
    threads: Mutex<Vec<Weak<ThreadSlot>>>,
}

pub(crate) struct Domain {
    pub(crate) broker: CoreBroker,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) reclaim: Reclaim,
    /// Unmanaged-mode retired code: never given to its backend.
    limbo: Mutex<Vec<CodeHandle>>,
}

impl Domain {
    pub(crate) fn new(policy: PolicyLadder, deopt: DynDeopt, queue_capacity: usize) -> Arc<Self> {
        let domain = Arc::new(Domain {
            broker: kiln_core::Broker::new(policy, deopt, Waker::default(), LogEvents),
            ledger: Arc::default(),
            reclaim: Reclaim::default(),
            limbo: Mutex::default(),
        });
        domain.broker.set_queue_limit(queue_capacity);
        domain
    }

    /// The domain of beads created without a `Beadie` (`Bead::new`).
    pub(crate) fn detached() -> Arc<Self> {
        static DETACHED: OnceLock<Arc<Domain>> = OnceLock::new();
        Arc::clone(DETACHED.get_or_init(|| {
            let ladder = PolicyLadder::single(Box::new(crate::ThresholdPolicy::default()));
            Domain::new(ladder, DynDeopt(Box::new(kiln_core::ExponentialBackoffPolicy::default())), QUEUE)
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

    /// Keeps `code` out of reach until the domain drops (a retirement the
    /// ring could not take).
    pub(crate) fn park(&self, code: CodeHandle) {
        self.limbo.lock().unwrap_or_else(|e| e.into_inner()).push(code);
    }

    /// Code objects parked until the domain drops.
    pub(crate) fn parked(&self) -> usize {
        self.limbo.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub(crate) fn compiler(self: &Arc<Self>) -> StdCompiler {
        StdCompiler { ledger: Arc::clone(&self.ledger) }
    }

    pub(crate) fn is_managed(&self) -> bool {
        self.reclaim.managed.load(Ordering::Acquire)
    }

    /// The host declared quiescence: switch to managed mode and release.
    pub(crate) fn quiesce_now(self: &Arc<Self>) -> usize {
        self.reclaim.managed.store(true, Ordering::Release);
        self.broker.quiesce(&mut self.compiler())
    }

    pub(crate) fn register_thread(&self) -> Arc<ThreadSlot> {
        self.reclaim.managed.store(true, Ordering::Release);
        self.reclaim.threads_registered.store(true, Ordering::Release);
        let slot = Arc::new(ThreadSlot { seen_round: AtomicU64::new(self.reclaim.round.load(Ordering::Acquire)) });
        let mut threads = self.reclaim.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads.retain(|thread| thread.strong_count() > 0);
        threads.push(Arc::downgrade(&slot));
        slot
    }

    pub(crate) fn report_quiescent(&self, slot: &ThreadSlot) {
        // Release pairs with the Acquire in `reclaim_step`: the worker sees
        // that this thread let go of every kiln pointer it loaded before.
        slot.seen_round.store(self.reclaim.round.load(Ordering::Acquire), Ordering::Release);
    }

    /// One reclamation step, run by workers after pumping: in managed mode,
    /// quiesce if every registered thread reported since the last round; in
    /// unmanaged mode, move retired code to limbo.
    pub(crate) fn reclaim_step(self: &Arc<Self>) {
        if !self.is_managed() {
            let mut parking = Parking { limbo: &self.limbo };
            self.broker.quiesce(&mut parking);
            return;
        }
        if !self.reclaim.threads_registered.load(Ordering::Acquire) {
            return; // the host declares quiescence itself (`Beadie::quiesce`)
        }
        let round = self.reclaim.round.load(Ordering::Acquire);
        let everyone_reported = {
            let threads = self.reclaim.threads.lock().unwrap_or_else(|e| e.into_inner());
            threads.iter().filter_map(Weak::upgrade).all(|slot| slot.seen_round.load(Ordering::Acquire) >= round)
        };
        if everyone_reported
            && self.reclaim.round.compare_exchange(round, round + 1, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            self.broker.quiesce(&mut self.compiler());
        }
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        // Nothing can reach these objects any more (every bead is gone), but
        // threads may still run their code: free kiln's memory, not the
        // backend's (no release hooks).
        let mut parking = Parking { limbo: &self.limbo };
        // SAFETY: (1) the domain is dropping, so no thread holds a bead of it
        // and none can obtain code or tables from it any more; the handles go
        // to limbo below, which frees only kiln's memory, never the code.
        unsafe { self.broker.release_retired_now(&mut parking) };
        let limbo = std::mem::take(self.limbo.get_mut().unwrap_or_else(|e| e.into_inner()));
        for handle in limbo {
            // Each limbo handle came from `publishable`, handed over once by
            // kiln-core's release; the code itself is not freed.
            // SAFETY: `discard` (1) released once; (2) every bead is gone: no OSR lookup.
            unsafe { CodeObject::discard(handle) };
        }
    }
}

/// kiln-std's compiler: runs the closure attached to the bead at promotion.
pub(crate) struct StdCompiler {
    ledger: Arc<Ledger>,
}

impl Compiler<BeadHandle> for StdCompiler {
    type Error = CompileFailure;

    fn compile(&mut self, request: &CompileRequest<'_, BeadHandle>) -> Result<Compiled, CompileFailure> {
        let bead = request.bead.arc();
        let work = bead.take_work().ok_or(CompileFailure::NoWork)?;
        let started = std::time::Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(bead, request.tier)));
        let built = match outcome {
            Ok(result) => result?,
            Err(panic) => {
                // Counted and logged with the other host-callback panics.
                bead.panics.caught("compile", &*panic);
                logged(|| log::debug!(target: "kiln", "compile of {:p} failed: it panicked", request.bead.bead()));
                return Err(CompileFailure::Panicked(crate::code::panic_message(&*panic)));
            }
        };
        logged(|| log::trace!(target: "kiln", "compile closure took {:?}", started.elapsed()));
        CodeObject::publishable(built, Arc::clone(&self.ledger))
    }

    fn release(&mut self, code: CodeHandle) {
        // kiln-core releases each accepted handle once, two quiesce rounds
        // after retirement; this compiler quiesces only in managed mode.
        // SAFETY: `release` (1) once; (2) managed rounds mean no thread runs it.
        unsafe { CodeObject::release(code) };
    }
}

/// Unmanaged mode's "compiler" for quiesce: parks handles instead of freeing.
struct Parking<'a> {
    limbo: &'a Mutex<Vec<CodeHandle>>,
}

impl Compiler<BeadHandle> for Parking<'_> {
    type Error = CompileFailure;

    fn compile(&mut self, _request: &CompileRequest<'_, BeadHandle>) -> Result<Compiled, CompileFailure> {
        Err(CompileFailure::NoWork)
    }

    fn release(&mut self, code: CodeHandle) {
        self.limbo.lock().unwrap_or_else(|e| e.into_inner()).push(code);
    }
}
