//! Burst wake-ups: the one case where a caller wakes a sleeping worker.
//!
//! kiln-std's workers poll the queue on a backoff (see `backoff`); nobody
//! wakes them for a lone promotion, which costs its caller nothing beyond
//! the push and waits for the next poll (≤ 1 ms within a second of the
//! last compile). A warm-up storm is different: many beads cross their
//! thresholds within microseconds, and every microsecond the worker sleeps
//! on is paid by every queued bead's calls, interpreted meanwhile. So when
//! a push leaves at least [`BURST`] jobs queued and a worker is asleep, the
//! pushing thread unparks one worker: one futex wake per sleep, paid by one
//! crossing call in `BURST` or more.
//!
//! The registry is a short mutex-protected list of the sleeping workers'
//! threads plus a count read without the lock. A push that finds fewer than
//! `BURST` jobs queued pays a compare; one that finds a burst but no
//! sleeper (the worker is already running) a fence and a Relaxed load.
//! `tests/loom_sleepers.rs` models the protocol (a worker going to sleep against a
//! burst push) with loom's untimed park, where a lost wake-up would be a
//! deadlock, and shows that without the two fences it is one.

use std::time::Duration;

use crate::sync::{AtomicUsize, Mutex, Ordering, Thread, fence, lock};

/// Queued jobs at which a push wakes a sleeping worker: fewer is a lone
/// promotion (it waits for the poll), this many is a burst.
pub(crate) const BURST: usize = 16;

/// The workers of one domain that are in a timed sleep.
#[derive(Debug, Default)]
pub(crate) struct Sleepers {
    /// How many threads `threads` holds; written under its lock, read
    /// without it.
    count: AtomicUsize,
    threads: Mutex<Vec<Thread>>,
}

impl Sleepers {
    /// Sleeps the calling worker for `sleep`, listed as asleep, unless
    /// `queued()` finds work once it is listed. A burst push may end the
    /// sleep early; so may a spurious or stale unpark (the worker then
    /// just looks at the queue once more).
    pub(crate) fn sleep(&self, sleep: Duration, queued: impl Fn() -> usize) {
        let me = crate::sync::current();
        {
            let mut threads = lock(&self.threads);
            threads.push(me.clone());
            self.count.store(threads.len(), Ordering::Relaxed);
        }
        // SeqCst pairs with the fence in `wake_for_burst` (a store-load
        // pattern on both sides: our listing then their queue, their push
        // then our listing): either the pushing thread sees this worker
        // listed, or this look sees its job. A miss would cost a poll, not
        // a job.
        fence(Ordering::SeqCst);
        if queued() == 0 {
            crate::sync::park_timeout(sleep);
        }
        let mut threads = lock(&self.threads);
        // Still listed: nobody woke this sleep (a timeout, or work seen
        // before parking). Not listed: a waker took it out and unparked it.
        if let Some(at) = threads.iter().position(|thread| thread.id() == me.id()) {
            threads.swap_remove(at);
            self.count.store(threads.len(), Ordering::Relaxed);
        }
    }

    /// Called after a push that left `queued` jobs (or was refused by a
    /// full queue of them): wakes one sleeping worker if that is a burst.
    #[inline]
    pub(crate) fn wake_for_burst(&self, queued: usize) {
        if queued < BURST {
            return;
        }
        // SeqCst pairs with the fence in `sleep`.
        fence(Ordering::SeqCst);
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.wake_one();
    }

    #[cold]
    #[inline(never)]
    fn wake_one(&self) {
        let thread = {
            let mut threads = lock(&self.threads);
            let thread = threads.pop();
            self.count.store(threads.len(), Ordering::Relaxed);
            thread
        };
        if let Some(thread) = thread {
            thread.unpark();
        }
    }

    /// Workers listed as asleep.
    #[cfg(test)]
    pub(crate) fn asleep(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;

    use super::*;

    const LONG: Duration = Duration::from_secs(20);

    fn wait_listed(sleepers: &Sleepers, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while sleepers.asleep() != count {
            assert!(Instant::now() < deadline, "never {count} listed");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_lone_push_leaves_a_sleeper_asleep_and_a_burst_wakes_it() {
        let sleepers = Arc::new(Sleepers::default());
        let woken = Arc::new(AtomicBool::new(false));
        let handle = {
            let (sleepers, woken) = (Arc::clone(&sleepers), Arc::clone(&woken));
            std::thread::spawn(move || {
                let started = Instant::now();
                sleepers.sleep(LONG, || 0);
                woken.store(true, Ordering::SeqCst);
                started.elapsed()
            })
        };
        wait_listed(&sleepers, 1);
        for queued in 1..BURST {
            sleepers.wake_for_burst(queued);
        }
        std::thread::sleep(Duration::from_millis(200));
        assert!(!woken.load(Ordering::SeqCst), "fewer than BURST queued must not wake anyone");
        assert_eq!(sleepers.asleep(), 1);
        sleepers.wake_for_burst(BURST);
        let slept = handle.join().expect("the sleeper");
        assert!(slept < LONG / 2, "a burst wakes the sleeper (slept {slept:?})");
        assert_eq!(sleepers.asleep(), 0);
    }

    #[test]
    fn a_burst_wakes_one_sleeper_per_push() {
        let sleepers = Arc::new(Sleepers::default());
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let sleepers = Arc::clone(&sleepers);
                std::thread::spawn(move || sleepers.sleep(LONG, || 0))
            })
            .collect();
        wait_listed(&sleepers, 2);
        sleepers.wake_for_burst(BURST);
        wait_listed(&sleepers, 1);
        sleepers.wake_for_burst(BURST * 4);
        wait_listed(&sleepers, 0);
        for handle in handles {
            handle.join().expect("a sleeper");
        }
    }

    #[test]
    fn a_worker_that_finds_work_once_listed_does_not_sleep_and_unlists_itself() {
        let sleepers = Sleepers::default();
        let started = Instant::now();
        sleepers.sleep(LONG, || 1);
        assert!(started.elapsed() < LONG / 2);
        assert_eq!(sleepers.asleep(), 0);
        // A burst with nobody listed wakes nobody and lists nobody.
        sleepers.wake_for_burst(BURST);
        assert_eq!(sleepers.asleep(), 0);
    }

    #[test]
    fn a_sleep_that_times_out_unlists_itself() {
        let sleepers = Sleepers::default();
        sleepers.sleep(Duration::from_millis(5), || 0);
        assert_eq!(sleepers.asleep(), 0);
        assert!(sleepers.threads.lock().expect("unpoisoned").is_empty());
    }
}
