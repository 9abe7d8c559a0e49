//! The worker pool: a domain's worker threads, each of which polls the
//! domain's queue, pumps it when a job is there, and runs reclamation
//! steps. [`WorkerPool`] is the public face (the seed
//! calls it `Broker`: see `kiln_std::Broker`); [`WorkerThreads`] are the
//! threads themselves.
//!
//! # Who wakes a worker: a burst, never a lone promotion
//!
//! The call that crosses a threshold pushes the job, sets kiln-core's wake
//! flag and, alone, returns: no syscall, no unpark (see `domain::Waker`).
//! Waking a thread parked in the kernel costs the waker a futex syscall
//! and, in a VM, an inter-processor interrupt: 8–15 µs on the interpreter
//! thread on the busy VM of BENCHMARKS.md (what kiln-std paid before after
//! 200 ms of idleness), 22.8 µs p50 on the same VM when quiet, after 300 ms
//! of idleness (an `unpark` timed on its own). An
//! idle worker looks at the queue by itself — one Relaxed load of its
//! length, no lock — on the schedule in `backoff`: sleeps from 250 µs
//! doubling to 1 ms for the first second, to 20 ms until 10 s, to 100 ms
//! after.
//!
//! A burst is different (`sleepers`): when a push leaves 16 or more jobs
//! queued and a worker is asleep, the pushing call unparks one worker.
//! In a warm-up storm, where every bead's calls are interpreted until the
//! worker reaches its job, that one syscall, paid by one crossing call in
//! sixteen or more, is worth a poll's wait for a thousand beads.
//!
//! The trade-off, stated: a lone promotion never costs its caller a
//! wake-up, at any idle time, and waits for its worker up to ~1 ms within a
//! second of the last compile, ~20 ms within 10 s, ~100 ms after a longer
//! idle; a burst costs one of its callers one unpark and is picked up in
//! tens of microseconds; an idle process costs each worker's wake-ups (10
//! a second after 10 s; each a timer expiry, a load and back to sleep, plus
//! a reclamation step that finds nothing to do). A wake-up costs 20–35 µs
//! of CPU on the busy VM of BENCHMARKS.md whoever makes it, so polling
//! every 1 ms forever would cost ~2 % of a core, every 20 ms ~0.15 %, every
//! 100 ms ~0.03 %. Woken, a worker asks the scheduler for a short slice
//! (`thread_hints`) so that it gets a core among busy interpreter threads
//! within tens of microseconds rather than one of their 3 ms slices.
//!
//! Rejected: parking without a timeout after a long idle and letting a
//! later call of the interpreter thread pay the unpark for a lone
//! promotion. It would put the same 8–15 µs syscall on the interpreter
//! thread for every promotion after a pause, and a job queued by a bead
//! never called again would wait for the safety timeout anyway.
//!
//! The logger is host code: a worker's log calls are isolated like
//! kiln-std's event hooks (see `logger_panics`).
//!
//! Shutdown is bounded and waits once: the owner raises `stop`, cancels
//! queued jobs (they are not run, and each drops its compile work with its
//! handle), unparks the workers and waits at most `timeout` for them —
//! however many layers (`Beadie`, `WorkerPool`, adapters) drop around the
//! same workers, only the first drop waits. A worker stuck in a compile that never returns is
//! left behind, detached, and named in a warning; its bead stays Compiling
//! until that compile ends, which is consistent, and the result is then
//! published or released as usual.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln_core::{Budget, StdClock};

use crate::backoff::Backoff;
use crate::bead::Bead;
use crate::beadie::{BeadieConfig, OsrCompileResult, SubmitResult};
use crate::code::isolate_logger;
use crate::domain::Domain;
use crate::promote;
use crate::work::{entry_work, osr_work};

/// The seed's name for the worker pool ("background compilation worker
/// thread"): kiln-std's [`WorkerPool`]. Inside kiln, "broker" is kiln-core's
/// [`kiln_core::Broker`], which the pool's threads pump.
pub type Broker = WorkerPool;

