//! `Beadie`: the orchestrator — a domain, its registered beads (the chain)
//! and its worker threads — with beadie's API.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_core::{JobKind, KilnError, Stats};

use crate::OsrEntry;
use crate::bead::{Bead, BeadHandle, CompileWork, CoreHandle, SwapResult};
use crate::code::{HostPanics, NativeCode};
use crate::domain::{Domain, DynDeopt, QUEUE, ThreadSlot};
use crate::policy::{HotnessPolicy, PolicyLadder, ThresholdPolicy};
use crate::worker::Workers;

/// An OSR-aware compile's output: the normal entry plus one entry per hot
/// loop header.
#[derive(Debug)]
pub struct OsrCompileResult {
    /// The function's normal entry.
    pub entry: *mut (),
    /// OSR entries (any order; sorted by kiln).
    pub osr: Vec<OsrEntry>,
}

// SAFETY: addresses only; kiln never dereferences them.
unsafe impl Send for OsrCompileResult {}

/// The outcome of `submit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitResult {
    /// Queued.
    Accepted,
    /// A job for this bead is already queued or running (or it is
    /// blacklisted or invalidated).
    AlreadyQueued,
    /// The queue is full; the bead cools down before it tries again.
    QueueFull,
    /// The broker was shut down.
    BrokerShutDown,
}

impl SubmitResult {
    /// Whether the job was queued.
    pub fn is_accepted(self) -> bool {
        self == Self::Accepted
    }
}

/// Settings beyond beadie's constructors.
#[derive(Debug, Clone)]
pub struct BeadieConfig {
    /// Worker threads pumping the queue (default 1: beadie's broker thread).
    /// 0 starts none: the host runs compiles itself with [`Beadie::pump`].
    pub workers: usize,
    /// Queue capacity, at most 1,024 (default 256, as beadie).
    pub queue_capacity: usize,
    /// How long dropping the `Beadie` waits for a running compile (default 2 s).
    pub shutdown_timeout: Duration,
}

impl Default for BeadieConfig {
    fn default() -> Self {
        Self { workers: 1, queue_capacity: 256, shutdown_timeout: Duration::from_secs(2) }
    }
}

/// A list of registered beads, pruned of invalidated ones on demand.
/// Dropping it never recurses, however many beads it holds.
#[derive(Debug)]
pub struct Chain {
    domain: Arc<Domain>,
    beads: Mutex<Vec<Arc<Bead>>>,
    panics: Arc<HostPanics>,
}

impl Default for Chain {
    fn default() -> Self {
        Self::new()
    }
}

impl Chain {
    /// An empty chain of detached beads.
    pub fn new() -> Self {
        Self::in_domain(Domain::detached(), Arc::default())
    }

    fn in_domain(domain: Arc<Domain>, panics: Arc<HostPanics>) -> Self {
        Self { domain, beads: Mutex::default(), panics }
    }

