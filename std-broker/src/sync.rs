//! The only place kiln-std's reclamation and its sleeping workers' registry
//! name a lock, an `Arc`, an atomic or a thread: `loom`'s under `cfg(loom)`
//! (so `tests/loom.rs` can model `reclaim.rs` and `sleepers.rs` with every
//! access visible), `std`'s otherwise, with the same import paths both ways
//! — as kiln-core's `sync.rs` does.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering, fence};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex};
#[cfg(loom)]
pub(crate) use loom::thread::{Thread, current};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex};
#[cfg(not(loom))]
pub(crate) use std::thread::{Thread, current};

/// Parks the calling thread for at most `timeout`. loom has no clock: under
/// it the thread parks until unparked, so a wake-up a protocol loses is a
/// deadlock the model reports, not a late poll.
pub(crate) fn park_timeout(timeout: std::time::Duration) {
    #[cfg(loom)]
    {
        let _ = timeout;
        loom::thread::park();
    }
    #[cfg(not(loom))]
    std::thread::park_timeout(timeout);
}

/// Locks `mutex`, going on past a poisoned lock: every critical section in
/// the reclamation code leaves its data consistent before any call that
/// could panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> crate::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(loom)]
pub(crate) use loom::sync::MutexGuard;
#[cfg(not(loom))]
pub(crate) use std::sync::MutexGuard;
