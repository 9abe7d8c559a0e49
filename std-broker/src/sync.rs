//! The only place kiln-std's reclamation names a lock, an `Arc` or an
//! atomic: `loom`'s under `cfg(loom)` (so `tests/loom.rs` can model
//! `reclaim.rs` with every access visible), `std`'s otherwise, with the same
//! import paths both ways — as kiln-core's `sync.rs` does.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex};

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
