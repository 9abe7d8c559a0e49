//! Code objects: what a kiln-std `CodeHandle` points to.
//!
//! A compile closure returns a raw entry pointer (and OSR entries); kiln-std
//! boxes them into a [`CodeObject`] that owns the OSR table, and hands the
//! box's address to kiln-core as the code's handle. Releasing the handle
//! runs the backend's release hook (if the backend frees code) and drops the
//! box, table included.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_core::{CodeHandle, Compiled, OsrEntry, OsrTable, OsrTableError};

/// Frees backend code once kiln retired it and no thread can run it.
pub(crate) type ReleaseHook = Box<dyn FnOnce(*mut ()) + Send>;

/// Counts panics caught in host callbacks (compile closures, backend
/// methods, release hooks, `on_invalidate`), one counter per `Beadie`,
/// shared by its beads and its code objects.
#[derive(Debug, Default)]
pub(crate) struct HostPanics(AtomicU64);

impl HostPanics {
    /// The counter of beads made without a `Beadie` (`Bead::new`).
    pub(crate) fn detached() -> Arc<Self> {
        static DETACHED: std::sync::OnceLock<Arc<HostPanics>> = std::sync::OnceLock::new();
        Arc::clone(DETACHED.get_or_init(Arc::default))
    }

    /// Panics caught so far.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts and logs a caught panic of the host callback `what`.
    pub(crate) fn caught(&self, what: &str, payload: &(dyn Any + Send)) {
        self.0.fetch_add(1, Ordering::Relaxed);
        let message = panic_message(payload);
        isolate_logger(
            || log::error!(target: "kiln", "host callback {what} panicked (caught; kiln goes on): {message}"),
        );
    }

    /// Runs the host callback `callback` (named `what` in the log) so that a
    /// panic in it is caught, counted and logged instead of unwinding into
    /// kiln or its caller. `None` if it panicked.
    pub(crate) fn isolate<R>(&self, what: &str, callback: impl FnOnce() -> R) -> Option<R> {
        // AssertUnwindSafe: what a panicking callback may leave half-changed
        // is its own state; kiln's state is not borrowed across the call.
        match catch_unwind(AssertUnwindSafe(callback)) {
            Ok(value) => Some(value),
            Err(payload) => {
                self.caught(what, &*payload);
                None
            }
        }
    }
}

/// Panics of the `log` logger caught inside kiln-std's event hooks, process
/// wide (the logger is process wide too).
static LOGGER_PANICS: AtomicU64 = AtomicU64::new(0);

/// Panics the `log` logger raised inside kiln-std's own log calls (its
/// event hooks: promotion, compile, deopt, release records; its workers'
/// records), caught and counted process-wide. Not logged: the logger is
/// what panicked. kiln-core's own records (its `log` feature, on in
/// kiln-std) are not covered: kiln-core has no `catch_unwind`, so a logger
/// that panics can still unwind through it — a logger must not panic.
pub fn logger_panics() -> u64 {
    LOGGER_PANICS.load(Ordering::Relaxed)
}

/// Runs `record` (a log call), catching and counting a logger panic.
pub(crate) fn isolate_logger(record: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(record)).is_err() {
        LOGGER_PANICS.fetch_add(1, Ordering::Relaxed);
    }
}

/// A panic payload's message, if it is a string.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

/// A closure compile's output with a way back (kiln-only): the entry, its
/// OSR entries, and a release hook that frees the code once kiln retired it
/// and quiescence was declared — what a `JitBackend` gets through
/// `release`, for code compiled by a closure. Accepted by
/// [`Beadie::on_invoke_code`](crate::Beadie::on_invoke_code),
/// [`on_backedge_code`](crate::Beadie::on_backedge_code) and
/// [`submit_code`](crate::Beadie::submit_code).
///
/// ```
/// # use kiln_std::NativeCode;
/// # extern "C" fn jitted() {}
/// let code = NativeCode::new(jitted as extern "C" fn() as *mut ())
///     .on_release(|entry| { /* free the code memory at `entry` */ let _ = entry; });
/// assert!(code.has_release_hook());
/// ```
pub struct NativeCode {
    /// The function's normal entry (null: a failed compile).
    pub entry: *mut (),
    /// OSR entries published with it (any order; sorted by kiln).
    pub osr: Vec<OsrEntry>,
    release: Option<ReleaseHook>,
}

// SAFETY: addresses kiln never dereferences, and a `Send` hook.
unsafe impl Send for NativeCode {}