/// The background compile worker(s) of a domain: what beadie calls its
/// broker thread. A [`Beadie`](crate::Beadie) owns one; the seed's
/// standalone `Broker` (an alias of this type) runs one for beads made by
/// [`Bead::new`].
#[derive(Debug)]
pub struct WorkerPool {
    domain: Arc<Domain>,
    threads: Mutex<WorkerThreads>,
    shutdown_timeout: Duration,
}

impl Default for WorkerPool {
    fn default() -> Self {
        Self::with_capacity(256)
    }
}

impl WorkerPool {
    /// One worker thread for detached beads (`Bead::new`), with a queue of
    /// `capacity`.
    pub fn with_capacity(capacity: usize) -> Self {
        let domain = Domain::detached();
        domain.broker.set_queue_limit(capacity);
        Self::on(domain, &BeadieConfig { queue_capacity: capacity, ..BeadieConfig::default() }, "broker")
    }

    /// Starts `config.workers` threads named `kiln-<name>-<i>` on `domain`.
    pub(crate) fn on(domain: Arc<Domain>, config: &BeadieConfig, name: &str) -> Self {
        let threads = WorkerThreads::start(&domain, config.workers, name);
        Self { domain, threads: Mutex::new(threads), shutdown_timeout: config.shutdown_timeout }
    }

    /// Queues `compile` for `bead` (which must not be queued already).
    pub fn submit(
        &self,
        bead: Arc<Bead>,
        compile: impl FnOnce(&Arc<Bead>) -> *mut () + Send + 'static,
    ) -> SubmitResult {
        promote::submit(&bead, entry_work(compile))
    }

    /// Queues an OSR-aware `compile` for `bead`.
    pub fn submit_osr(
        &self,
        bead: Arc<Bead>,
        compile: impl FnOnce(&Arc<Bead>) -> OsrCompileResult + Send + 'static,
    ) -> SubmitResult {
        promote::submit(&bead, osr_work(compile))
    }

    /// Worker threads.
    pub fn workers(&self) -> usize {
        self.threads.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Stops the workers, cancels queued jobs (their work is dropped unrun)
    /// and waits at most the shutdown timeout, once: a later call returns
    /// at once.
    pub(crate) fn shut_down(&mut self) {
        let threads = self.threads.get_mut().unwrap_or_else(|e| e.into_inner());
        threads.begin_shutdown(&self.domain);
        threads.wait(self.shutdown_timeout);
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        // Inside a `Beadie`, its drop already did this (and waited): this
        // returns at once then.
        self.shut_down();
    }
}
/// How often a worker runs a reclamation step.
const RECLAIM_EVERY: Duration = Duration::from_millis(1);

/// Names the workers still running, so shutdown can wait for them with a
/// timeout and name the ones it leaves behind.
#[derive(Debug, Default)]
struct Liveness {
    running: Mutex<Vec<String>>,
    changed: Condvar,
}

/// A pool's threads, with what shutdown needs to stop and wait for them.
#[derive(Debug)]
pub(crate) struct WorkerThreads {
    stop: Arc<AtomicBool>,
    liveness: Arc<Liveness>,
    handles: Vec<JoinHandle<()>>,
    /// `wait` ran: a second shutdown (an outer layer's drop after an inner
    /// one's) must not wait again.
    waited: bool,
}

impl WorkerThreads {
    /// Starts `count` workers named `kiln-<name>-<i>` on `domain`.
    pub(crate) fn start(domain: &Arc<Domain>, count: usize, name: &str) -> Self {
        Self::start_with(domain, count, name, Backoff::DEFAULT)
    }

