//! The kiln-std adapter (feature `std-adapter`, on by default): kiln-std's
//! [`JitBackend`] for [`CraneliftBackend`], the backend behind a
//! `BackendAdapter`, compiling on kiln-std's broker threads; and
//! [`CraneliftBackend::prepare`], which compiles ahead into a kiln-std
//! `OsrBuild`. Everything in the crate that names kiln-std is here, but for
//! the few pieces it needs elsewhere, gated on the same feature
//! (`Owner::Std`, the prepared kind of `FunctionDef`, the cache's hand-out
//! of kiln-std victims); without the feature kiln-std is not built at all.
//!
//! Each compile is a unit of its own (see `unit`), remembered with a weak
//! link to its bead. kiln-std calls [`JitBackend::release`] with the entry
//! once the code was retired and quiescence declared; the unit's module is
//! freed then. (A `Beadie` nobody declares quiescence for never releases
//! code — kiln-std cannot prove it idle — so neither memory nor the budget's
//! evictions are returned in that mode.)
//!
//! Eviction goes through the bead (`Bead::evict`): recompilation pauses for
//! the configured number of calls and the code is retired like any other
//! deopt, so it is freed only once no thread can run it. It is not a
//! bailout: the bead's `bailout_count` is untouched. A compile only chooses
//! the victims (it runs inside kiln's compile, which must not call back into
//! kiln); [`JitBackend::after_compile`], which kiln-std runs once the
//! compile is over and its result published, evicts them. A backend
//! wrapping this one must forward `after_compile`, or evictions wait.
//!
//! OSR entries compiled with a function come back from
//! [`JitBackend::compile_with_osr`], so `on_invoke_osr` with an empty
//! `OsrBuild::osr` publishes them with the entry. (A factory may also
//! compile ahead with [`CraneliftBackend::prepare`] and list the entries
//! itself; they are then not reported twice.)

use std::sync::Arc;

use kiln_backend_kit::Owner;
use kiln_std::{Bead, JitBackend, OsrBuild, OsrEntry};

use crate::backend::{CraneliftBackend, Shared};
use crate::def::{DefKind, FunctionDef};
use crate::error::CraneliftError;

#[cfg_attr(docsrs, doc(cfg(feature = "std-adapter")))]
impl CraneliftBackend {
    /// Compiles `def` now (on the calling thread: call it from a kiln-std
    /// compile factory, which runs on the broker thread) and returns it as
    /// a kiln-std `OsrBuild` carrying its OSR entries, for
    /// `BackendAdapter::on_invoke_osr`, for factories that want the OSR
    /// entries in hand (usually unnecessary: `JitBackend::compile_with_osr`
    /// publishes them from a plain definition). The returned definition
    /// carries the compiled unit, and compiling it hands the unit to the
    /// bead. A failed compile is carried too and reported by that compile.
    /// Dropped uncompiled, the unit is freed — so the entries in `osr` are
    /// valid only until then. (Feature `std-adapter`.)
    pub fn prepare(&self, def: FunctionDef) -> OsrBuild<FunctionDef> {
        let source = match def.kind {
            DefKind::Source(source) => source,
            kind @ DefKind::Prepared(_) => return OsrBuild { def: FunctionDef { kind }, osr: Vec::new() },
        };
        match self.shared.compile_unit(&source, Owner::Host) {
            Ok(id) => {
                let osr = self.shared.memory.cache().get(id).map(|unit| unit.osr().to_vec()).unwrap_or_default();
                let sites = osr.iter().map(|entry| entry.site).collect();
                let prepared = PreparedUnit::new(Arc::clone(&self.shared), id, source.name, sites);
                OsrBuild { def: FunctionDef { kind: DefKind::Prepared(Ok(prepared)) }, osr }
            }
            Err(error) => OsrBuild { def: FunctionDef { kind: DefKind::Prepared(Err(error)) }, osr: Vec::new() },
        }
    }

    /// Takes a prepared unit over for `owner`.
    pub(crate) fn adopt(&self, prepared: PreparedUnit, owner: Owner) -> Result<u64, CraneliftError> {
        if !Arc::ptr_eq(&prepared.shared, &self.shared) {
            return Err(CraneliftError::ForeignDefinition);
        }
        let id = prepared.take();
        if let Some(unit) = self.shared.memory.cache().get_mut(id) {
            unit.set_owner(owner);
        }
        Ok(id)
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "std-adapter")))]
impl JitBackend for CraneliftBackend {
    type FunctionDef = FunctionDef;
    type Error = CraneliftError;

    fn compile(&self, bead: &Arc<Bead>, def: FunctionDef) -> Result<*mut (), CraneliftError> {
        self.compile_with_osr(bead, def).map(|(entry, _)| entry)
    }

    fn compile_with_osr(&self, bead: &Arc<Bead>, def: FunctionDef) -> Result<(*mut (), Vec<OsrEntry>), CraneliftError> {
        let (id, adopted) = self.compile_def(def, Owner::Std(Arc::downgrade(bead)))?;
        // A prepared unit's entries already travelled in the factory's
        // `OsrBuild::osr`; report only what this call compiled.
        Ok(self.shared.memory.published(id, !adopted))
    }

    fn after_compile(&self, _bead: &Arc<Bead>) {
        self.shared.memory.evict_bead_victims();
    }

    fn release(&self, code: *mut ()) {
        if let Some(id) = self.shared.memory.unit_of_entry(code) {
            // SAFETY: (1) kiln-std calls `release` once per entry this backend
            // returned, after the code was retired and quiescence declared:
            // no thread runs it or reads its OSR table.
            unsafe { self.shared.memory.free_unit(id) };
        }
    }
}

/// A unit compiled ahead by [`CraneliftBackend::prepare`](crate::CraneliftBackend::prepare),
/// carried inside a [`FunctionDef`](crate::FunctionDef) to kiln-std's
/// `JitBackend::compile`. Dropped unused, it frees the unit: its code was
/// never published.
pub(crate) struct PreparedUnit {
    pub(crate) shared: Arc<Shared>,
    id: Option<u64>,
    name: String,
    sites: Vec<u64>,
}

impl std::fmt::Debug for PreparedUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedUnit").field("id", &self.id).field("name", &self.name).finish_non_exhaustive()
    }
}

impl PreparedUnit {
    pub(crate) fn new(shared: Arc<Shared>, id: u64, name: String, sites: Vec<u64>) -> Self {
        Self { shared, id: Some(id), name, sites }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn osr_sites(&self) -> Vec<u64> {
        self.sites.clone()
    }

    /// Takes the unit out; the guard no longer frees it.
    pub(crate) fn take(mut self) -> u64 {
        self.id.take().expect("a prepared unit is taken once")
    }
}

impl Drop for PreparedUnit {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            // SAFETY: (1, 2) the unit was never published: its entry and OSR
            // entries went only into the `OsrBuild` this definition came in.
            unsafe { self.shared.memory.free_unit(id) };
        }
    }
}