impl std::fmt::Debug for NativeCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeCode")
            .field("entry", &self.entry)
            .field("osr", &self.osr)
            .field("release_hook", &self.release.is_some())
            .finish()
    }
}

impl NativeCode {
    /// Code at `entry`, without OSR entries or release hook.
    pub fn new(entry: *mut ()) -> Self {
        Self { entry, osr: Vec::new(), release: None }
    }

    /// The same code with `osr` as its OSR entries.
    pub fn with_osr(mut self, osr: Vec<OsrEntry>) -> Self {
        self.osr = osr;
        self
    }

    /// The same code with `release` as its release hook: kiln calls it once
    /// with the entry, after the code was retired and quiescence declared,
    /// or at once if the code was never published (a stale or refused
    /// result). Never called without quiescence (unmanaged mode), nor for a
    /// null entry. Runs under `catch_unwind` (see `Beadie::host_panics`).
    pub fn on_release(mut self, release: impl FnOnce(*mut ()) + Send + 'static) -> Self {
        self.release = Some(Box::new(release));
        self
    }

    /// Whether a release hook is attached.
    pub fn has_release_hook(&self) -> bool {
        self.release.is_some()
    }

    pub(crate) fn into_parts(self) -> (*mut (), Vec<OsrEntry>, Option<ReleaseHook>) {
        (self.entry, self.osr, self.release)
    }
}

/// What a compile produced, before kiln-std boxes it.
pub(crate) struct Built {
    pub(crate) entry: *mut (),
    pub(crate) osr: Vec<OsrEntry>,
    pub(crate) release: Option<ReleaseHook>,
    /// Where a panic of `release` is counted.
    pub(crate) panics: Arc<HostPanics>,
}

impl Built {
    /// Hands `entry` to the release hook, if any, catching its panic.
    /// For code no thread ever saw.
    pub(crate) fn release_unpublished(self) {
        if let (false, Some(release)) = (self.entry.is_null(), self.release) {
            self.panics.isolate("release hook", || release(self.entry));
        }
    }
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
    /// The host's compile factory returned an error (its message attached):
    /// it could not build the function's definition.
    Factory(String),
    /// An `*_attached` call promoted a bead with no compile factory
    /// attached (see `BackendAdapter::attach`).
    NoFactory,
    /// The job carried no compile work. A kiln-std job carries its work
    /// from promotion to compile (it is no longer stored on the bead and
    /// joined back), so this is returned only if a job reached the compiler
    /// without it, which kiln-std's job handle rules out: it would be a
    /// kiln-std bug. Kept so matches written against earlier versions
    /// still compile.
    #[deprecated(note = "a kiln-std job carries its compile work; only a kiln-std bug could return this")]
    NoWork,
}

impl std::fmt::Display for CompileFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NullEntry => f.write_str("compile returned a null entry"),
            Self::Panicked(message) => write!(f, "compile panicked: {message}"),
            Self::Backend(message) => write!(f, "backend error: {message}"),
            Self::BadOsrTable(error) => write!(f, "bad OSR entries: {error}"),
            Self::Factory(message) => write!(f, "compile factory error: {message}"),
            Self::NoFactory => f.write_str("no compile factory attached to this bead"),
            #[allow(deprecated)]
            Self::NoWork => f.write_str("the job carried no compile work"),
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
    panics: Arc<HostPanics>,
    /// Keeps the domain's counters alive for the release accounting.
    ledger: Arc<crate::domain::Ledger>,
}

impl CodeObject {
    /// Boxes `built` and returns it as kiln-core `Compiled` code. OSR entries
    /// are sorted by site (as beadie does); duplicates are an error.
    pub(crate) fn publishable(built: Built, ledger: Arc<crate::domain::Ledger>) -> Result<Compiled, CompileFailure> {
        let Built { entry, mut osr, release, panics } = built;
        if entry.is_null() {
            return Err(CompileFailure::NullEntry);
        }
        osr.sort_by_key(|entry| entry.site);
        let entries = osr.into_boxed_slice();
        let has_osr = !entries.is_empty();
        let mut object = Box::new(CodeObject { entry, table: None, entries, release, panics, ledger });
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
                        object.panics.isolate("release hook", || release(object.entry));
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
        let CodeObject { entry, entries, release, panics, ledger, .. } = *object;
        drop(entries);
        if let Some(release) = release {
            // Runs on whichever thread quiesces (a worker, the host inside
            // `quiesce`): a panic must neither kill the worker nor unwind
            // into the host, and the handles after this one must still go.
            panics.isolate("release hook", || release(entry));
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
