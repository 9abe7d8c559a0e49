//! kiln-std's [`JitBackend`] for [`CraneliftBackend`]: the backend behind a
//! `BackendAdapter` (or a `TieredAdapter` tier), compiling on kiln-std's
//! broker threads.
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

use std::sync::{Arc, Weak};

use kiln_std::{Bead, JitBackend, OsrEntry};

use crate::backend::CraneliftBackend;
use crate::def::{DefKind, FunctionDef};
use crate::error::CompileError;
use crate::unit::Owner;

impl JitBackend for CraneliftBackend {
    type FunctionDef = FunctionDef;
    type Error = CompileError;

    fn compile(&self, bead: &Arc<Bead>, def: FunctionDef) -> Result<*mut (), CompileError> {
        self.compile_with_osr(bead, def).map(|(entry, _)| entry)
    }

    fn compile_with_osr(&self, bead: &Arc<Bead>, def: FunctionDef) -> Result<(*mut (), Vec<OsrEntry>), CompileError> {
        let owner = Owner::Std(Arc::downgrade(bead));
        let (id, adopted) = match def.kind {
            DefKind::Source(source) => (self.shared.compile_unit(&source, owner)?, false),
            DefKind::Prepared(prepared) => (self.adopt(prepared, owner)?, true),
            DefKind::Failed(error) => return Err(error),
        };
        let cache = self.shared.cache();
        let unit = cache.get(id);
        let entry = unit.map_or(std::ptr::null_mut(), |unit| unit.entry as *mut ());
        // A prepared unit's entries already travelled in the factory's
        // `OsrBuild::osr`; report only what this call compiled.
        let osr = match unit {
            Some(unit) if !adopted => unit.osr.to_vec(),
            _ => Vec::new(),
        };
        Ok((entry, osr))
    }

    fn after_compile(&self, _bead: &Arc<Bead>) {
        // Every queued kiln-std victim, whichever compile chose it (another
        // worker's, a standalone `compile_function`'s).
        let victims = self.shared.cache().take_bead_victims();
        for (id, entry, bead) in victims {
            log::debug!(target: "kiln", "cranelift: code budget reached, evicting unit {id}");
            if !evict_through_bead(&bead, entry, self.shared.eviction_pause) {
                self.shared.cache().unevict(id);
            }
        }
    }

    fn release(&self, code: *mut ()) {
        let id = self.shared.cache().id_of_entry(code as usize);
        match id {
            // SAFETY: (1) kiln-std calls `release` once per entry this backend
            // returned, after the code was retired and quiescence declared:
            // no thread runs it or reads its OSR table.
            Some(id) => _ = unsafe { self.shared.free_unit(id) },
            None => log::warn!(target: "kiln", "cranelift: release of unknown code {code:p}"),
        }
    }
}

/// Sends `bead`'s code at `entry` back to the interpreter. True if the code
/// is on its way to release (evicted now, or its bead is gone); false if
/// it is not the bead's installed code or kiln refused (the unit may be
/// chosen again later).
fn evict_through_bead(bead: &Weak<Bead>, entry: usize, pause: u32) -> bool {
    // A dropped bead retired its code already.
    let Some(bead) = bead.upgrade() else { return true };
    let installed = |bead: &Bead| bead.compiled().map(|code| code as usize) == Some(entry);
    if !installed(&bead) {
        return false;
    }
    bead.evict(pause);
    !installed(&bead)
}
