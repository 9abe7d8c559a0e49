//! What a host gives kiln-core: a [`Compiler`] (the "JIT"), a [`WakeHook`] and
//! [`Events`], all without an allocator.
//!
//! The JIT compiles by handing out the native code of [`program`]
//! functions, each time under a fresh [`CodeHandle`] (1, 2, 3, …). It keeps
//! a ledger of the handles it handed out and not yet got back, so the canary
//! can check that kiln releases every handle exactly once and never one it
//! still publishes.
//!
//! [`program`]: crate::program

use core::sync::atomic::{AtomicU32, Ordering};

use kiln_core::{
    Bead, CodeHandle, CompileRequest, Compiled, Compiler, DeoptDecision, Events, JobKind, OsrTable, WakeHook,
};

use crate::program::Function;

/// A relaxed event counter.
#[derive(Debug)]
pub(crate) struct Counter(AtomicU32);

impl Counter {
    const fn new() -> Self {
        Self(AtomicU32::new(0))
    }

    fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The count so far.
    pub(crate) fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A pump for a host that pumps on its own schedule: it only counts
/// wake-ups (to check they are coalesced).
#[derive(Debug)]
pub(crate) struct CountingPump {
    /// `wake` calls.
    pub(crate) wakes: Counter,
}

impl CountingPump {
    /// No wake-ups yet.
    pub(crate) const fn new() -> Self {
        Self { wakes: Counter::new() }
    }
}

impl WakeHook for CountingPump {
    fn wake(&self) {
        self.wakes.bump();
    }
}

/// Events that count.
#[derive(Debug)]
pub(crate) struct CountingEvents {
    /// `promoted` calls.
    pub(crate) promoted: Counter,
    /// `compiled` calls.
    pub(crate) compiled: Counter,
    /// `compile_failed` calls.
    pub(crate) compile_failed: Counter,
    /// `deoptimized` calls.
    pub(crate) deoptimized: Counter,
    /// `invalidated` calls.
    pub(crate) invalidated: Counter,
    /// `released` calls.
    pub(crate) released: Counter,
}

impl CountingEvents {
    /// No events yet.
    pub(crate) const fn new() -> Self {
        Self {
            promoted: Counter::new(),
            compiled: Counter::new(),
            compile_failed: Counter::new(),
            deoptimized: Counter::new(),
            invalidated: Counter::new(),
            released: Counter::new(),
        }
    }
}

impl Events for CountingEvents {
    fn promoted(&self, _bead: &Bead, _tier: u8, _kind: JobKind) {
        self.promoted.bump();
    }
    fn compiled(&self, _bead: &Bead, _tier: u8, _ticks: Option<u64>) {
        self.compiled.bump();
    }
    fn compile_failed(&self, _bead: &Bead, _tier: u8) {
        self.compile_failed.bump();
    }
    fn deoptimized(&self, _bead: &Bead, _decision: DeoptDecision) {
        self.deoptimized.bump();
    }
    fn invalidated(&self, _bead: &Bead) {
        self.invalidated.bump();
    }
    fn released(&self, _code: CodeHandle) {
        self.released.bump();
    }
}

/// Why the JIT did not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompileError {
    /// The bead's core pointer names no function of the program.
    UnknownFunction,
    /// The function has no native code.
    NotJittable,
    /// An OSR compile for a site the table does not have.
    NoOsrEntry(u64),
    /// All 63 handles are in use.
    OutOfHandles,
}

/// One compile the JIT did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CompileRecord {
    /// The function compiled.
    pub(crate) function: &'static str,
    /// The handle its code got.
    pub(crate) handle: CodeHandle,
    /// Normal or OSR compile.
    pub(crate) kind: JobKind,
}

/// The canary's JIT. `'t` is the life of the OSR table it attaches to OSR
/// compiles of `sum_below`.
#[derive(Debug)]
pub(crate) struct CanaryJit<'t> {
    osr_table: &'t OsrTable<'static>,
    /// The highest handle handed out (handles are 1..=63).
    last_handle: usize,
    /// Bit `h`: handle `h` is handed out and not yet released.
    live: u64,
    /// Compiles that returned code.
    pub(crate) compiles: u32,
    /// Handles released.
    pub(crate) released: u32,
    /// `release` calls for a handle that was not live (never handed out or
    /// released before): each one is a kiln bug.
    pub(crate) bad_releases: u32,
    /// The compiles that returned code, oldest first (the first 16).
    log: [Option<CompileRecord>; 16],
}

impl<'t> CanaryJit<'t> {
    /// A JIT whose `sum_below` code carries `osr_table`.
    pub(crate) fn new(osr_table: &'t OsrTable<'static>) -> Self {
        Self { osr_table, last_handle: 0, live: 0, compiles: 0, released: 0, bad_releases: 0, log: [None; 16] }
    }

    /// Code at `native` under a fresh handle, for a compile or for the host
    /// to install by hand (`swap_compiled`).
    pub(crate) fn code(&mut self, native: *mut ()) -> Result<Compiled, CompileError> {
        let raw = self.last_handle + 1;
        let handle = CodeHandle::from_raw(raw).filter(|_| raw < 64).ok_or(CompileError::OutOfHandles)?;
        let compiled = Compiled::new(native, handle).map_err(|_| CompileError::NotJittable)?;
        self.last_handle = raw;
        self.live |= 1 << raw;
        Ok(compiled)
    }

    /// Whether `handle` is handed out and not yet released.
    pub(crate) fn is_live(&self, handle: CodeHandle) -> bool {
        handle.get() < 64 && self.live & (1 << handle.get()) != 0
    }

    /// Handles handed out and not yet released.
    pub(crate) fn live(&self) -> u32 {
        self.live.count_ones()
    }

    /// Handles handed out so far.
    pub(crate) fn handed_out(&self) -> u32 {
        self.last_handle as u32
    }

    /// The compiles that returned code, oldest first (the first 16).
    pub(crate) fn records(&self) -> impl Iterator<Item = CompileRecord> + '_ {
        self.log.iter().flatten().copied()
    }

    /// The latest compile of `function` (by name).
    pub(crate) fn latest(&self, function: &str) -> Option<CompileRecord> {
        self.records().filter(|record| record.function == function).last()
    }
}

impl Compiler<&'static Bead> for CanaryJit<'_> {
    type Error = CompileError;

    fn compile(&mut self, request: &CompileRequest<'_, &'static Bead>) -> Result<Compiled, CompileError> {
        let function = Function::of(request.bead.core_handle()).ok_or(CompileError::UnknownFunction)?;
        let native = function.native.ok_or(CompileError::NotJittable)?;
        if let JobKind::Osr { site } = request.kind
            && self.osr_table.lookup(site).is_none()
        {
            return Err(CompileError::NoOsrEntry(site));
        }
        let mut compiled = self.code(native as *mut ())?;
        if let JobKind::Osr { .. } = request.kind {
            // The table and the static entries it views outlive this JIT
            // (`'t`); the canary releases all code before the table goes.
            // SAFETY: `with_osr` 1: valid and never written until release; 2: one thread.
            compiled = unsafe { compiled.with_osr(self.osr_table.into()) };
        }
        let record = CompileRecord { function: function.name, handle: compiled.handle(), kind: request.kind };
        if let Some(slot) = self.log.get_mut(self.compiles as usize) {
            *slot = Some(record);
        }
        self.compiles += 1;
        Ok(compiled)
    }

    fn release(&mut self, code: CodeHandle) {
        if self.is_live(code) {
            self.live &= !(1 << code.get());
            self.released += 1;
        } else {
            self.bad_releases += 1;
        }
    }
}
