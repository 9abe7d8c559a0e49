//! kiln-core's `WakeHook` on a job system: a wake-up spawns a pump task.
//!
//! Design note. The pump never runs a job on the waking thread (a wake-up
//! comes from an interpreter's call and must not call into the broker); it
//! only spawns. Coalescing needs one rule to be lossless: a wake-up beyond
//! the cap leaves `requested` set, and the task that ends next spawns a
//! successor for it. Both sides use SeqCst (the store of `requested` then
//! the increment of `in_flight` in `wake`; the decrement then the load of
//! `requested` as a task ends), so either the ending task sees the request
//! or the wake-up sees the free slot. Tasks reach the broker through a
//! type-erased body bound at `attach`, so the pump's type does not name the
//! broker's (which names the pump's, as its wake hook). The user-facing
//! description is on [`JobSystemPump`].

use core::fmt;
use core::panic::AssertUnwindSafe;
use core::time::Duration;
use std::boxed::Box;
use std::panic::catch_unwind;
use std::time::Instant;

use kiln_core::{
    Budget, Clock, Compiler, DynBroker, Handled, Job, JobOutcome, JobRunner, PumpStop, StdClock, WakeHook, pump_jobs,
};

use crate::job_system::JobSystem;
use crate::pump_config::PumpConfig;
use crate::pump_outcome::{AttachError, PumpStats, StopTimeout};
use crate::sync::{Arc, AtomicBool, AtomicUsize, Condvar, Mutex, OnceLock, Ordering, Weak, lock};

/// A relaxed event counter (statistics only: orders nothing).
#[derive(Debug, Default)]
struct Counter(AtomicUsize);

impl Counter {
    fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// The scheduling state shared by the pump handle and its tasks.
#[derive(Debug, Default)]
struct Control {
    max_in_flight: usize,
    jobs_per_task: u32,
    stop_timeout: Duration,
    in_flight: AtomicUsize,
    requested: AtomicBool,
    stopping: AtomicBool,
    idle_lock: Mutex<()>,
    idle: Condvar,
    wakes: Counter,
    spawned: Counter,
    coalesced: Counter,
    refused: Counter,
    peak_in_flight: AtomicUsize,
    ran: Counter,
    published: Counter,
    failed: Counter,
    panicked: Counter,
    stale: Counter,
    retire_full: Counter,
    host_panics: Counter,
}

impl Control {
    /// Takes a task slot if fewer than `max_in_flight` are taken.
    fn try_acquire(&self) -> bool {
        // SeqCst pairs with the SeqCst store of `requested` before it (in
        // `wake`) and with the decrement + `requested` load in `Slot::drop`.
        let taken = self
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < self.max_in_flight).then_some(n + 1));
        if let Ok(before) = taken {
            self.peak_in_flight.fetch_max(before + 1, Ordering::Relaxed);
        }
        taken.is_ok()
    }

    /// Runs kiln's job loop for one task: until the queue is empty, the
    /// task's share of jobs is done, or stopping began.
    fn drain<H, C: Compiler<H>>(&self, broker: &dyn DynBroker<H>, compiler: &mut C, clock: &dyn Clock) {
        let budget = Budget::jobs(self.jobs_per_task);
        let report = pump_jobs(broker, budget, &mut TaskRunner { control: self, compiler, clock });
        match report.stop {
            PumpStop::JobLimit if report.remaining > 0 => {
                // Work is left: ask for a successor (served in `Slot::drop`).
                // SeqCst pairs with the load there, as in `wake`.
                self.requested.store(true, Ordering::SeqCst);
            }
            PumpStop::RetireFull => {
                self.retire_full.bump();
                debug!("kiln-host: pump task stops, retire ring full (quiesce, then wake)");
            }
            _ => {}
        }
    }
}

/// A pump task's [`JobRunner`]: compiles under `catch_unwind`, times with
/// the pump's clock, counts into the pump's statistics as each job ends.
struct TaskRunner<'t, C> {
    control: &'t Control,
    compiler: &'t mut C,
    clock: &'t dyn Clock,
}

