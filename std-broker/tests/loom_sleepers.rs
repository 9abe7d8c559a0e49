//! A loom model of the burst wake-up (`src/sleepers.rs`), run by
//! `ci/loom.sh` under `--cfg loom`.
//!
//! A worker about to sleep races a thread that pushes a burst and calls
//! `wake_for_burst`. Under loom the worker's timed sleep is an untimed park
//! (`sync::park_timeout`), so a wake-up the protocol loses is a deadlock,
//! which loom reports. The protocol must never lose it: either the pusher
//! sees the worker listed and unparks it, or the worker, once listed, sees
//! the job and does not park. A transcription without the two SeqCst
//! fences (`unfenced`) must be caught: it is the store-buffering pattern,
//! where each side reads the other's old value.
#![cfg(loom)]

use std::time::Duration;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use loom::thread;

#[allow(dead_code, unreachable_pub, unused_imports)]
#[path = "../src/sync.rs"]
mod sync;

#[allow(dead_code, unreachable_pub)]
#[path = "../src/sleepers.rs"]
mod sleepers;

use sleepers::{BURST, Sleepers};

/// The same registry's protocol with Relaxed accesses and no fences,
/// transcribed without blocking: loom cannot unwind out of a deadlock
/// cleanly (it aborts), so this transcription returns whether the worker
/// would have parked and whether the pusher woke it, and the model checks
/// that a parked worker was woken.
mod unfenced {
    use loom::sync::Mutex;
    use loom::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    #[derive(Default)]
    pub(super) struct Sleepers {
        count: AtomicUsize,
        listed: Mutex<usize>,
    }

    impl Sleepers {
        /// Lists the worker, looks at the queue: true if it would park.
        pub(super) fn would_park(&self, queued: impl Fn() -> usize) -> bool {
            {
                let mut listed = self.listed.lock().unwrap();
                *listed += 1;
                self.count.store(*listed, Relaxed);
            }
            queued() == 0
        }

        /// True if this push would unpark a listed worker.
        pub(super) fn wakes(&self, queued: usize) -> bool {
            if queued < super::BURST || self.count.load(Relaxed) == 0 {
                return false;
            }
            let mut listed = self.listed.lock().unwrap();
            let woke = *listed > 0;
            *listed = listed.saturating_sub(1);
            self.count.store(*listed, Relaxed);
            woke
        }
    }
}

/// One worker polls the queue and sleeps while it is empty; the main
/// thread pushes a burst (a Relaxed store, as kiln-core's queue length is
/// written) and calls `wake_for_burst`. The worker must get out.
#[test]
fn a_burst_push_never_loses_a_worker_going_to_sleep() {
    loom::model(|| {
        let registry = Arc::new(Sleepers::default());
        let queued = Arc::new(AtomicUsize::new(0));
        let worker = {
            let (registry, queued) = (Arc::clone(&registry), Arc::clone(&queued));
            thread::spawn(move || {
                while queued.load(Relaxed) == 0 {
                    registry.sleep(Duration::from_secs(60), || queued.load(Relaxed));
                }
            })
        };
        queued.store(BURST, Relaxed);
        registry.wake_for_burst(BURST);
        worker.join().unwrap();
    });
}

#[test]
#[should_panic(expected = "lost wake-up")]
fn the_model_catches_the_registry_without_fences() {
    loom::model(|| {
        let registry = Arc::new(unfenced::Sleepers::default());
        let queued = Arc::new(AtomicUsize::new(0));
        let worker = {
            let (registry, queued) = (Arc::clone(&registry), Arc::clone(&queued));
            thread::spawn(move || registry.would_park(|| queued.load(Relaxed)))
        };
        queued.store(BURST, Relaxed);
        let woke = registry.wakes(BURST);
        let parked = worker.join().unwrap();
        assert!(!parked || woke, "lost wake-up: the worker parked and the burst woke nobody");
    });
}