    fn beads(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Bead>>> {
        self.beads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new bead.
    pub fn push(&self, core: CoreHandle, on_invalidate: Option<Box<dyn Fn() + Send + Sync>>) -> Arc<Bead> {
        let bead = Bead::in_domain(Arc::clone(&self.domain), Arc::clone(&self.panics), core, on_invalidate);
        self.beads().push(Arc::clone(&bead));
        bead
    }

    /// Drops invalidated beads from the chain.
    pub fn prune(&self) {
        self.beads().retain(|bead| bead.is_valid());
    }

    /// Calls `f` on every bead (on a snapshot, so `f` may use the chain).
    pub fn walk(&self, mut f: impl FnMut(&Arc<Bead>)) {
        let snapshot: Vec<Arc<Bead>> = self.beads().clone();
        snapshot.iter().for_each(&mut f);
    }

    /// Registered beads.
    pub fn len(&self) -> usize {
        self.beads().len()
    }

    /// Whether no bead is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The background compile worker(s) of a domain. `Beadie` owns one; it is
/// public for beadie compatibility.
#[derive(Debug)]
pub struct Broker {
    domain: Arc<Domain>,
    workers: Mutex<Workers>,
    shutdown_timeout: Duration,
    /// Beads submitted through this broker, so its drop can drop the work
    /// of jobs it cancels (a `Beadie` finds them in its chain instead).
    submitted: Mutex<Submitted>,
}

/// Weak links to submitted beads, pruned of dead ones as the list doubles.
#[derive(Debug, Default)]
struct Submitted {
    beads: Vec<std::sync::Weak<Bead>>,
    prune_at: usize,
}

impl Submitted {
    fn remember(&mut self, bead: &Arc<Bead>) {
        if self.beads.len() >= self.prune_at {
            self.beads.retain(|bead| bead.strong_count() > 0);
            self.prune_at = (self.beads.len() * 2).max(64);
        }
        self.beads.push(Arc::downgrade(bead));
    }
}

/// Drops the compile work still attached to `beads` (jobs cancelled at
/// shutdown). A Compiling bead's worker took, or is about to take, its
/// own work: it is left alone.
fn drop_cancelled_work<'a>(beads: impl IntoIterator<Item = &'a Arc<Bead>>) {
    for bead in beads {
        if bead.core.state() != kiln_core::BeadState::Compiling {
            drop(bead.take_work());
        }
    }
}

impl Default for Broker {
    fn default() -> Self {
        Self::with_capacity(256)
    }
}

impl Broker {
    /// A broker thread for detached beads (`Bead::new`), with a queue of
    /// `capacity`.
    pub fn with_capacity(capacity: usize) -> Self {
        let domain = Domain::detached();
        domain.broker.set_queue_limit(capacity);
        Self::on(domain, &BeadieConfig { queue_capacity: capacity, ..BeadieConfig::default() }, "broker")
    }

    fn on(domain: Arc<Domain>, config: &BeadieConfig, name: &str) -> Self {
        let workers = Workers::start(&domain, config.workers, name);
        Self {
            domain,
            workers: Mutex::new(workers),
            shutdown_timeout: config.shutdown_timeout,
            submitted: Mutex::default(),
        }
    }

    /// Queues `compile` for `bead` (which must not be queued already).
    pub fn submit(
        &self,
        bead: Arc<Bead>,
        compile: impl FnOnce(&Arc<Bead>) -> *mut () + Send + 'static,
    ) -> SubmitResult {
        self.submit_remembered(&bead, entry_work(compile))
    }

    /// Queues an OSR-aware `compile` for `bead`.
    pub fn submit_osr(
        &self,
        bead: Arc<Bead>,
        compile: impl FnOnce(&Arc<Bead>) -> OsrCompileResult + Send + 'static,
    ) -> SubmitResult {
        self.submit_remembered(&bead, osr_work(compile))
    }

    fn submit_remembered(&self, bead: &Arc<Bead>, work: CompileWork) -> SubmitResult {
        let result = submit_work(bead, work);
        if result.is_accepted() {
            self.submitted.lock().unwrap_or_else(|e| e.into_inner()).remember(bead);
        }
        result
    }

    /// Worker threads.
    pub fn workers(&self) -> usize {
        self.workers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Inside a `Beadie`, its drop already did all this (and waited):
        // `wait` returns at once then.
        let workers = self.workers.get_mut().unwrap_or_else(|e| e.into_inner());
        workers.begin_shutdown(&self.domain);
        let submitted = std::mem::take(&mut self.submitted.get_mut().unwrap_or_else(|e| e.into_inner()).beads);
        let beads: Vec<Arc<Bead>> = submitted.iter().filter_map(std::sync::Weak::upgrade).collect();
        drop_cancelled_work(&beads);
        workers.wait(self.shutdown_timeout);
    }
}

/// Wraps a seed compile closure as compile work.
pub(crate) fn entry_work(compile: impl FnOnce(&Arc<Bead>) -> *mut () + Send + 'static) -> CompileWork {
    Box::new(move |bead, _tier| Ok(bead.built(compile(bead), Vec::new(), None)))
}

/// Wraps a seed OSR compile closure as compile work.
pub(crate) fn osr_work(compile: impl FnOnce(&Arc<Bead>) -> OsrCompileResult + Send + 'static) -> CompileWork {
    Box::new(move |bead, _tier| {
        let OsrCompileResult { entry, osr } = compile(bead);
        Ok(bead.built(entry, osr, None))
    })
}

/// Wraps a kiln-only compile closure (code with a release hook) as work.
pub(crate) fn code_work(compile: impl FnOnce(&Arc<Bead>) -> NativeCode + Send + 'static) -> CompileWork {
    Box::new(move |bead, _tier| {
        let (entry, osr, release) = compile(bead).into_parts();
        // A null entry is refused later (`NullEntry`) without running the hook.
        Ok(bead.built(entry, osr, release.filter(|_| !entry.is_null())))
    })
}

/// The slow half of a back-edge probe: core's counting path, attaching the
/// work only if this probe wins the promotion.
#[inline]
pub(crate) fn backedge_with(bead: &Arc<Bead>, site: u64, work: impl FnOnce() -> CompileWork) -> Option<*mut ()> {
    let handle = BeadHandle::from_arc(bead);
    bead.domain.broker.on_backedge_with(handle, site, |_, _| bead.set_work(work())).map(NonNull::as_ptr)
}

/// Submits `work` for `bead` now, at tier 0 (or the next tier up).
pub(crate) fn submit_work(bead: &Arc<Bead>, work: CompileWork) -> SubmitResult {
    let tier = bead.core.tier().map_or(0, |tier| tier.saturating_add(1));
    submit_work_at(bead, tier, work)
}

/// Submits `work` for `bead` at `tier`. A bead whose installed code is
/// already final queues nothing: that is `AlreadyQueued` ("or beyond").
pub(crate) fn submit_work_at(bead: &Arc<Bead>, tier: u8, work: CompileWork) -> SubmitResult {
    let handle = BeadHandle::from_arc(bead);
    let mut work = Some(work);
    let result = bead.domain.broker.submit_with(handle, tier, JobKind::Invoke, |_, _| {
        if let Some(work) = work.take() {
            bead.set_work(work);
        }
    });
    match result {
        Ok(()) if work.is_none() => SubmitResult::Accepted,
        Err(KilnError::QueueFull) => SubmitResult::QueueFull,
        _ => SubmitResult::AlreadyQueued,
    }
}

/// A registered thread's quiescence reporter (see
/// [`Beadie::register_thread`]). Dropping it unregisters the thread.
#[derive(Debug)]
pub struct QuiescentThread {
    domain: Arc<Domain>,
    slot: crate::sync::Arc<ThreadSlot>,
}

impl QuiescentThread {
    /// Declares that this thread holds no code, entry or OSR pointer it got
    /// from kiln right now (between interpreter calls, at a frame end).
    #[inline]
    pub fn quiescent(&self) {
        self.domain.report_quiescent(&self.slot);
    }
}

impl Drop for QuiescentThread {
    fn drop(&mut self) {
        self.domain.unregister_thread(&self.slot);
    }
}

impl std::fmt::Debug for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domain").field("broker", &self.broker).finish_non_exhaustive()
    }
}

