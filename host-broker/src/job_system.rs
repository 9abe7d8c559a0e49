//! The one thing kiln-host needs from a job system: `spawn`.
//!
//! Design note. A generic `spawn` (not a boxed closure) so an engine whose
//! own spawn is generic pays no extra allocation; `help` exists for engines
//! whose tasks progress only when someone ticks them, so a blocking `stop`
//! cannot deadlock them. The description is on [`JobSystem`].

/// A job system kiln can spawn pump tasks on.
///
/// An engine plugs in by implementing [`JobSystem`] — usually one line that
/// forwards to its own spawn — and wraps it in a
/// [`JobSystemPump`](crate::JobSystemPump), which does the rest: coalescing
/// wake-ups, capping tasks in flight, running jobs, stopping.
///
/// ```
/// use kiln_host::{JobSystem, JobSystemPump, PumpConfig};
///
/// /// A job system that starts a thread per task.
/// struct Threads;
/// impl JobSystem for Threads {
///     fn spawn<F: FnOnce() + Send + 'static>(&self, task: F) {
///         std::thread::spawn(task);
///     }
/// }
///
/// let pump = JobSystemPump::new(Threads, PumpConfig::default());
/// # let _ = pump;
/// ```
///
/// # Contract
///
/// - `spawn` is called from [`WakeHook::wake`](kiln_core::WakeHook::wake): on any
///   thread that calls into the broker (an interpreter thread in the middle
///   of a call). It must not block, and it must not run `task` before it
///   returns — the task calls into the broker, which a wake-up must not do.
///   A job system that may run tasks inline defers them first (as
///   `BevyJobSystem` does on bevy_tasks without threads).
/// - `task` runs once, on whatever thread the job system picks, and may take
///   as long as the compiles it runs.
pub trait JobSystem: Send + Sync + 'static {
    /// Schedules `task` to run soon.
    fn spawn<F: FnOnce() + Send + 'static>(&self, task: F);

    /// Called repeatedly by [`JobSystemPump::stop`](crate::JobSystemPump::stop)
    /// while it waits for tasks in flight. A job system whose tasks progress
    /// only when the waiting thread ticks it (bevy_tasks without threads)
    /// ticks here. The default does nothing.
    fn help(&self) {}
}

impl<J: JobSystem> JobSystem for std::sync::Arc<J> {
    fn spawn<F: FnOnce() + Send + 'static>(&self, task: F) {
        (**self).spawn(task)
    }

    fn help(&self) {
        (**self).help()
    }
}

impl<J: JobSystem + ?Sized> JobSystem for &'static J {
    fn spawn<F: FnOnce() + Send + 'static>(&self, task: F) {
        (**self).spawn(task)
    }

    fn help(&self) {
        (**self).help()
    }
}
