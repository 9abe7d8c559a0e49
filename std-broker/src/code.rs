//! Code objects: what a kiln-std `CodeHandle` points to.
//!
//! A compile closure returns a raw entry pointer (and OSR entries); kiln-std
//! boxes them into a [`CodeObject`] that owns the OSR table, and hands the
//! box's address to kiln-core as the code's handle. Releasing the handle
//! runs the backend's release hook (if the backend frees code) and drops the
//! box, table included.

use std::sync::Arc;

use kiln_core::{CodeHandle, Compiled, OsrEntry, OsrTable, OsrTableError};

/// Frees backend code once kiln retired it and no thread can run it.
pub(crate) type ReleaseHook = Box<dyn FnOnce(*mut ()) + Send>;

/// What a compile produced, before kiln-std boxes it.
pub(crate) struct Built {
    pub(crate) entry: *mut (),
    pub(crate) osr: Vec<OsrEntry>,
    pub(crate) release: Option<ReleaseHook>,
}

/// Why a compile produced no code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompileFailure {
    /// The compile returned a null entry.
    NullEntry,
    /// The compile closure panicked (message attached).
    Panicked(String),
    /// The backend reported an error.
    Backend(String),
    /// The OSR entries were malformed.
    BadOsrTable(OsrTableError),
    /// The job had no compile work attached (the bead was submitted without one).
    NoWork,
}

impl std::fmt::Display for CompileFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NullEntry => f.write_str("compile returned a null entry"),
            Self::Panicked(message) => write!(f, "compile panicked: {message}"),
            Self::Backend(message) => write!(f, "backend error: {message}"),
            Self::BadOsrTable(error) => write!(f, "bad OSR entries: {error}"),
            Self::NoWork => f.write_str("no compile work attached"),
        }
    }
}

impl std::error::Error for CompileFailure {}

/// One published piece of code and everything it owns.
pub(crate) struct CodeObject {
    entry: *mut (),
    /// A view into `entries`; never outlives the object.
    table: Option<OsrTable<'static>>,
    entries: Box<[OsrEntry]>,
    release: Option<ReleaseHook>,
    /// Keeps the domain's counters alive for the release accounting.
    ledger: Arc<crate::domain::Ledger>,
}

impl CodeObject {
    /// Boxes `built` and returns it as kiln-core `Compiled` code. OSR entries
    /// are sorted by site (as beadie does); duplicates are an error.
    pub(crate) fn publishable(built: Built, ledger: Arc<crate::domain::Ledger>) -> Result<Compiled, CompileFailure> {
        let Built { entry, mut osr, release } = built;
        if entry.is_null() {
            return Err(CompileFailure::NullEntry);
        }
        osr.sort_by_key(|entry| entry.site);
        let entries = osr.into_boxed_slice();
        let has_osr = !entries.is_empty();
        let mut object = Box::new(CodeObject { entry, table: None, entries, release, ledger });
        if has_osr {
            // SAFETY: the slice lives in the box's heap buffer, which neither
            // moves nor changes until the `CodeObject` drops, and the table is
            // dropped before it (field order); the table never leaves the object.
            let entries: &'static [OsrEntry] = unsafe { &*std::ptr::from_ref(&*object.entries) };
            match OsrTable::new(entries) {
                Ok(table) => object.table = Some(table),
                Err(error) => {
                    // Never published: the backend may free the code now.
                    if let Some(release) = object.release.take() {
                        release(object.entry);
                    }
                    return Err(CompileFailure::BadOsrTable(error));
                }
            }
        }
        object.ledger.compiled();
        let raw = Box::into_raw(object);
        let handle = CodeHandle::from_raw(raw as usize).expect("a box is never at address 0");
        // SAFETY: reading the box we just leaked; it stays alive until `release`.
        let object = unsafe { &*raw };
        let compiled = Compiled::new(object.entry, handle).expect("checked non-null above");
        Ok(match &object.table {
            // kiln-core calls `CodeObject::release(handle)` only after the code
            // was retired and quiesced (or at once if it was never published).
            // SAFETY: `with_osr` (1) the boxed table lives until then, (2) immutable, Sync.
            Some(table) => unsafe { compiled.with_osr(std::ptr::NonNull::from(table)) },
            None => compiled,
        })
    }

    /// Frees the code behind `handle`: runs the release hook, drops the box.
    ///
    /// # Safety
    ///
    /// 1. `handle` came from [`publishable`](Self::publishable) and is
    ///    released exactly once.
    /// 2. No thread can still run its code or read its OSR table.
    pub(crate) unsafe fn release(handle: CodeHandle) {
        // SAFETY: (1) the handle is the address of a leaked `Box<CodeObject>`,
        // released once, so ownership comes back exactly once.
        let object = unsafe { Box::from_raw(handle.get() as *mut CodeObject) };
        let CodeObject { entry, entries, release, ledger, .. } = *object;
        drop(entries);
        if let Some(release) = release {
            release(entry);
        }
        ledger.released();
    }

    /// Frees kiln-std's memory for `handle` without running the release
    /// hook: the backend's code stays (unmanaged mode, see `domain`).
    ///
    /// # Safety
    ///
    /// 1. As for [`release`](Self::release), item 1.
    /// 2. No thread can still read its OSR table.
    pub(crate) unsafe fn discard(handle: CodeHandle) {
        // SAFETY: (1) ownership of the leaked box comes back exactly once.
        let object = unsafe { Box::from_raw(handle.get() as *mut CodeObject) };
        let CodeObject { entries, release, ledger, .. } = *object;
        drop(entries);
        // The hook would free code a thread may still run: leak it instead.
        std::mem::forget(release);
        ledger.released();
    }
}