/// The orchestrator: registers beads, counts calls, promotes hot functions
/// to a background broker thread, and publishes their code.
#[derive(Debug)]
pub struct Beadie<P: HotnessPolicy = ThresholdPolicy> {
    chain: Arc<Chain>,
    broker: Broker,
    _policy: PhantomData<fn() -> P>,
}

impl Beadie {
    /// Promotes after 1,000 calls, on one background broker thread.
    pub fn new() -> Self {
        Self::with_policy(ThresholdPolicy::default())
    }
}

impl Default for Beadie {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: HotnessPolicy> Beadie<P> {
    /// A `Beadie` promoting by `policy`.
    pub fn with_policy(policy: P) -> Self {
        Self::with_config(policy, BeadieConfig::default())
    }

    /// A `Beadie` promoting by `policy` with a queue of `capacity` jobs.
    pub fn with_policy_and_capacity(policy: P, capacity: usize) -> Self {
        Self::with_config(policy, BeadieConfig { queue_capacity: capacity, ..BeadieConfig::default() })
    }

    /// A `Beadie` with kiln's settings (worker count, shutdown timeout).
    pub fn with_config(policy: P, config: BeadieConfig) -> Self {
        Self::with_ladder(PolicyLadder::single(Box::new(policy)), &config, "broker")
    }

