//! kiln-std's [`JitBackend`] for [`LlvmBackend`]: the backend behind a
//! `BackendAdapter`, compiling on kiln-std's broker threads (feature
//! `kiln-std`).
//!
//! Each compile is a unit of its own, remembered with a weak link to its
//! bead. kiln-std calls [`JitBackend::release`] with the entry once the
//! code was retired and quiescence declared; the unit's resource tracker
//! is removed then. Budget evictions go through the bead (`Bead::evict`),
//! so evicted code is freed only once no thread can run it; a compile only
//! chooses them, and [`JitBackend::after_compile`], which kiln-std runs
//! once the compile is over, evicts them (never from inside a compile). A
//! backend wrapping this one must forward `after_compile`, or evictions
//! wait. OSR entries compiled with a function come back from
//! [`JitBackend::compile_with_osr`] and are published with the entry.

use std::sync::Arc;

use kiln_backend_kit::Owner;
use kiln_std::{Bead, JitBackend, OsrEntry};

use crate::backend::LlvmBackend;
use crate::def::FunctionDef;
use crate::error::LlvmError;

impl JitBackend for LlvmBackend {
    type FunctionDef = FunctionDef;
    type Error = LlvmError;

    fn compile(&self, bead: &Arc<Bead>, def: FunctionDef) -> Result<*mut (), LlvmError> {
        self.compile_with_osr(bead, def).map(|(entry, _)| entry)
    }

    fn compile_with_osr(&self, bead: &Arc<Bead>, def: FunctionDef) -> Result<(*mut (), Vec<OsrEntry>), LlvmError> {
        let id = self.shared.compile_unit(&def, Owner::Std(Arc::downgrade(bead)))?;
        // Present unless a racing release freed it (the budget never evicts
        // the unit just compiled, and evicts others only after the compile).
        Ok(self.shared.memory.published(id, true))
    }

    fn after_compile(&self, _bead: &Arc<Bead>) {
        self.shared.memory.evict_bead_victims();
    }

    fn release(&self, code: *mut ()) {
        if let Some(id) = self.shared.memory.unit_of_entry(code) {
            // SAFETY: (1) kiln-std calls `release` once per entry this backend
            // returned, after the code was retired and quiescence declared.
            unsafe { self.shared.free_unit(id) };
        }
    }
}
