//! kiln-std's [`JitBackend`] for [`LlvmBackend`]: the backend behind a
//! `BackendAdapter`, compiling on kiln-std's broker threads (feature
//! `kiln-std`).
//!
//! Each compile is a unit of its own, remembered with a weak link to its
//! bead. kiln-std calls [`JitBackend::release`] with the entry once the
//! code was retired and quiescence declared; the unit's resource tracker
//! is removed then. Budget evictions go through the bead (`Bead::evict`),
//! so evicted code is freed only once no thread can run it. OSR entries
//! compiled with a function come back from
//! [`JitBackend::compile_with_osr`] and are published with the entry.

use std::sync::{Arc, Weak};

use kiln_std::{Bead, JitBackend, OsrEntry};

use crate::backend::LlvmBackend;
use crate::def::FunctionDef;
use crate::error::LlvmError;
use crate::unit::Owner;

impl JitBackend for LlvmBackend {
    type FunctionDef = FunctionDef;
    type Error = LlvmError;

    fn compile(&self, bead: &Arc<Bead>, def: FunctionDef) -> Result<*mut (), LlvmError> {
        self.compile_with_osr(bead, def).map(|(entry, _)| entry)
    }

    fn compile_with_osr(&self, bead: &Arc<Bead>, def: FunctionDef) -> Result<(*mut (), Vec<OsrEntry>), LlvmError> {
        let id = self.shared.compile_unit(&def, Owner::Std(Arc::downgrade(bead)))?;
        let cache = self.shared.cache();
        // Present unless the budget evicted it already (it never evicts the
        // unit just compiled) or a racing release freed it.
        Ok(cache.get(id).map_or((std::ptr::null_mut(), Vec::new()), |unit| (unit.entry as *mut (), unit.osr.to_vec())))
    }

    fn release(&self, code: *mut ()) {
        let id = self.shared.cache().id_of_entry(code as usize);
        match id {
            // SAFETY: (1) kiln-std calls `release` once per entry this backend
            // returned, after the code was retired and quiescence declared.
            Some(id) => _ = unsafe { self.shared.free_unit(id) },
            None => log::warn!(target: "kiln", "llvm: release of unknown code {code:p}"),
        }
    }
}

/// Sends `bead`'s code at `entry` back to the interpreter. True if the code
/// is on its way to release (evicted now, or its bead is gone).
pub(crate) fn evict_through_bead(bead: &Weak<Bead>, entry: usize, pause: u32) -> bool {
    let Some(bead) = bead.upgrade() else { return true };
    let installed = |bead: &Bead| bead.compiled().map(|code| code as usize) == Some(entry);
    if !installed(&bead) {
        return false;
    }
    bead.evict(pause);
    !installed(&bead)
}
