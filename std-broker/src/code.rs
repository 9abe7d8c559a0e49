//! What a compile hands kiln-std: a raw entry pointer, OSR entries and a
//! release hook ([`NativeCode`], `Built`), why a compile made no code
//! ([`CompileFailure`]), and the panic isolation around host callbacks.
//! Turning a compile's output into a code handle is `code_object`'s.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_core::{OsrEntry, OsrTableError};

pub(crate) use crate::code_object::ReleaseHook;

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
        self.release = Some(ReleaseHook::Once(Box::new(release)));
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

/// What a compile produced, before `code_object` publishes it.
pub(crate) struct Built {
    pub(crate) entry: *mut (),
    pub(crate) osr: Vec<OsrEntry>,
    pub(crate) release: Option<ReleaseHook>,
    /// Where a panic of `release` is counted if the code is refused before
    /// it is published.
    pub(crate) panics: Arc<HostPanics>,
}

impl Built {
    /// Hands `entry` to the release hook, if any, catching its panic.
    /// For code no thread ever saw.
    pub(crate) fn release_unpublished(self) {
        if let (false, Some(release)) = (self.entry.is_null(), self.release) {
            self.panics.isolate("release hook", || release.run(self.entry));
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