    pub(crate) fn with_ladder(ladder: PolicyLadder, config: &BeadieConfig, name: &str) -> Self {
        let deopt = DynDeopt(Box::new(kiln_core::ExponentialBackoffPolicy::default()));
        // One counter for every host callback of this `Beadie`: its
        // policies', its beads' and its code's.
        let panics = Arc::<HostPanics>::default();
        let ladder = ladder.counting_panics_in(Arc::clone(&panics));
        let domain = Domain::new(ladder, deopt, config.queue_capacity.clamp(1, QUEUE));
        Self {
            chain: Arc::new(Chain::in_domain(Arc::clone(&domain), panics)),
            broker: Broker::on(domain, config, name),
            _policy: PhantomData,
        }
    }

    /// Registers a function: `core` is the host's pointer to it (stored,
    /// never dereferenced); `on_invalidate` runs once when it is invalidated.
    pub fn register(&self, core: CoreHandle, on_invalidate: Option<Box<dyn Fn() + Send + Sync>>) -> Arc<Bead> {
        self.chain.push(core, on_invalidate)
    }

    /// On every call: the native entry if compiled, else `None` (interpret).
    /// Counts the call; the call that makes the function hot hands `compile`
    /// to the broker thread. `compile` is boxed only then — never on a call
    /// that does not win a promotion.
    #[inline(always)]
    pub fn on_invoke<F>(&self, bead: &Arc<Bead>, compile: F) -> Option<*mut ()>
    where
        F: FnOnce(&Arc<Bead>) -> *mut () + Send + 'static,
    {
        if let Some(entry) = bead.core.fast_entry() {
            return Some(entry.as_ptr());
        }
        outlined(|| invoke_with(bead, || entry_work(compile)))
    }

    /// [`on_invoke`](Self::on_invoke) for compiles that also produce OSR entries.
    #[inline(always)]
    pub fn on_invoke_osr<F>(&self, bead: &Arc<Bead>, compile: F) -> Option<*mut ()>
    where
        F: FnOnce(&Arc<Bead>) -> OsrCompileResult + Send + 'static,
    {
        if let Some(entry) = bead.core.fast_entry() {
            return Some(entry.as_ptr());
        }
        outlined(|| invoke_with(bead, || osr_work(compile)))
    }

    /// A loop back-edge probe at `site` inside a long-running interpreted
    /// call: the OSR entry for `site` if the installed code has one (one
    /// load when there is no table); otherwise counts the back-edge, and
    /// the probe that makes the loop hot hands `compile` to the broker (an
    /// OSR compile; back-edges weigh a tenth of a call for the policy).
    #[inline(always)]
    pub fn on_backedge<F>(&self, bead: &Arc<Bead>, site: u64, compile: F) -> Option<*mut ()>
    where
        F: FnOnce(&Arc<Bead>) -> OsrCompileResult + Send + 'static,
    {
        if let Some(entry) = bead.core.osr_entry(site) {
            return Some(entry.as_ptr());
        }
        outlined(|| backedge_with(bead, site, || osr_work(compile)))
    }

