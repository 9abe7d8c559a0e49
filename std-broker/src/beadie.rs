//! `Beadie`: the orchestrator — a domain, its registered beads (the chain)
//! and its worker pool — with beadie's API.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use kiln_core::Stats;

use crate::OsrEntry;
use crate::bead::{Bead, CoreHandle, SwapResult};
use crate::chain::Chain;
use crate::code::{HostPanics, NativeCode};
use crate::domain::{Domain, DynDeopt, QUEUE, ThreadSlot};
use crate::policy::{HotnessPolicy, PolicyLadder, ThresholdPolicy};
use crate::promote;
use crate::work::{code_work, entry_work, osr_work, try_code_work};
use crate::worker::WorkerPool;

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
    /// Queue capacity, at most 1,024 (default 1,024; beadie's is 256). The
    /// queue holds the hottest jobs waiting for a worker, hottest first. A
    /// promotion that finds it full takes the place of the coldest queued
    /// job if it is more than twice as hot (that bead goes back to
    /// counting), or else goes back to counting itself; either bead asks
    /// again after 16 calls, and after each further refusal waits twice as
    /// long (up to its threshold). The default holds a whole warm-up storm
    /// of a thousand functions at no extra memory: the queue's room is
    /// reserved inside the `Beadie` whatever this is set to.
    pub queue_capacity: usize,
    /// How long dropping the `Beadie` waits for a running compile (default 2 s).
    pub shutdown_timeout: Duration,
}

