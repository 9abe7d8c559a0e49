//! Code units: one compile's code, freed as a whole.
//!
//! A unit is the function's normal entry and its OSR entries, published
//! and retired together as one kiln code object, linked under one ORC
//! resource tracker. Freeing the unit removes the tracker, which returns
//! its code memory to the process.

use std::sync::atomic::AtomicU8;

use kiln_core::{OsrEntry, OsrTable};

use crate::orc::Tracker;

/// Who can send a unit's function back to the interpreter, should the
/// budget need the room.
#[derive(Debug)]
pub(crate) enum Owner {
    /// Compiled through the standalone API: the host owns it; never evicted.
    Host,
    /// Compiled for a kiln-std bead (evicted through the bead).
    #[cfg(feature = "kiln-std")]
    Std(std::sync::Weak<kiln_std::Bead>),
    /// Compiled by an [`LlvmCompiler`](crate::LlvmCompiler) (evicted by
    /// its `evict`, through the kiln-core broker).
    Core,
}

/// One compile's code: its tracker, entries, OSR table and budget state.
pub(crate) struct Unit {
    pub(crate) name: String,
    tracker: Tracker,
    pub(crate) entry: usize,
    /// Sorted by site; `table` views it.
    pub(crate) osr: Box<[OsrEntry]>,
    /// A view of `osr` for kiln-core (see `Compiled::with_osr`); boxed so
    /// its address survives the unit moving inside the cache's map.
    pub(crate) table: Option<Box<OsrTable<'static>>>,
    /// Code memory the unit maps.
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
            .field("evicted", &self.evicted)
            .finish_non_exhaustive()
    }
}

/// What a linked unit is made of.
pub(crate) struct Linked {
    pub(crate) tracker: Tracker,
    pub(crate) entry: usize,
    /// Sorted by site, unique, non-null.
    pub(crate) osr: Vec<OsrEntry>,
    pub(crate) bytes: usize,
    pub(crate) used: Option<Box<AtomicU8>>,
}

impl Unit {
    /// Wraps linked code.
    pub(crate) fn new(name: String, linked: Linked, owner: Owner) -> Self {
        let Linked { tracker, entry, osr, bytes, used } = linked;
        let osr = osr.into_boxed_slice();
        let table = (!osr.is_empty()).then(|| {
            // The table never outlives the unit inside the crate; outside it is
            // handed only to kiln-core under `with_osr` (until release drops the unit).
            // SAFETY: the boxed slice's buffer neither moves nor changes until the unit drops.
            let entries: &'static [OsrEntry] = unsafe { &*std::ptr::from_ref::<[OsrEntry]>(&osr) };
            Box::new(OsrTable::new(entries).expect("codegen declares sorted, unique OSR entries, linked non-null"))
        });
        Self { name, tracker, entry, osr, table, bytes, used, idle: 0, evicted: false, owner }
    }

    /// Frees the unit's code memory.
    ///
    /// # Safety
    ///
    /// 1. No thread runs, or will call, any entry of this unit.
    /// 2. No thread reads its OSR table any more.
    pub(crate) unsafe fn free(self) {
        let Self { name, tracker, table, osr, .. } = self;
        drop(table);
        drop(osr);
        // SAFETY: (1) no code of the unit runs or will be called.
        if let Err(message) = unsafe { tracker.remove() } {
            log::warn!(target: "kiln", "llvm: freeing `{name}`: {message}");
        }
    }
}