    /// [`on_invoke`](Self::on_invoke) for compiles that return
    /// [`NativeCode`] (kiln-only): OSR entries and a release hook travel with
    /// the entry, so retired closure-compiled code is freed, not leaked.
    #[inline(always)]
    pub fn on_invoke_code<F>(&self, bead: &Arc<Bead>, compile: F) -> Option<*mut ()>
    where
        F: FnOnce(&Arc<Bead>) -> NativeCode + Send + 'static,
    {
        if let Some(entry) = bead.core.fast_entry() {
            return Some(entry.as_ptr());
        }
        outlined(|| invoke_with(bead, || code_work(compile)))
    }

    /// [`on_backedge`](Self::on_backedge) for compiles that return
    /// [`NativeCode`] (kiln-only): the OSR compile's code carries its
    /// release hook.
    #[inline(always)]
    pub fn on_backedge_code<F>(&self, bead: &Arc<Bead>, site: u64, compile: F) -> Option<*mut ()>
    where
        F: FnOnce(&Arc<Bead>) -> NativeCode + Send + 'static,
    {
        if let Some(entry) = bead.core.osr_entry(site) {
            return Some(entry.as_ptr());
        }
        outlined(|| backedge_with(bead, site, || code_work(compile)))
    }

    /// [`submit`](Self::submit) for compiles that return [`NativeCode`]
    /// (kiln-only).
    pub fn submit_code(
        &self,
        bead: &Arc<Bead>,
        compile: impl FnOnce(&Arc<Bead>) -> NativeCode + Send + 'static,
    ) -> SubmitResult {
        submit_work(bead, code_work(compile))
    }

    /// Drops invalidated beads from the chain.
    pub fn prune(&self) {
        self.chain.prune();
    }

    /// Calls `f` on every registered bead.
    pub fn walk(&self, f: impl FnMut(&Arc<Bead>)) {
        self.chain.walk(f);
    }

    /// Registered beads.
    pub fn chain_len(&self) -> usize {
        self.chain.len()
    }

    /// The chain of registered beads.
    pub fn chain(&self) -> &Arc<Chain> {
        &self.chain
    }

    /// Reloads every bead (hot reload); returns how many will recompile.
    pub fn reload_all(&self) -> usize {
        self.reload_matching(|_| true)
    }

    /// Reloads the beads `predicate` selects; returns how many will recompile.
    pub fn reload_matching(&self, predicate: impl Fn(&Arc<Bead>) -> bool) -> usize {
        let mut count = 0;
        self.chain.walk(|bead| {
            if predicate(bead) && bead.reload().will_recompile() {
                count += 1;
            }
        });
        count
    }

    /// Swaps in `new_code_for(bead)` for every compiled bead it returns a
    /// non-null pointer for.
    pub fn swap_matching(&self, new_code_for: impl Fn(&Arc<Bead>) -> *mut ()) -> Vec<SwapResult> {
        let mut results = Vec::new();
        self.chain.walk(|bead| {
            let code = new_code_for(bead);
            if !code.is_null() {
                results.extend(bead.swap_compiled(code));
            }
        });
        results
    }

    /// Queues `compile` for `bead` now, whatever its count.
    pub fn submit(
        &self,
        bead: &Arc<Bead>,
        compile: impl FnOnce(&Arc<Bead>) -> *mut () + Send + 'static,
    ) -> SubmitResult {
        submit_work(bead, entry_work(compile))
    }

    /// Queues an OSR-aware `compile` for `bead` now.
    pub fn submit_osr(
        &self,
        bead: &Arc<Bead>,
        compile: impl FnOnce(&Arc<Bead>) -> OsrCompileResult + Send + 'static,
    ) -> SubmitResult {
        submit_work(bead, osr_work(compile))
    }

    /// Runs queued compiles on the calling thread until the queue is empty or
    /// `budget` is spent (kiln-core's pump, with kiln-std's closure
    /// compiler and panic isolation). Works beside the worker threads, or
    /// instead of them with `BeadieConfig { workers: 0, .. }`.
    pub fn pump(&self, budget: kiln_core::Budget<'_>) -> kiln_core::PumpReport {
        let domain = &self.chain.domain;
        let report = domain.broker.pump(&mut domain.compiler(), budget);
        domain.reclaim_step();
        report
    }

