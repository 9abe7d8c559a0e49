//! The only place that names an atomic type or a lock.
//!
//! Under `cfg(loom)` everything comes from `loom`, so the model checker sees
//! every access; otherwise atomics come from `portable_atomic`, which is
//! `core`'s atomics where the target has them and a critical-section fallback
//! where it does not (feature `critical-section`). The import paths are the
//! same both ways.
//!
//! [`Lock`] guards the broker's slow-path state (queue, retire ring). It is a
//! spin lock by default; with feature `critical-section` it is a critical
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
        #[cfg(all(not(loom), not(feature = "critical-section")))]
        {
            f(&mut self.inner.lock())
        }
    }
}

impl<T> core::fmt::Debug for Lock<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Lock { .. }")
    }
}
