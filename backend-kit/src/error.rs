//! [`BackendError`]: the error shapes the shared layer makes, whatever the
//! backend's error type, and the guards that make them.
//!
//! Each backend keeps its own error enum (its variants are its public API);
//! the kit needs only to build the four shapes every backend has and to
//! tell a caught panic from other failures (they are counted apart).

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// What the kit needs of a backend's error type.
pub trait BackendError: std::fmt::Display {
    /// The definition's body builder returned an error.
    fn build(function: String, message: String) -> Self;
    /// Host code (or the compiler) panicked; the payload's message.
    fn panicked(function: String, message: String) -> Self;
    /// The definition is malformed.
    fn invalid_definition(function: String, message: String) -> Self;
    /// The function alone needs more code memory than the whole budget.
    fn over_budget(function: String, needed: usize, budget: usize) -> Self;
    /// Whether this is [`panicked`](Self::panicked)'s shape.
    fn is_panicked(&self) -> bool;
}

/// Runs `code` (a host callback, or the compiler on the host's IR); a
/// panic becomes `E::panicked` for `function`, never an unwind into kiln.
pub fn catch_panic<T, E: BackendError>(function: &str, code: impl FnOnce() -> T) -> Result<T, E> {
    catch_unwind(AssertUnwindSafe(code)).map_err(|payload| E::panicked(function.to_owned(), panic_message(&payload)))
}

/// Refuses two OSR entries at one site (`sites` in any order).
pub fn check_osr_sites<E: BackendError>(function: &str, mut sites: Vec<u64>) -> Result<(), E> {
    sites.sort_unstable();
    match sites.windows(2).find(|pair| pair[0] == pair[1]) {
        Some(pair) => Err(E::invalid_definition(function.to_owned(), format!("two OSR entries at site {}", pair[0]))),
        None => Ok(()),
    }
}

/// A panic payload's message (`&str` or `String`; anything else is named
/// as such).
pub fn panic_message(payload: &Box<dyn Any + Send>) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Implements [`BackendError`] for a backend's error enum that has the
/// four shared shapes as struct variants: `Build { function, message }`,
/// `Panicked { function, message }`, `InvalidDefinition { function,
/// message }` and `OverBudget { function, needed, budget }`.
#[macro_export]
macro_rules! impl_backend_error {
    ($error:ty) => {
        impl $crate::BackendError for $error {
            fn build(function: String, message: String) -> Self {
                Self::Build { function, message }
            }

            fn panicked(function: String, message: String) -> Self {
                Self::Panicked { function, message }
            }

            fn invalid_definition(function: String, message: String) -> Self {
                Self::InvalidDefinition { function, message }
            }

            fn over_budget(function: String, needed: usize, budget: usize) -> Self {
                Self::OverBudget { function, needed, budget }
            }

            fn is_panicked(&self) -> bool {
                matches!(self, Self::Panicked { .. })
            }
        }
    };
}