    /// [`start`](Self::start) with an idle schedule of the caller's (tests
    /// compress it).
    pub(crate) fn start_with(domain: &Arc<Domain>, count: usize, name: &str, backoff: Backoff) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let liveness = Arc::new(Liveness::default());
        let names: Vec<String> = (0..count).map(|index| format!("kiln-{name}-{index}")).collect();
        *liveness.running.lock().unwrap_or_else(|e| e.into_inner()) = names.clone();
        let handles: Vec<JoinHandle<()>> = names
            .into_iter()
            .map(|thread_name| {
                let (domain, stop, liveness) = (Arc::clone(domain), Arc::clone(&stop), Arc::clone(&liveness));
                let own_name = thread_name.clone();
                std::thread::Builder::new()
                    .name(thread_name)
                    .spawn(move || {
                        run(&domain, &stop, &backoff);
                        drop(domain);
                        let mut running = liveness.running.lock().unwrap_or_else(|e| e.into_inner());
                        running.retain(|name| *name != own_name);
                        liveness.changed.notify_all();
                    })
                    .expect("spawning a kiln worker thread")
            })
            .collect();
        Self { stop, liveness, handles, waited: false }
    }

    /// Stops the workers: raises the stop flag, cancels queued jobs (they
    /// are not run) and unparks every worker. Does not wait; see
    /// [`wait`](Self::wait). Idempotent.
    pub(crate) fn begin_shutdown(&self, domain: &Domain) {
        // Release pairs with the Acquire loads of `stop` in `run`.
        self.stop.store(true, Ordering::Release);
        let cancelled = domain.broker.cancel_queued();
        if cancelled > 0 {
            isolate_logger(|| log::debug!(target: "kiln", "shutdown: cancelled {cancelled} queued jobs"));
        }
        for handle in &self.handles {
            handle.thread().unpark();
        }
    }

    /// Waits at most `timeout` for the workers to end, once: a later call
    /// returns at once. Workers still running then (stuck in a compile that
    /// never returns) are detached and named in a warning. Returns how many.
    pub(crate) fn wait(&mut self, timeout: Duration) -> usize {
        if std::mem::replace(&mut self.waited, true) {
            return self.liveness.running.lock().unwrap_or_else(|e| e.into_inner()).len();
        }
        let deadline = Instant::now() + timeout;
        let mut running = self.liveness.running.lock().unwrap_or_else(|e| e.into_inner());
        while !running.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let names = running.join(", ");
                isolate_logger(|| {
                    log::warn!(
                        target: "kiln",
                        "shutdown: worker(s) {names} still running a compile after {timeout:?}; detached"
                    )
                });
                break;
            }
            running = self.liveness.changed.wait_timeout(running, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        let stuck = running.len();
        drop(running);
        for handle in self.handles.drain(..) {
            if stuck == 0 {
                // Every worker left `run`; joining only reaps the thread.
                let _ = handle.join();
            }
            // Otherwise dropping the handle detaches the thread.
        }
        stuck
    }

    pub(crate) fn len(&self) -> usize {
        self.handles.len()
    }
}