impl Default for BeadieConfig {
    fn default() -> Self {
        Self { workers: 1, queue_capacity: QUEUE, shutdown_timeout: Duration::from_secs(2) }
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
/// to its worker pool (beadie's background broker thread), and publishes
/// their code.
#[derive(Debug)]
pub struct Beadie<P: HotnessPolicy = ThresholdPolicy> {
    chain: Arc<Chain>,
    pool: WorkerPool,
    _policy: PhantomData<fn() -> P>,
}

impl Beadie {
    /// Promotes after 1,000 calls, on one background worker thread.
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
        let domain = Domain::new(ladder, deopt, config.queue_capacity.clamp(1, QUEUE), panics);
        Self {
            chain: Arc::new(Chain::in_domain(Arc::clone(&domain))),
            pool: WorkerPool::on(domain, config, name),
            _policy: PhantomData,
        }
    }

    /// Registers a function: `core` is the host's pointer to it (stored,
    /// never dereferenced); `on_invalidate` runs once when it is invalidated.
    pub fn register(&self, core: CoreHandle, on_invalidate: Option<Box<dyn Fn() + Send + Sync>>) -> Arc<Bead> {
        self.chain.push(core, on_invalidate)
    }

    /// [`register`](Self::register), naming the function: every log line
    /// about it starts with `name` (see [`logs`](crate::logs)). The name is
    /// kept in the domain's side table, off the bead and off every call
    /// path; [`Bead::name`] reads it back.
    ///
    /// ```
    /// let beadie = kiln_std::Beadie::new();
    /// let bead = beadie.register_named("fib", std::ptr::null_mut(), None);
    /// assert_eq!(bead.name().as_deref(), Some("fib"));
    /// ```
    pub fn register_named(
        &self,
        name: &str,
        core: CoreHandle,
        on_invalidate: Option<Box<dyn Fn() + Send + Sync>>,
    ) -> Arc<Bead> {
        self.chain.push_named(Some(name), core, on_invalidate)
    }

    /// On every call: the native entry if compiled, else `None` (interpret).
    /// Counts the call; the call that makes the function hot hands `compile`
    /// to a worker thread. `compile` is boxed only then — never on a call
    /// that does not win a promotion.
    #[inline(always)]
    pub fn on_invoke<F>(&self, bead: &Arc<Bead>, compile: F) -> Option<*mut ()>
    where
        F: FnOnce(&Arc<Bead>) -> *mut () + Send + 'static,
    {
        promote::on_invoke(bead, |_| entry_work(compile))
    }

    /// [`on_invoke`](Self::on_invoke) for compiles that also produce OSR entries.
    #[inline(always)]
    pub fn on_invoke_osr<F>(&self, bead: &Arc<Bead>, compile: F) -> Option<*mut ()>
    where
        F: FnOnce(&Arc<Bead>) -> OsrCompileResult + Send + 'static,
    {
        promote::on_invoke(bead, |_| osr_work(compile))
    }

    /// A loop back-edge probe at `site` inside a long-running interpreted
    /// call: the OSR entry for `site` if the installed code has one (one
    /// load when there is no table); otherwise counts the back-edge, and
    /// the probe that makes the loop hot hands `compile` to a worker (an
    /// OSR compile; back-edges weigh a tenth of a call for the policy).
    #[inline(always)]
    pub fn on_backedge<F>(&self, bead: &Arc<Bead>, site: u64, compile: F) -> Option<*mut ()>
    where
        F: FnOnce(&Arc<Bead>) -> OsrCompileResult + Send + 'static,
    {
        promote::on_backedge(bead, site, || osr_work(compile))
    }

    /// [`on_invoke`](Self::on_invoke) for compiles that return
    /// [`NativeCode`] (kiln-only): OSR entries and a release hook travel with
    /// the entry, so retired closure-compiled code is freed, not leaked.
    #[inline(always)]
    pub fn on_invoke_code<F>(&self, bead: &Arc<Bead>, compile: F) -> Option<*mut ()>
    where
        F: FnOnce(&Arc<Bead>) -> NativeCode + Send + 'static,
    {
        promote::on_invoke(bead, |_| code_work(compile))
    }

    /// [`on_backedge`](Self::on_backedge) for compiles that return
    /// [`NativeCode`] (kiln-only): the OSR compile's code carries its
    /// release hook.
    #[inline(always)]
    pub fn on_backedge_code<F>(&self, bead: &Arc<Bead>, site: u64, compile: F) -> Option<*mut ()>
    where
        F: FnOnce(&Arc<Bead>) -> NativeCode + Send + 'static,
    {
        promote::on_backedge(bead, site, || code_work(compile))
    }

    /// [`on_invoke_code`](Self::on_invoke_code) for compiles that may fail
    /// (kiln-only): an `Err` is a failed compile
    /// ([`CompileFailure::Factory`](crate::CompileFailure::Factory) with the
    /// error's message, in the failure's log line), handled by kiln's
    /// failure policy; the bead keeps the code it runs, or interprets.
    #[inline(always)]
    pub fn try_on_invoke_code<F, E>(&self, bead: &Arc<Bead>, compile: F) -> Option<*mut ()>
    where
        F: FnOnce(&Arc<Bead>) -> Result<NativeCode, E> + Send + 'static,
        E: std::fmt::Display,
    {
        promote::on_invoke(bead, |_| try_code_work(compile))
    }

    /// [`on_backedge_code`](Self::on_backedge_code) for compiles that may
    /// fail (see [`try_on_invoke_code`](Self::try_on_invoke_code)).
    #[inline(always)]
    pub fn try_on_backedge_code<F, E>(&self, bead: &Arc<Bead>, site: u64, compile: F) -> Option<*mut ()>
    where
        F: FnOnce(&Arc<Bead>) -> Result<NativeCode, E> + Send + 'static,
        E: std::fmt::Display,
    {
        promote::on_backedge(bead, site, || try_code_work(compile))
    }

    /// [`submit`](Self::submit) for compiles that return [`NativeCode`]
    /// (kiln-only).
    pub fn submit_code(
        &self,
        bead: &Arc<Bead>,
        compile: impl FnOnce(&Arc<Bead>) -> NativeCode + Send + 'static,
    ) -> SubmitResult {
        promote::submit(bead, code_work(compile))
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
        promote::submit(bead, entry_work(compile))
    }

    /// Queues an OSR-aware `compile` for `bead` now.
    pub fn submit_osr(
        &self,
        bead: &Arc<Bead>,
        compile: impl FnOnce(&Arc<Bead>) -> OsrCompileResult + Send + 'static,
    ) -> SubmitResult {
        promote::submit(bead, osr_work(compile))
    }

    /// Runs queued compiles on the calling thread until the queue is empty or
    /// `budget` is spent (kiln-core's pump, with kiln-std's closure
    /// compiler and panic isolation). Works beside the worker threads, or
    /// instead of them with `BeadieConfig { workers: 0, .. }`.
    pub fn pump(&self, budget: kiln_core::Budget<'_>) -> kiln_core::PumpReport {
        let domain = &self.chain.domain;
        let report = domain.broker.pump(&mut domain.compiler(), budget);
        crate::after_compile::run_deferred();
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
        self.chain.domain.panics.get()
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
    /// last round, the workers release retired code. Without registered
    /// threads or [`quiesce`](Self::quiesce), retired code is never handed
    /// back to its backend (kiln cannot prove it idle): it is parked until
    /// the `Beadie` drops.
    pub fn register_thread(&self) -> QuiescentThread {
        let domain = Arc::clone(&self.chain.domain);
        let slot = domain.register_thread();
        QuiescentThread { domain, slot }
    }
}

impl<P: HotnessPolicy> Drop for Beadie<P> {
    fn drop(&mut self) {
        // Stops the workers and cancels queued jobs (each job's handle drops
        // its compile work, unrun), waiting once, boundedly; the pool's own
        // drop then finds them waited for and returns at once.
        self.pool.shut_down();
        // Release the chain's references (one at a time, no recursion).
        self.chain.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cores(chain: &Chain) -> Vec<usize> {
        let mut cores = Vec::new();
        chain.walk(|bead| cores.push(bead.core_handle().addr()));
        cores
    }

    fn core(n: usize) -> CoreHandle {
        std::ptr::without_provenance_mut(n * 8)
    }

    #[test]
    fn the_chain_walks_in_registration_order_and_prunes_any_position() {
        let chain = Chain::new();
        let beads: Vec<_> = (1..=5).map(|n| chain.push(core(n), None)).collect();
        assert_eq!((chain.len(), cores(&chain)), (5, vec![8, 16, 24, 32, 40]));
        // First, middle and last: head, inner link and tail all move.
        for index in [0, 2, 4] {
            beads[index].invalidate();
        }
        chain.prune();
        assert_eq!((chain.len(), cores(&chain)), (2, vec![16, 32]));
        // The tail is right after a prune: a new bead goes last.
        chain.push(core(6), None);
        assert_eq!(cores(&chain), vec![16, 32, 48]);
        assert!(beads[4].next_in_chain().is_null(), "an unlinked bead links nowhere");
    }

    #[test]
    fn the_chain_holds_one_count_per_bead_and_gives_it_back() {
        let chain = Chain::new();
        let bead = chain.push(core(1), None);
        assert_eq!(Arc::strong_count(&bead), 2);
        chain.walk(|walked| assert_eq!(Arc::strong_count(walked), 3));
        bead.invalidate();
        chain.prune();
        assert_eq!((Arc::strong_count(&bead), chain.is_empty()), (1, true));
        let kept = chain.push(core(2), None);
        drop(chain);
        assert_eq!(Arc::strong_count(&kept), 1, "dropping the chain gave its count back");
    }

    #[test]
    fn dropping_a_long_chain_does_not_recurse() {
        let chain = Chain::new();
        for n in 0..if cfg!(miri) { 1_000 } else { 200_000 } {
            chain.push(core(n), None);
        }
        // Run on a small stack: a recursive drop of this chain would overflow it.
        std::thread::Builder::new().stack_size(64 * 1024).spawn(move || drop(chain)).unwrap().join().unwrap();
    }
}
