//! bevy_tasks as a [`JobSystem`]: pump tasks are detached `TaskPool` tasks.
//!
//! Design note. On native targets without threads, bevy_tasks'
//! `TaskPool::spawn` polls the new task before returning, which would run
//! compiles inside `WakeHook::wake` — on the interpreter's call, against the
//! wake contract. So every task first waits on a [`Gate`] that opens only
//! after `spawn` returned: a task polled inline parks, and runs at the next
//! tick of its executor. Where the pool has threads the gate costs one
//! allocation and, rarely, one extra poll. The user-facing description is
//! on [`BevyJobSystem`].

use core::future::{Future, poll_fn};
use core::task::{Context, Poll, Waker};

use bevy_tasks::{AsyncComputeTaskPool, TaskPool};

use crate::adapter::JobSystemPump;
use crate::job_system::JobSystem;
use crate::sync::{Arc, AtomicBool, Mutex, Ordering, lock};

/// Spawns pump tasks on a bevy_tasks [`TaskPool`].
///
/// Tasks go to a given [`TaskPool`] or to bevy's `AsyncComputeTaskPool`
/// (the pool meant for work that may span frames, which compiles are).
///
/// **Hosts that tick their pools from the main thread.** Where bevy_tasks
/// has threads (its `multi_threaded` feature, on by default in bevy on
/// native targets) a pump task runs on a pool thread. In a native build
/// without `multi_threaded`, tasks run only when the host ticks the
/// executor on its main thread, as bevy's `TaskPoolPlugin` does every
/// update with `bevy_tasks::tick_global_task_pools_on_main_thread()`
/// (kiln makes sure a task never runs inside the `spawn` of a wake-up, even
/// though bevy_tasks polls new tasks at once there); on wasm they run on
/// the browser's event loop once the current frame's code returns. A
/// ticking host therefore:
///
/// 1. promotes from the main thread (wake-ups spawn onto that thread's
///    executor);
/// 2. ticks as usual (`tick_global_task_pools_on_main_thread()`, or
///    `pool.with_local_executor(|e| while e.try_tick() {})`) — compiles
///    happen there;
/// 3. stops with `pump.stop()`, which ticks the pool's local executor
///    itself while it waits ([`JobSystem::help`]), or with `begin_stop()`
///    and ticking until `is_stopped()`.
#[derive(Clone, Debug)]
pub struct BevyJobSystem {
    pool: Pool,
}

#[derive(Clone, Debug)]
enum Pool {
    Static(&'static TaskPool),
    Shared(Arc<TaskPool>),
}

impl BevyJobSystem {
    /// A pool the host built, e.g. `TaskPool::new()` or a
    /// `TaskPoolBuilder` with the threads it wants.
    pub fn new(pool: Arc<TaskPool>) -> Self {
        Self { pool: Pool::Shared(pool) }
    }

    /// A pool that lives forever, e.g. one of bevy's global pools.
    pub fn from_static(pool: &'static TaskPool) -> Self {
        Self { pool: Pool::Static(pool) }
    }

    /// bevy's `AsyncComputeTaskPool`, initialised with `TaskPool::default()`
    /// if the host has not set it up yet. Call it after the host (or bevy's
    /// `TaskPoolPlugin`) configured the pool: once initialised here, a later
    /// `get_or_init` with other settings keeps this default pool.
    pub fn async_compute() -> Self {
        let pool: &'static AsyncComputeTaskPool = AsyncComputeTaskPool::get_or_init(TaskPool::default);
        Self::from_static(pool)
    }

    /// The pool tasks are spawned on.
    pub fn pool(&self) -> &TaskPool {
        match &self.pool {
            Pool::Static(pool) => pool,
            Pool::Shared(pool) => pool,
        }
    }
}

impl JobSystem for BevyJobSystem {
    fn spawn<F: FnOnce() + Send + 'static>(&self, task: F) {
        let gate = Arc::new(Gate::default());
        let opened = Arc::clone(&gate);
        self.pool()
            .spawn(async move {
                opened.wait().await;
                task();
            })
            .detach();
        gate.open();
    }

    /// Ticks the calling thread's local executor, where tasks of a pool
    /// without threads wait.
    fn help(&self) {
        self.pool().with_local_executor(|executor| {
            executor.try_tick();
        });
    }
}

/// Keeps a task from running until `spawn` has returned.
#[derive(Debug, Default)]
struct Gate {
    open: AtomicBool,
    waiter: Mutex<Option<Waker>>,
}

impl Gate {
    fn open(&self) {
        // SeqCst pairs with the re-check in `poll_open`: either it sees the
        // flag, or it stored its waker before we take it here.
        self.open.store(true, Ordering::SeqCst);
        if let Some(waker) = lock(&self.waiter).take() {
            waker.wake();
        }
    }

    fn wait(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(|cx| self.poll_open(cx))
    }

    fn poll_open(&self, cx: &mut Context<'_>) -> Poll<()> {
        // SeqCst pairs with the store in `open`.
        if self.open.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        *lock(&self.waiter) = Some(cx.waker().clone());
        if self.open.load(Ordering::SeqCst) { Poll::Ready(()) } else { Poll::Pending }
    }
}

/// kiln-core's `WakeHook` on bevy_tasks.
pub type BevyPump = JobSystemPump<BevyJobSystem>;

#[cfg(test)]
mod tests {
    use core::pin::pin;
    use core::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// What a pool without threads does inside `spawn`: it polls the new
    /// task at once. The task must park until the gate opens, then be woken.
    #[test]
    fn a_task_polled_before_spawn_returns_parks_until_the_gate_opens() {
        let gate = Gate::default();
        let counter = Arc::new(CountingWaker::default());
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        let mut wait = pin!(gate.wait());
        assert_eq!(wait.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
        gate.open();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "opening wakes the parked task");
        assert_eq!(wait.as_mut().poll(&mut cx), Poll::Ready(()));
    }

    #[test]
    fn an_open_gate_lets_the_task_through_at_once() {
        let gate = Gate::default();
        gate.open();
        let waker = Waker::from(Arc::new(CountingWaker::default()));
        assert_eq!(pin!(gate.wait()).poll(&mut Context::from_waker(&waker)), Poll::Ready(()));
    }
}
