//! [`LlvmCompiler`]: kiln-core's [`Compiler`] on LLVM, for hosts that drive
//! a kiln-core `Broker` themselves — alone, or as the optimizing tier of a
//! [`TierDispatch`](crate::TierDispatch).
//!
//! The host's `define` callback turns a [`CompileRequest`] into a
//! [`FunctionDef`] (typically through the bead's `core_handle()`); for
//! `JobKind::Osr` jobs it declares the OSR entries it wants. The unit's
//! tagged id is the `CodeHandle`; its OSR table is published with the entry
//! and lives until kiln-core releases the handle, which removes the unit's
//! resource tracker. `define` runs under `catch_unwind`: a panic is a failed
//! compile. Clones share the backend and the book of units and compile in
//! parallel (LLVM runs outside every lock).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};

use kiln_core::{BeadRef, CodeHandle, CompileRequest, Compiled, Compiler, DynBroker};

use crate::backend::{LlvmBackend, handle_of, id_of};
use crate::def::FunctionDef;
use crate::error::LlvmError;
use crate::unit::Owner;

/// An [`LlvmBackend`] plus the host's `define` callback, as a kiln-core
/// [`Compiler`] over bead handles `H`.
pub struct LlvmCompiler<H, F> {
    backend: LlvmBackend,
    define: F,
    /// The bead of every unit this compiler (or a clone) made and kiln has
    /// not released.
    beads: Arc<Mutex<HashMap<u64, H>>>,
}

impl<H, F: Clone> Clone for LlvmCompiler<H, F> {
    fn clone(&self) -> Self {
        Self { backend: self.backend.clone(), define: self.define.clone(), beads: Arc::clone(&self.beads) }
    }
}

impl<H, F> std::fmt::Debug for LlvmCompiler<H, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlvmCompiler")
            .field("backend", &self.backend)
            .field("units", &self.units().len())
            .finish_non_exhaustive()
    }
}

impl<H, F> LlvmCompiler<H, F> {
    /// Compiles with `backend`, asking `define` what each job's function is.
    pub fn new(backend: LlvmBackend, define: F) -> Self
    where
        F: FnMut(&CompileRequest<'_, H>) -> Result<FunctionDef, LlvmError>,
    {
        Self { backend, define, beads: Arc::default() }
    }

    fn units(&self) -> MutexGuard<'_, HashMap<u64, H>> {
        self.beads.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The backend.
    pub fn backend(&self) -> &LlvmBackend {
        &self.backend
    }

    /// Units compiled by this compiler that kiln has not released yet.
    pub fn live_units(&self) -> usize {
        self.units().len()
    }
}

impl<H: BeadRef, F> LlvmCompiler<H, F> {
    /// Carries out the budget's evictions of this compiler's code through
    /// `broker` (`Broker::evict`: no bailout counted, recompile paused).
    /// Returns how many were evicted. Call it after `pump`.
    pub fn evict(&mut self, broker: &dyn DynBroker<H>) -> usize {
        // The book is not held while calling the broker: the broker calls
        // `release` (which takes the book) with its own lock held.
        let victims: Vec<(u64, usize, H)> = {
            let units = self.units();
            let victims = self.backend.shared.cache().take_core_victims(|id| units.contains_key(&id));
            victims.into_iter().map(|(id, entry)| (id, entry, units[&id].clone())).collect()
        };
        let pause = NonZeroU32::new(self.backend.shared.eviction_pause).unwrap_or(NonZeroU32::MIN);
        let mut evicted = 0;
        for (id, entry, bead) in victims {
            let installed = bead.bead().compiled().map(|code| code.as_ptr() as usize) == Some(entry);
            if installed && broker.evict(&bead, pause).is_ok() {
                evicted += 1;
            } else {
                self.backend.shared.cache().unevict(id);
            }
        }
        evicted
    }
}

impl<H, F> Compiler<H> for LlvmCompiler<H, F>
where
    H: BeadRef,
    F: FnMut(&CompileRequest<'_, H>) -> Result<FunctionDef, LlvmError>,
{
    type Error = LlvmError;

    fn compile(&mut self, request: &CompileRequest<'_, H>) -> Result<Compiled, LlvmError> {
        // `define` is host code run wherever the host pumps: a panic is a
        // failed compile, not an unwind through kiln-core.
        let def = match catch_unwind(AssertUnwindSafe(|| (self.define)(request))) {
            Ok(def) => def?,
            Err(payload) => {
                let message = crate::codegen::panic_message(&payload);
                let error = LlvmError::Panicked { function: "(define callback)".to_owned(), message };
                return Err(self.backend.shared.failed(error));
            }
        };
        let id = self.backend.shared.compile_unit(&def, Owner::Core)?;
        self.units().insert(id, request.bead.clone());
        let cache = self.backend.shared.cache();
        let unit = cache.get(id).expect("just compiled");
        let compiled = Compiled::new(unit.entry as *mut (), handle_of(id)).expect("linked entries are non-null");
        Ok(match &unit.table {
            // The table and its entries live in the unit until `release(handle)`
            // frees it (or kiln hands an unpublished handle back to `release`).
            // SAFETY: `with_osr` (1) valid until release, (2) immutable and Sync.
            Some(table) => unsafe { compiled.with_osr(NonNull::from(&**table)) },
            None => compiled,
        })
    }

    fn release(&mut self, code: CodeHandle) {
        let Some(id) = id_of(code) else {
            log::warn!(target: "kiln", "llvm: release of a handle that is not LLVM's: {code:?}");
            return;
        };
        self.units().remove(&id);
        // SAFETY: (1) kiln-core calls `release` exactly once per handle, and
        // only once the code was retired and quiescence declared (or was
        // never published): no thread runs it or reads its OSR table.
        unsafe { self.backend.shared.free_unit(id) };
    }
}