impl<'b, H, C: Compiler<H>> JobRunner<'b, H> for TaskRunner<'_, C> {
    fn wants_more(&mut self) -> bool {
        // Relaxed: a hint; `stop` waits for the task either way.
        !self.control.stopping.load(Ordering::Relaxed)
    }

    fn run(&mut self, job: Job<'b, H>) -> Handled {
        let (control, compiler) = (self.control, &mut *self.compiler);
        control.ran.bump();
        let started = self.clock.now();
        let result = catch_unwind(AssertUnwindSafe(|| compiler.compile(&job.request())));
        let ticks = self.clock.now().saturating_sub(started);
        let outcome = match result {
            // `finish` may hand a stale or refused result to the
            // compiler's `release`: host code, which must not unwind
            // into the job system (rayon aborts on an escaped panic).
            // The broker's own transition happens before it.
            Ok(result) => match catch_unwind(AssertUnwindSafe(|| job.finish(compiler, result, Some(ticks)))) {
                Ok(outcome) => {
                    match outcome {
                        JobOutcome::Published => control.published.bump(),
                        JobOutcome::Failed => control.failed.bump(),
                        JobOutcome::Stale => control.stale.bump(),
                    }
                    outcome
                }
                Err(_panic) => {
                    warn!("kiln-host: the compiler's release panicked; caught");
                    control.host_panics.bump();
                    // Only a stale or refused result is released in `finish`.
                    JobOutcome::Stale
                }
            },
            Err(_panic) => {
                warn!("kiln-host: compile panicked; counted as a failed compile");
                job.fail();
                control.failed.bump();
                control.panicked.bump();
                JobOutcome::Failed
            }
        };
        Handled::Ran(outcome)
    }
}

/// A task's body, bound to a broker and a compiler by `attach`.
type Body = Box<dyn Fn(&Control) + Send + Sync>;

struct Shared<J> {
    jobs: J,
    control: Control,
    body: OnceLock<Body>,
}

impl<J: JobSystem> Shared<J> {
    fn wake(self: &Arc<Self>) {
        let control = &self.control;
        control.wakes.bump();
        // SeqCst pairs with the decrement + load in `Slot::drop`: either the
        // task ending sees this request, or `try_acquire` below sees its
        // freed slot.
        control.requested.store(true, Ordering::SeqCst);
        self.kick(true);
    }

    /// Spawns a task if allowed and a slot is free.
    fn kick(self: &Arc<Self>, from_wake: bool) {
        let control = &self.control;
        // SeqCst pairs with the store in `begin_stop`.
        if control.stopping.load(Ordering::SeqCst) {
            if from_wake {
                control.refused.bump();
            }
            return;
        }
        if self.body.get().is_none() {
            // Not attached yet: `attach` serves the request.
            return;
        }
        if !control.try_acquire() {
            if from_wake {
                control.coalesced.bump();
            }
            return;
        }
        control.spawned.bump();
        // The slot travels with the task: if the job system drops the task
        // without running it (or its `spawn` panics), the slot is freed.
        let slot = Slot { shared: Arc::clone(self), started: false };
        let spawned = catch_unwind(AssertUnwindSafe(|| {
            self.jobs.spawn(move || {
                let mut slot = slot;
                slot.started = true;
                slot.shared.task();
            })
        }));
        if spawned.is_err() {
            // Reached from `WakeHook::wake`, i.e. from an interpreter's call into
            // the broker: the panic must stop here.
            warn!("kiln-host: JobSystem::spawn panicked; caught, no task spawned");
            control.host_panics.bump();
        }
    }

    fn task(self: &Arc<Self>) {
        // This task serves every request made so far. SeqCst pairs with the
        // store in `wake`.
        self.control.requested.store(false, Ordering::SeqCst);
        if let Some(body) = self.body.get() {
            // Everything host-facing inside is caught already; this is the
            // last line (a compiler's `clone`, say) before the job system.
            if catch_unwind(AssertUnwindSafe(|| body(&self.control))).is_err() {
                warn!("kiln-host: a pump task panicked outside a compile; caught");
                self.control.host_panics.bump();
            }
        }
    }
}

