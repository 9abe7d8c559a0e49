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
//! Eviction goes through the bead: a bailout whose policy pauses
//! recompilation for the configured number of calls. The code is retired
//! like any other deopt, so it is freed only once no thread can run it. The
//! bailout counts toward the bead's `bailout_count`; the eviction's guard
//! id is [`EVICTION_GUARD`].
//!
//! kiln-std's `JitBackend::compile` returns only an entry, so OSR entries,
//! which a `BackendAdapter` publishes from the factory's `OsrBuild`, are
//! compiled ahead by [`CraneliftBackend::prepare`] inside the factory.

use std::sync::{Arc, Weak};

use kiln_std::{BailoutInfo, Bead, DeoptDecision, DeoptPolicy, JitBackend};

use crate::backend::CraneliftBackend;
use crate::def::{DefKind, FunctionDef};
use crate::error::CompileError;
use crate::unit::Owner;

/// The guard id of the bailout that evicts code for the budget.
pub const EVICTION_GUARD: u32 = u32::MAX;

impl JitBackend for CraneliftBackend {
    type FunctionDef = FunctionDef;
    type Error = CompileError;

    fn compile(&self, bead: &Arc<Bead>, def: FunctionDef) -> Result<*mut (), CompileError> {
        let owner = Owner::Std(Arc::downgrade(bead));
        let id = match def.kind {
            DefKind::Source(source) => self.shared.compile_unit(&source, owner)?,
            DefKind::Prepared(prepared) => self.adopt(prepared, owner)?,
            DefKind::Failed(error) => return Err(error),
        };
        let cache = self.shared.cache();
        Ok(cache.get(id).map_or(std::ptr::null_mut(), |unit| unit.entry as *mut ()))
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

/// Pauses promotion for a number of calls: what an eviction decides.
struct EvictionPause(u32);

impl DeoptPolicy for EvictionPause {
    fn on_bailout(&self, bead: &Bead, _info: &BailoutInfo, _bailout_count: u32) -> DeoptDecision {
        DeoptDecision::PauseRecompile { until_invocations: bead.invocation_count().saturating_add(self.0) }
    }
}

/// Sends `bead`'s code at `entry` back to the interpreter. True if the code
/// is on its way to release (evicted now, or its bead is gone); false if
/// it is not the bead's installed code or kiln refused (the unit may be
/// chosen again later).
pub(crate) fn evict_through_bead(bead: &Weak<Bead>, entry: usize, pause: u32) -> bool {
    // A dropped bead retired its code already.
    let Some(bead) = bead.upgrade() else { return true };
    let installed = |bead: &Bead| bead.compiled().map(|code| code as usize) == Some(entry);
    if !installed(&bead) {
        return false;
    }
    let info = BailoutInfo { guard_id: EVICTION_GUARD, pc_offset: 0, generation: bead.generation() };
    bead.on_bailout(info, &EvictionPause(pause));
    !installed(&bead)
}
