//! Code units: how compiled code is grouped into Cranelift modules.
//!
//! cranelift-jit frees memory only a whole `JITModule` at a time, and a
//! module's `finalize_definitions` seals the pages it mapped so far (they
//! become read+execute; later code goes to new pages). kiln hands code out
//! one function at a time (kiln-core's `Compiler::compile`, kiln-std's
//! `JitBackend::compile` each return callable code), so functions from
//! different compiles could never share a page anyway. kiln-cranelift
//! therefore makes **one module per compile**: a *unit* holds the
//! function's normal entry and its OSR entries (they are published and
//! retired together, as one kiln code object), and the unit's module is
//! freed when kiln releases that code object. Nothing waits on another
//! function's retirement, and a unit costs at least one page of code.

use std::sync::atomic::AtomicU8;

use cranelift_jit::JITModule;
use kiln_core::{OsrEntry, OsrTable};

use crate::codegen::Built;

/// Who can send a unit's function back to the interpreter, should the
/// budget need the room.
#[derive(Debug)]
pub(crate) enum Owner {
    /// Compiled through the standalone API: the host owns it; never evicted.
    Host,
    /// Compiled for a kiln-std bead (evicted through the bead, by the
    /// post-compile hook).
    #[cfg(feature = "std-adapter")]
    Std(std::sync::Weak<kiln_std::Bead>),
    /// Compiled by a [`CraneliftCompiler`](crate::CraneliftCompiler) for a
    /// kiln-core broker (evicted by the compiler's `evict`, through that
    /// broker).
    Compiler,
}

/// One compile's code: its module, entries, OSR table and budget state.
pub(crate) struct Unit {
    pub(crate) name: String,
    module: JITModule,
    pub(crate) entry: usize,
    /// Sorted by site; `table` views it.
    pub(crate) osr: Box<[OsrEntry]>,
    /// A view of `osr` for kiln-core (see `Compiled::with_osr`); boxed so
    /// its address survives the unit moving inside the cache's map.
    pub(crate) table: Option<Box<OsrTable<'static>>>,
    /// Code memory the module maps.
    pub(crate) bytes: usize,
    /// Set to 1 by the code on every entry (only with a budget).
    pub(crate) used: Option<Box<AtomicU8>>,
    /// Budget sweeps since the code last ran.
    pub(crate) idle: u32,
    /// Sent back to the interpreter; waiting for kiln to release it.
    pub(crate) evicted: bool,
    pub(crate) owner: Owner,
}

impl std::fmt::Debug for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unit")
            .field("name", &self.name)
            .field("entry", &format_args!("{:#x}", self.entry))
            .field("osr", &self.osr)
            .field("bytes", &self.bytes)
            .field("idle", &self.idle)
            .field("evicted", &self.evicted)
            .finish_non_exhaustive()
    }
}

impl Unit {
    /// Wraps a finished module.
    pub(crate) fn new(name: String, built: Built, owner: Owner) -> Self {
        let Built { module, entry, osr, bytes, used } = built;
        let osr = osr.into_boxed_slice();
        let table = (!osr.is_empty()).then(|| {
            // The table never outlives the unit inside the crate; outside it is
            // handed only to kiln-core under `with_osr` (until release drops the unit).
            // SAFETY: the boxed slice's buffer neither moves nor changes until the unit drops.
            let entries: &'static [OsrEntry] = unsafe { &*std::ptr::from_ref::<[OsrEntry]>(&osr) };
            // Sorted, de-duplicated and non-null by construction (`codegen`).
            Box::new(OsrTable::new(entries).expect("codegen builds sorted, unique, non-null OSR entries"))
        });
        Self { name, module, entry, osr, table, bytes, used, idle: 0, evicted: false, owner }
    }

    /// Frees the unit's code memory.
    ///
    /// # Safety
    ///
    /// 1. No thread runs, or will call, any entry of this unit.
    /// 2. No thread reads its OSR table any more.
    pub(crate) unsafe fn free(self) {
        let Self { module, table, osr, .. } = self;
        drop(table);
        drop(osr);
        // SAFETY: (1) no code of the module runs or will be called.
        unsafe { module.free_memory() };
    }
}