    /// Panics caught in host callbacks so far: compile closures, backend
    /// methods (`JitBackend::compile`, `compile_with_osr`, `release`),
    /// release hooks and `on_invalidate` callbacks of this `Beadie`'s beads,
    /// and its `HotnessPolicy` (a panicking policy is asked again 1,000
    /// calls later).
    /// Each was logged (`log::error!`, target `kiln`) and contained: a
    /// compile that panicked is a failed compile, a release hook that
    /// panicked counts its code as released (the backend may leak it), an
    /// `on_invalidate` that panicked leaves the bead invalidated. A worker
    /// never dies of one and no panic unwinds into the caller of
    /// `quiesce`, `invalidate` or `on_invoke`.
    pub fn host_panics(&self) -> u64 {
        self.chain.panics.get()
    }

    /// kiln's counters (promotions, compiles, failures, queue depth, ...).
    pub fn stats(&self) -> Stats {
        self.chain.domain.broker.stats()
    }

    /// Wake-ups sent to the worker threads so far (coalesced: at most one
    /// per burst of promotions while the workers are busy or asleep).
    pub fn wakeups(&self) -> u64 {
        self.chain.domain.broker.wake_hook().wakes()
    }

    /// Code objects compiled and released so far (compiled − released =
    /// live or waiting for quiescence).
    pub fn code_counts(&self) -> (u64, u64) {
        self.chain.domain.ledger.counts()
    }

    /// Retired code objects parked until this `Beadie`'s domain drops:
    /// retired while no quiescence was declared (unmanaged mode), or when
    /// the retire ring was full. compiled = released + installed + waiting
    /// in the retire ring + parked.
    pub fn parked_code(&self) -> usize {
        self.chain.domain.parked()
    }

    /// Declares that no thread holds code, entry or OSR pointers from this
    /// `Beadie` obtained before the previous `quiesce` (a frame end, say).
    /// Code retired two quiesces ago is released through its backend.
    pub fn quiesce(&self) -> usize {
        self.chain.domain.quiesce_now()
    }

    /// Registers the calling thread for automatic reclamation: once every
    /// registered thread reported [`QuiescentThread::quiescent`] since the
    /// last round, the workers release retired code (see `domain`'s docs).
    pub fn register_thread(&self) -> QuiescentThread {
        let domain = Arc::clone(&self.chain.domain);
        let slot = domain.register_thread();
        QuiescentThread { domain, slot }
    }
}

/// Runs the not-compiled half of an `on_invoke` out of line, so the inlined
/// compiled path carries none of its register saves or closure set-up.
#[inline(never)]
pub(crate) fn outlined<R>(slow: impl FnOnce() -> R) -> R {
    slow()
}

/// The slow half of `on_invoke`: core's counting path, boxing the work only
/// if this call wins the promotion.
#[inline]
pub(crate) fn invoke_with(bead: &Arc<Bead>, work: impl FnOnce() -> CompileWork) -> Option<*mut ()> {
    let handle = BeadHandle::from_arc(bead);
    bead.domain.broker.on_invoke_with(handle, |_, _| bead.set_work(work())).map(NonNull::as_ptr)
}

impl<P: HotnessPolicy> Drop for Beadie<P> {
    fn drop(&mut self) {
        // One bounded wait for the whole stack: the workers are stopped and
        // waited for here, and the inner `Broker`'s drop finds them waited
        // for and returns at once.
        let workers = self.broker.workers.get_mut().unwrap_or_else(|e| e.into_inner());
        workers.begin_shutdown(&self.broker.domain);
        // Cancelled jobs leave their compile work attached to the bead (it
        // is taken only when a compile starts); drop it now, so closures and
        // backend definitions are released with the jobs.
        let beads = std::mem::take(&mut *self.chain.beads());
        drop_cancelled_work(&beads);
        workers.wait(self.broker.shutdown_timeout);
        // Release the chain's references without recursion (a Vec drop).
        drop(beads);
    }
}