fn run(domain: &Arc<Domain>, stop: &AtomicBool, backoff: &Backoff) {
    crate::thread_hints::apply_to_worker();
    let clock = StdClock::new();
    let mut compiler = domain.compiler_on_timed_pump();
    let mut idle_since = Instant::now();
    let mut reclaimed = Instant::now();
    let mut wanted = backoff.first_after(0);
    // Acquire (both loads) pairs with the Release store in `begin_shutdown`.
    while !stop.load(Ordering::Acquire) {
        // The lock-free look at the queue: a stale zero delays a job by one
        // poll at most. Work queued before this thread existed is seen here.
        if domain.broker.queue_len() > 0 {
            let report = domain.broker.pump(&mut compiler, Budget::unlimited().timed(&clock));
            crate::after_compile::run_deferred();
            if report.ran > 0 || report.dropped > 0 {
                let took = crate::logs::Micros::from_nanos(report.ticks);
                isolate_logger(|| {
                    log::trace!(
                        target: "kiln",
                        "pump: ran {} jobs ({} published, {} failed, {} stale, {} dropped) in {took}, {} left",
                        report.ran, report.published, report.failed, report.stale, report.dropped, report.remaining
                    )
                });
                idle_since = Instant::now();
                wanted = backoff.first_after(report.ran as usize);
            }
            if report.ran > 0 {
                domain.reclaim_step();
                reclaimed = Instant::now();
            }
        }
        if reclaimed.elapsed() >= RECLAIM_EVERY {
            domain.reclaim_step();
            reclaimed = Instant::now();
        }
        if stop.load(Ordering::Acquire) {
            break;
        }
        let sleep = backoff.capped(idle_since.elapsed(), wanted);
        wanted = sleep * 2;
        domain.broker.wake_hook().sleepers.sleep(sleep, || domain.broker.queue_len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Beadie, BeadieConfig, ThresholdPolicy};

    extern "C" fn native() -> i64 {
        1
    }

    /// Nobody wakes a worker (`Waker::wake` only counts): a worker idle for
    /// longer than its warm second must still find a new job by itself,
    /// within its cold poll (plus generous scheduling slack on a busy
    /// machine).
    #[test]
    fn a_long_idle_worker_finds_a_promotion_by_itself() {
        let beadie = Beadie::with_policy(ThresholdPolicy::new(1));
        let bead = beadie.register(std::ptr::null_mut(), None);
        std::thread::sleep(Backoff::DEFAULT.stay_warm + Backoff::DEFAULT.cold * 5);
        let crossed = Instant::now();
        assert_eq!(beadie.on_invoke(&bead, |_| native as extern "C" fn() -> i64 as *mut ()), None);
        while bead.compiled().is_none() {
            assert!(crossed.elapsed() < Duration::from_secs(2), "the idle worker never picked the job up");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(beadie.wakeups(), 1, "one coalesced wake-up, which woke nobody");
    }

    /// The schedule compressed about a thousandfold, so a test walks every
    /// phase (warm, cold, deep) many times in a second or two.
    const FAST: Backoff = Backoff {
        after_burst: Duration::from_micros(5),
        first: Duration::from_micros(10),
        warm: Duration::from_micros(100),
        stay_warm: Duration::from_millis(2),
        cold: Duration::from_millis(1),
        stay_cold: Duration::from_millis(5),
        deep: Duration::from_millis(3),
    };

    /// No promotion is lost whatever phase the idle workers are in: many
    /// cycles of quiet (a gap picked so the workers are in a first short
    /// sleep, warm, cold or deep) and crossings, lone or a burst that wakes
    /// a worker, each of which must be compiled. A lost wake-up (a worker
    /// that stops polling, or misses a job queued while it decided to
    /// sleep) hangs a bead and fails the test at its deadline, which is far
    /// above the deepest poll.
    #[test]
    fn no_promotion_is_lost_across_idle_and_crossing_cycles() {
        const GAPS_US: [u64; 8] = [0, 20, 80, 500, 1_500, 3_000, 7_000, 12_000];
        let beadie =
            Beadie::with_config(ThresholdPolicy::new(1), BeadieConfig { workers: 0, ..BeadieConfig::default() });
        let domain = Arc::clone(&beadie.register(std::ptr::null_mut(), None).domain);
        let mut workers = WorkerThreads::start_with(&domain, 2, "lost-wake-test", FAST);
        let mut promoted = 0;
        for cycle in 0..240 {
            std::thread::sleep(Duration::from_micros(GAPS_US[cycle % GAPS_US.len()]));
            // Mostly lone promotions (found by a poll); every fourth a
            // burst that wakes a sleeping worker (see `sleepers`).
            let size = [1, 2, 3, 2 * crate::sleepers::BURST][(cycle / GAPS_US.len()) % 4];
            let burst: Vec<Arc<Bead>> = (0..size).map(|_| beadie.register(std::ptr::null_mut(), None)).collect();
            for bead in &burst {
                // None, or already the entry: a polling worker may compile
                // it before the crossing call reads the bead again.
                let crossing = beadie.on_invoke(bead, |_| native as extern "C" fn() -> i64 as *mut ());
                assert!(crossing.is_none_or(|entry| entry == native as extern "C" fn() -> i64 as *mut ()));
            }
            let crossed = Instant::now();
            for bead in &burst {
                while bead.compiled().is_none() {
                    assert!(crossed.elapsed() < Duration::from_secs(10), "cycle {cycle}: a promotion was lost");
                    std::thread::yield_now();
                }
                promoted += 1;
            }
        }
        assert_eq!(beadie.stats().queue_depth, 0);
        assert_eq!(domain.ledger.counts().0, promoted);
        workers.begin_shutdown(&domain);
        assert_eq!(workers.wait(Duration::from_secs(10)), 0);
    }

    /// Sleeps that never end by themselves within a test: only a wake-up
    /// gets the worker to a job.
    const NEVER_POLLS: Backoff = Backoff {
        after_burst: Duration::from_secs(60),
        first: Duration::from_secs(60),
        warm: Duration::from_secs(60),
        stay_warm: Duration::from_secs(60),
        cold: Duration::from_secs(60),
        stay_cold: Duration::from_secs(60),
        deep: Duration::from_secs(60),
    };

    /// Queues `lone` promotions through `cross`, checks that none is run
    /// while the queue holds fewer than a burst, then one more, and checks
    /// that the burst woke the sleeping worker through kiln-std's push path.
    fn a_burst_wakes_the_worker_through(cross: impl Fn(&Beadie, &Arc<Bead>)) {
        let beadie =
            Beadie::with_config(ThresholdPolicy::new(1), BeadieConfig { workers: 0, ..BeadieConfig::default() });
        let domain = Arc::clone(&beadie.register(std::ptr::null_mut(), None).domain);
        let mut workers = WorkerThreads::start_with(&domain, 1, "burst-test", NEVER_POLLS);
        let deadline = Instant::now() + Duration::from_secs(10);
        while domain.broker.wake_hook().sleepers.asleep() == 0 {
            assert!(Instant::now() < deadline, "the worker never went to sleep");
            std::thread::sleep(Duration::from_millis(1));
        }
        let beads: Vec<Arc<Bead>> =
            (0..crate::sleepers::BURST).map(|_| beadie.register(std::ptr::null_mut(), None)).collect();
        for bead in &beads[1..] {
            cross(&beadie, bead);
        }
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(beadie.stats().queue_depth as usize, crate::sleepers::BURST - 1, "a lone promotion wakes nobody");
        assert_eq!(domain.broker.wake_hook().sleepers.asleep(), 1);
        cross(&beadie, &beads[0]);
        for bead in &beads {
            while bead.compiled().is_none() && bead.osr_entry(7).is_none() {
                assert!(Instant::now() < deadline, "the burst did not wake the worker");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        workers.begin_shutdown(&domain);
        assert_eq!(workers.wait(Duration::from_secs(10)), 0);
    }

    #[test]
    fn a_burst_of_crossing_calls_wakes_a_sleeping_worker() {
        a_burst_wakes_the_worker_through(|beadie, bead| {
            // None, or the entry: the burst's last crossing call may read the
            // bead again after the worker it woke compiled it.
            let entry = beadie.on_invoke(bead, |_| native as extern "C" fn() -> i64 as *mut ());
            assert!(entry.is_none_or(|entry| entry == native as extern "C" fn() -> i64 as *mut ()));
        });
    }

    #[test]
    fn a_burst_of_back_edges_wakes_a_sleeping_worker() {
        a_burst_wakes_the_worker_through(|beadie, bead| {
            let osr = |_: &Arc<Bead>| {
                let native = native as extern "C" fn() -> i64 as *mut ();
                OsrCompileResult { entry: native, osr: vec![kiln_core::OsrEntry { site: 7, code: native }] }
            };
            for _ in 0..100 {
                if bead.state() != crate::BeadState::Interpreted {
                    return;
                }
                let entry = beadie.on_backedge(bead, 7, osr);
                assert!(entry.is_none_or(|entry| entry == native as extern "C" fn() -> i64 as *mut ()));
            }
            panic!("100 back-edges did not queue an OSR compile");
        });
    }

    #[test]
    fn a_burst_of_host_submits_wakes_a_sleeping_worker() {
        a_burst_wakes_the_worker_through(|beadie, bead| {
            assert_eq!(beadie.submit(bead, |_| native as extern "C" fn() -> i64 as *mut ()), SubmitResult::Accepted);
        });
    }
}
