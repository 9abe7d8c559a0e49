//! Code units: one compile's code, freed as a whole.
//!
//! A unit is a function's normal entry and its OSR entries: kiln publishes
//! and retires them together as one code object, so they are freed
//! together. What holds the code is the backend's ([`UnitCode`]: a
//! Cranelift `JITModule`, since cranelift-jit frees only whole modules; an
//! ORC resource tracker); the books around it are the same for every
//! backend.

use std::sync::atomic::AtomicU8;

use kiln_core::{OsrEntry, OsrTable};

/// The backend's handle on one unit's code memory.
pub trait UnitCode {
    /// Frees the code memory. `name` is the unit's function, for the log.
    ///
    /// # Safety
    ///
    /// 1. No thread runs, or will call, any code of the unit.
    unsafe fn free(self, name: &str);
}

/// Who can send a unit's function back to the interpreter, should the
/// budget need the room.
#[derive(Debug)]
pub enum Owner {
    /// Compiled through the standalone API: the host owns it; never evicted.
    Host,
    /// Compiled for a kiln-std bead (evicted through the bead, by the
    /// backend's post-compile hook). Feature `std-adapter`.
    #[cfg(feature = "std-adapter")]
    #[cfg_attr(docsrs, doc(cfg(feature = "std-adapter")))]
    Std(std::sync::Weak<kiln_std::Bead>),
    /// Compiled by the backend's kiln-core compiler (evicted by its
    /// `evict`, through the kiln-core broker; see [`UnitBook`](crate::UnitBook)).
    Compiler,
}

/// What a finished compile hands over: the code and where it lies.
#[derive(Debug)]
pub struct Code<C> {
    /// The backend's handle on the code memory.
    pub code: C,
    /// The normal entry's address.
    pub entry: usize,
    /// The OSR entries: sorted by site, unique, non-null.
    pub osr: Vec<OsrEntry>,
    /// Code memory the unit maps (page granular).
    pub bytes: usize,
    /// The byte the code sets to 1 on every entry (only with a budget).
    pub used: Option<Box<AtomicU8>>,
}

/// One compile's code: its entries, OSR table and budget state.
pub struct Unit<C> {
    name: String,
    code: C,
    entry: usize,
    /// Sorted by site; `table` views it.
    osr: Box<[OsrEntry]>,
    /// A view of `osr` for kiln-core (see `Compiled::with_osr`); boxed so
    /// its address survives the unit moving inside the cache's map.
    table: Option<Box<OsrTable<'static>>>,
    bytes: usize,
    pub(crate) used: Option<Box<AtomicU8>>,
    /// Budget sweeps since the code last ran.
    pub(crate) idle: u32,
    /// Sent back to the interpreter; waiting for kiln to release it.
    pub(crate) evicted: bool,
    pub(crate) owner: Owner,
}

impl<C> std::fmt::Debug for Unit<C> {
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

impl<C: UnitCode> Unit<C> {
    /// Wraps finished code for `owner`.
    ///
    /// # Panics
    ///
    /// If `code.osr` is not sorted by site, unique and non-null (the
    /// backend's codegen builds it so).
    pub fn new(name: String, code: Code<C>, owner: Owner) -> Self {
        let Code { code, entry, osr, bytes, used } = code;
        let osr = osr.into_boxed_slice();
        let table = (!osr.is_empty()).then(|| {
            // The table never outlives the unit inside the kit; outside it is
            // handed only to kiln-core under `with_osr` (until release drops the unit).
            // SAFETY: the boxed slice's buffer neither moves nor changes until the unit drops.
            let entries: &'static [OsrEntry] = unsafe { &*std::ptr::from_ref::<[OsrEntry]>(&osr) };
            Box::new(OsrTable::new(entries).expect("codegen builds sorted, unique, non-null OSR entries"))
        });
        Self { name, code, entry, osr, table, bytes, used, idle: 0, evicted: false, owner }
    }

    /// Frees the unit's code memory.
    ///
    /// # Safety
    ///
    /// 1. No thread runs, or will call, any entry of this unit.
    /// 2. No thread reads its OSR table any more.
    pub unsafe fn free(self) {
        let Self { name, code, table, osr, .. } = self;
        drop(table);
        drop(osr);
        // SAFETY: (1) no code of the unit runs or will be called.
        unsafe { code.free(&name) };
    }
}

impl<C> Unit<C> {
    /// The function's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The normal entry's address.
    pub fn entry(&self) -> usize {
        self.entry
    }

    /// The OSR entries, sorted by site.
    pub fn osr(&self) -> &[OsrEntry] {
        &self.osr
    }

    /// The OSR entries as kiln-core's table (`None` without any); valid
    /// until the unit is freed.
    pub fn osr_table(&self) -> Option<&OsrTable<'static>> {
        self.table.as_deref()
    }

    /// Code memory the unit maps.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Who can evict it.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Hands the unit to `owner` (a unit compiled ahead, adopted by a bead).
    pub fn set_owner(&mut self, owner: Owner) {
        self.owner = owner;
    }
}