/// A task's slot: taken in `kick`, released when the task ends (even by
/// unwinding) or when the job system drops it unrun.
struct Slot<J: JobSystem> {
    shared: Arc<Shared<J>>,
    /// The task ran: only a task that ran may spawn a successor (a task
    /// dropped unrun, e.g. by a `spawn` that panics, would otherwise retry
    /// the same `spawn` from inside it).
    started: bool,
}

impl<J: JobSystem> Drop for Slot<J> {
    fn drop(&mut self) {
        let shared = &self.shared;
        let control = &shared.control;
        // SeqCst: the decrement, then the load of `requested`, pair with the
        // store of `requested`, then the increment, in `wake` (see there).
        let left = control.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
        if self.started && control.requested.load(Ordering::SeqCst) {
            shared.kick(false);
        }
        if left == 0 {
            // Under the lock, so `stop` cannot miss it between its check and its wait.
            let _guard = lock(&control.idle_lock);
            control.idle.notify_all();
        }
    }
}

/// kiln-core's [`WakeHook`] on a [`JobSystem`]: a wake-up spawns a pump task.
///
/// ```text
///  interpreter thread                JobSystemPump                 job system worker
///  promotion ─► Broker ─► wake() ─► requested = true
///  (kiln-core coalesces:            in_flight < max? ─no─► coalesced (counted)
///   one wake until a claim)             │ yes: in_flight += 1
///                                       └─ spawn ───────────────► task:
///                                                                  requested = false
///                                                                  claim → compile → publish
///                                                                  (≤ jobs_per_task, until empty
///                                                                   or stop)
///                                                                  in_flight -= 1
///                                                                  requested? → spawn again
/// ```
///
/// **Coalescing.** kiln-core already calls `wake` at most once until a
/// pumper claims; this adapter adds a cap on tasks in flight
/// ([`PumpConfig::max_in_flight`]). A wake-up beyond the cap spawns
/// nothing: the task that ends next sees it and spawns a successor, so a
/// wake-up is never lost. [`stats`](Self::stats) counts wake-ups, spawns
/// and coalesced wake-ups.
///
/// **Tasks** drain up to [`PumpConfig::jobs_per_task`] jobs and end, handing
/// the worker back to the engine between batches (a successor is spawned if
/// work is left). Each compile is timed with [`StdClock`] (nanoseconds) for
/// `Events::compiled` and runs under `catch_unwind`: a panicking compile is a
/// failed one (the deopt policy decides), never a dead worker.
///
/// **The broker** must outlive every task: [`attach`](Self::attach) takes a
/// `&'static` broker (a `static`, or leaked), [`attach_arc`](Self::attach_arc)
/// an `Arc` (tasks hold a `Weak`, so the broker → pump → task cycle does not
/// keep it alive). The broker holds the pump as its wake hook, so the pump is
/// built first and attached once the broker exists; wake-ups before that are
/// remembered and served at attach.
///
/// **The compiler** is cloned into each task (see
/// [`SharedCompiler`](crate::SharedCompiler) for compilers that must be
/// shared). Results are published by kiln-core's generation-checked install
/// in the task; the host only ever sees complete code.
///
/// **Stopping** ([`stop`](Self::stop)): no task is spawned after it
/// begins, running tasks end after their current job, and it waits at most
/// [`PumpConfig::stop_timeout`] for them, calling [`JobSystem::help`]
/// meanwhile. Jobs still queued stay queued (`Broker::cancel_queued` drops
/// them).
///
/// **Retire ring full.** A task that meets `ClaimError::RetireFull` ends
/// (counted in [`PumpStats::retire_full`]); after `Broker::quiesce`, call
/// `wake()` on the pump to resume.
///
/// Cloning gives another handle to the same pump.
pub struct JobSystemPump<J: JobSystem> {
    shared: Arc<Shared<J>>,
}

