//! The only place that names an atomic type or a lock (std builds only).
//!
//! kiln-host's `no_std` half (the frame pump) is single-threaded by
//! construction (`&mut self`) and needs none; the job-system adapters run on
//! std, so they take std's. One import path keeps the option of swapping in
//! loom later, as kiln-core does.

pub(crate) use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};

/// Locks `mutex`, ignoring poison: every lock in kiln-host guards state that
/// stays consistent across a panic (a compiler whose compile panicked is
/// still a compiler; a waker slot is still a slot).
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
