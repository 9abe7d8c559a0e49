//! The core-level backend: what a pumper calls to turn a job into code, and
//! to free code that kiln has retired.
//!
//! Code is identified by a [`CodeHandle`], an opaque non-zero word the
//! compiler chooses (an index into its module table, a pointer to a boxed
//! code object). kiln stores it in the bead and hands it back exactly once to
//! [`Compiler::release`], after the code was retired and the host declared
//! quiescence; a result that arrives for a stale generation is handed back at
//! once, since it was never published.

use core::num::NonZeroUsize;
use core::ptr::NonNull;

use crate::job::CompileRequest;
use crate::osr::OsrTable;

/// The compiler's name for one piece of code it owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CodeHandle(NonZeroUsize);

impl CodeHandle {
    /// Wraps a compiler-chosen non-zero word.
    pub const fn new(raw: NonZeroUsize) -> Self {
        Self(raw)
    }

    /// Wraps `raw`, or `None` if it is zero.
    pub const fn from_raw(raw: usize) -> Option<Self> {
        match NonZeroUsize::new(raw) {
            Some(raw) => Some(Self(raw)),
            None => None,
        }
    }

    /// The word the compiler chose.
    pub const fn get(self) -> usize {
        self.0.get()
    }
}

/// A null pointer was offered where native code was expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NullEntry;

impl core::fmt::Display for NullEntry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("native entry pointer is null")
    }
}

impl core::error::Error for NullEntry {}

/// Freshly compiled code, ready to publish: its entry, the handle that frees
/// it, and optionally the OSR table compiled with it.
#[derive(Debug)]
#[must_use = "compiled code leaks unless it is published or released"]
pub struct Compiled {
    pub(crate) entry: NonNull<()>,
    pub(crate) handle: CodeHandle,
    pub(crate) osr: Option<NonNull<OsrTable<'static>>>,
}

// SAFETY: `Compiled` carries addresses kiln never dereferences except the OSR
// table, which `with_osr`'s contract makes valid from any thread until release.
unsafe impl Send for Compiled {}

impl Compiled {
    /// Code at `entry`, freed by releasing `handle`. A null entry is refused:
    /// it is a failed compile, not code.
    pub fn new(entry: *mut (), handle: CodeHandle) -> Result<Self, NullEntry> {
        let entry = NonNull::new(entry).ok_or(NullEntry)?;
        Ok(Self { entry, handle, osr: None })
    }

    /// Attaches the OSR table compiled with this code.
    ///
    /// # Safety
    ///
    /// 1. `table` points to an [`OsrTable`] that, together with the entries it
    ///    views, stays valid and unchanged until [`Compiler::release`] is
    ///    called with this code's handle (or, if the code is never published,
    ///    until the `Compiled` is dropped or handed back).
    /// 2. It may be read from any thread in that time.
    pub unsafe fn with_osr(mut self, table: NonNull<OsrTable<'_>>) -> Self {
        self.osr = Some(table.cast());
        self
    }

    /// The native entry point.
    pub fn entry(&self) -> NonNull<()> {
        self.entry
    }

    /// The handle that frees this code.
    pub fn handle(&self) -> CodeHandle {
        self.handle
    }

    /// Whether an OSR table is attached.
    pub fn has_osr(&self) -> bool {
        self.osr.is_some()
    }

    /// Gives up the code without publishing it, returning the handle the
    /// caller must release.
    pub fn into_handle(self) -> CodeHandle {
        self.handle
    }
}

/// A backend that compiles jobs and frees code.
///
/// `compile` runs on whatever thread pumps (a broker thread, a job-system
/// worker, the main loop between frames); it must not call back into the
/// broker that handed it the job. `release` is called exactly once per handle
/// that kiln accepted, and only once no thread can still run the code.
///
/// `release` must not panic: kiln-core is `no_std` and catches nothing, so a
/// panic inside [`Broker::quiesce`](crate::Broker::quiesce) unwinds out of it
/// and the handles after the panicking one in that batch are lost (leaked,
/// never freed early). kiln-std and kiln-host's std adapters run host code
/// under `catch_unwind` for this reason. A panicking `compile` inside a
/// [`Job`](crate::Job) is safe: the job's drop hands the bead back to rest.
pub trait Compiler<H> {
    /// What a failed compile reports (logged with `{:?}`).
    type Error: core::fmt::Debug;

    /// Compiles the function behind `request`.
    fn compile(&mut self, request: &CompileRequest<'_, H>) -> Result<Compiled, Self::Error>;

    /// Frees code that kiln no longer publishes and no thread can run.
    fn release(&mut self, code: CodeHandle);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_entries_and_zero_handles_are_refused() {
        assert_eq!(CodeHandle::from_raw(0), None);
        let handle = CodeHandle::from_raw(7).unwrap();
        assert_eq!(handle.get(), 7);
        assert_eq!(Compiled::new(core::ptr::null_mut(), handle).unwrap_err(), NullEntry);
        let code = Compiled::new(core::ptr::without_provenance_mut(0x40), handle).unwrap();
        assert!(!code.has_osr());
        assert_eq!(code.entry().as_ptr() as usize, 0x40);
        assert_eq!(code.into_handle(), handle);
    }
}