impl<J: JobSystem> Clone for JobSystemPump<J> {
    fn clone(&self) -> Self {
        Self { shared: Arc::clone(&self.shared) }
    }
}

impl<J: JobSystem> fmt::Debug for JobSystemPump<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobSystemPump")
            .field("attached", &self.is_attached())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<J: JobSystem> JobSystemPump<J> {
    /// A pump spawning its tasks on `jobs`. It runs nothing until
    /// [`attach`](Self::attach)ed to a broker.
    pub fn new(jobs: J, config: PumpConfig) -> Self {
        let control = Control {
            max_in_flight: config.max_in_flight.max(1),
            jobs_per_task: config.jobs_per_task.max(1),
            stop_timeout: config.stop_timeout,
            ..Control::default()
        };
        Self { shared: Arc::new(Shared { jobs, control, body: OnceLock::new() }) }
    }

    /// Serves `broker` (which holds this pump, or a clone, as its wake hook),
    /// compiling with a clone of `compiler` in each task. Wake-ups that came
    /// before are served now.
    pub fn attach<H, B, C>(&self, broker: &'static B, compiler: C) -> Result<(), AttachError>
    where
        H: 'static,
        B: DynBroker<H> + Sync + 'static,
        C: Compiler<H> + Clone + Send + Sync + 'static,
    {
        let clock = StdClock::new();
        self.bind(Box::new(move |control: &Control| {
            let mut compiler = compiler.clone();
            control.drain(broker, &mut compiler, &clock);
        }))
    }

    /// [`attach`](Self::attach) for a broker in an `Arc`. Tasks hold a
    /// `Weak`, so the broker is freed when the host drops its last `Arc`;
    /// tasks that start after that do nothing.
    pub fn attach_arc<H, B, C>(&self, broker: &Arc<B>, compiler: C) -> Result<(), AttachError>
    where
        H: 'static,
        B: DynBroker<H> + Send + Sync + 'static,
        C: Compiler<H> + Clone + Send + Sync + 'static,
    {
        let broker: Weak<B> = Arc::downgrade(broker);
        let clock = StdClock::new();
        self.bind(Box::new(move |control: &Control| {
            if let Some(broker) = broker.upgrade() {
                let mut compiler = compiler.clone();
                control.drain(&*broker, &mut compiler, &clock);
            }
        }))
    }

    fn bind(&self, body: Body) -> Result<(), AttachError> {
        self.shared.body.set(body).map_err(|_| AttachError::AlreadyAttached)?;
        // SeqCst pairs with the store in `wake`.
        if self.shared.control.requested.load(Ordering::SeqCst) {
            self.shared.kick(false);
        }
        Ok(())
    }

    /// Whether [`attach`](Self::attach) was called.
    pub fn is_attached(&self) -> bool {
        self.shared.body.get().is_some()
    }

    /// The job system tasks are spawned on.
    pub fn job_system(&self) -> &J {
        &self.shared.jobs
    }

    /// Pump tasks in flight now.
    pub fn in_flight(&self) -> usize {
        self.shared.control.in_flight.load(Ordering::SeqCst)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> PumpStats {
        let control = &self.shared.control;
        PumpStats {
            wakes: control.wakes.get(),
            spawned: control.spawned.get(),
            coalesced: control.coalesced.get(),
            refused: control.refused.get(),
            in_flight: self.in_flight(),
            peak_in_flight: control.peak_in_flight.load(Ordering::Relaxed),
            ran: control.ran.get(),
            published: control.published.get(),
            failed: control.failed.get(),
            panicked: control.panicked.get(),
            stale: control.stale.get(),
            retire_full: control.retire_full.get(),
            host_panics: control.host_panics.get(),
        }
    }

    /// Stops spawning tasks and asks running ones to end after their current
    /// job, without waiting (for hosts that must keep ticking their job
    /// system meanwhile; see [`is_stopped`](Self::is_stopped)). Permanent.
    pub fn begin_stop(&self) {
        // SeqCst pairs with the load in `kick`.
        self.shared.control.stopping.store(true, Ordering::SeqCst);
    }

    /// Stopping began and no task is in flight.
    pub fn is_stopped(&self) -> bool {
        self.shared.control.stopping.load(Ordering::SeqCst) && self.in_flight() == 0
    }

    /// [`begin_stop`](Self::begin_stop), then waits up to the configured
    /// timeout for tasks in flight to end, calling [`JobSystem::help`]
    /// between checks. Queued jobs stay queued.
    pub fn stop(&self) -> Result<(), StopTimeout> {
        self.begin_stop();
        let control = &self.shared.control;
        let deadline = Instant::now() + control.stop_timeout;
        loop {
            {
                let guard = lock(&control.idle_lock);
                if self.in_flight() == 0 {
                    return Ok(());
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                let slice = (deadline - now).min(Duration::from_millis(1));
                let _ = control.idle.wait_timeout(guard, slice);
            }
            if catch_unwind(AssertUnwindSafe(|| self.shared.jobs.help())).is_err() {
                warn!("kiln-host: JobSystem::help panicked; caught");
                control.host_panics.bump();
            }
        }
        let in_flight = self.in_flight();
        if in_flight == 0 { Ok(()) } else { Err(StopTimeout { in_flight }) }
    }
}

impl<J: JobSystem> WakeHook for JobSystemPump<J> {
    /// Spawns a pump task unless `max_in_flight` are running (then the next
    /// one to end spawns a successor). Never blocks and never runs a job on
    /// the calling thread.
    fn wake(&self) {
        self.shared.wake();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::vec::Vec;

    use super::*;

    type Task = Box<dyn FnOnce() + Send>;

    /// Tasks run only when the test runs them.
    #[derive(Clone, Default)]
    struct Manual(Arc<Mutex<VecDeque<Task>>>);

    impl JobSystem for Manual {
        fn spawn<F: FnOnce() + Send + 'static>(&self, task: F) {
            lock(&self.0).push_back(Box::new(task));
        }
    }

    impl Manual {
        fn run_next(&self) -> bool {
            let task = lock(&self.0).pop_front();
            task.map(|task| task()).is_some()
        }
    }

    /// The window the wake-up protocol exists for: a wake-up that arrives
    /// after a task's last claim came back empty, while the task still holds
    /// its slot, is coalesced — and the ending task spawns a successor for it.
    #[test]
    fn a_wake_up_at_the_end_of_a_task_is_not_lost() {
        let manual = Manual::default();
        let pump = JobSystemPump::new(manual.clone(), PumpConfig::default());
        let late = pump.clone();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&calls);
        let body: Body = Box::new(move |_control: &Control| {
            let mut calls = lock(&seen);
            calls.push(late.in_flight());
            if calls.len() == 1 {
                // "A promotion on another thread", right at the end of the drain.
                late.wake();
            }
        });
        pump.bind(body).unwrap();

        pump.wake();
        assert_eq!(pump.stats().spawned, 1);
        assert!(manual.run_next());
        let stats = pump.stats();
        assert_eq!((stats.wakes, stats.coalesced, stats.spawned), (2, 1, 2), "the successor was spawned");
        assert!(manual.run_next());
        assert!(!manual.run_next(), "no wake-up during the successor: no third task");
        assert_eq!(*lock(&calls), [1, 1]);
        assert_eq!(pump.in_flight(), 0);
        // (The test's pump → body → pump cycle leaks; no real body holds its pump.)
    }

    #[test]
    fn config_floors_are_one() {
        let pump = JobSystemPump::new(Manual::default(), PumpConfig::new().max_in_flight(0).jobs_per_task(0));
        assert_eq!((pump.shared.control.max_in_flight, pump.shared.control.jobs_per_task), (1, 1));
    }
}
