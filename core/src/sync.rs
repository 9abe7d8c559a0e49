//! The only place that names an atomic type or a lock.
//!
//! Under `cfg(loom)` everything comes from `loom`, so the model checker sees
//! every access; otherwise atomics come from `portable_atomic`, which is
//! `core`'s atomics where the target has them and a critical-section fallback
//! where it does not (feature `critical-section`). The import paths are the
//! same both ways.
//!
//! [`Lock`] guards the broker's slow-path state (queue, retire ring). It is a
//! spin lock by default (with `std`, one that yields its time slice after
//! a short spin); with feature `critical-section` it is a critical
//! section instead, because an interrupt handler that spins on a lock held by
//! the code it interrupted would never return.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use portable_atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Ordering};

/// Declares a function `const` except under loom, whose atomics and locks
/// cannot be built in a const context.
macro_rules! const_fn {
    ($(#[$attr:meta])* $vis:vis const fn $($rest:tt)*) => {
        #[cfg(not(loom))]
        $(#[$attr])* $vis const fn $($rest)*
        #[cfg(loom)]
        $(#[$attr])* $vis fn $($rest)*
    };
}
pub(crate) use const_fn;

#[cfg(loom)]
type LockInner<T> = loom::sync::Mutex<T>;
#[cfg(all(not(loom), feature = "critical-section"))]
type LockInner<T> = critical_section::Mutex<core::cell::RefCell<T>>;
#[cfg(all(not(loom), not(feature = "critical-section")))]
type LockInner<T> = spin::Mutex<T>;

/// The broker's slow-path lock. Never held across a call into host code
/// (compiler, pump, events), so it cannot be re-entered.
pub(crate) struct Lock<T> {
    inner: LockInner<T>,
}

impl<T> Lock<T> {
    const_fn! {
        pub(crate) const fn new(value: T) -> Self {
            #[cfg(loom)]
            let inner = loom::sync::Mutex::new(value);
            #[cfg(all(not(loom), feature = "critical-section"))]
            let inner = critical_section::Mutex::new(core::cell::RefCell::new(value));
            #[cfg(all(not(loom), not(feature = "critical-section")))]
            let inner = spin::Mutex::new(value);
            Self { inner }
        }
    }

    /// Runs `f` with the lock held.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        #[cfg(loom)]
        {
            f(&mut self.inner.lock().unwrap())
        }
        #[cfg(all(not(loom), feature = "critical-section"))]
        {
            critical_section::with(|cs| f(&mut self.inner.borrow_ref_mut(cs)))
        }
        #[cfg(all(not(loom), not(feature = "critical-section"), feature = "std"))]
        {
            // Spin briefly, then yield: on a machine with more runnable
            // threads than cores, the holder may have been preempted, and a
            // waiter that only spins burns its whole time slice before the
            // holder can run again (seen in warm-up storms on a loaded
            // 2-core machine: a worker's claim and two interpreters'
            // crossings contend here).
            extern crate std;
            let mut spins = 0u32;
            loop {
                if let Some(mut guard) = self.inner.try_lock() {
                    return f(&mut guard);
                }
                if spins < SPINS_BEFORE_YIELD {
                    spins += 1;
                    core::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
        #[cfg(all(not(loom), not(feature = "critical-section"), not(feature = "std")))]
        {
            f(&mut self.inner.lock())
        }
    }
}

/// Failed attempts a waiter spins for before it yields its time slice
/// (with `std`): long enough to cover an uncontended critical section on
/// another core (a push or a pop, well under a microsecond), short enough
/// that a preempted holder costs a waiter microseconds, not a time slice.
#[cfg(all(not(loom), not(feature = "critical-section"), feature = "std"))]
const SPINS_BEFORE_YIELD: u32 = 64;

impl<T> core::fmt::Debug for Lock<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Lock { .. }")
    }
}
