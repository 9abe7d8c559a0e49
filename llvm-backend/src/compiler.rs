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

use kiln_backend_kit::{Owner, UnitBook};
use kiln_core::{BeadRef, CodeHandle, CompileRequest, Compiled, Compiler, DynBroker};

use crate::backend::{LlvmBackend, handle_of, id_of};
use crate::def::FunctionDef;
use crate::error::LlvmError;

/// An [`LlvmBackend`] plus the host's `define` callback, as a kiln-core
/// [`Compiler`] over bead handles `H`.
pub struct LlvmCompiler<H, F> {
    backend: LlvmBackend,
    define: F,
    /// The bead of every unit this compiler (or a clone) made and kiln has
    /// not released.
    book: UnitBook<H>,
}

impl<H, F: Clone> Clone for LlvmCompiler<H, F> {
    fn clone(&self) -> Self {
        Self { backend: self.backend.clone(), define: self.define.clone(), book: self.book.clone() }
    }
}

impl<H, F> std::fmt::Debug for LlvmCompiler<H, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlvmCompiler")
            .field("backend", &self.backend)
            .field("units", &self.book.len())
            .finish_non_exhaustive()
    }
}

impl<H, F> LlvmCompiler<H, F> {
    /// Compiles with `backend`, asking `define` what each job's function is.
    pub fn new(backend: LlvmBackend, define: F) -> Self
    where
        F: FnMut(&CompileRequest<'_, H>) -> Result<FunctionDef, LlvmError>,
    {
        Self { backend, define, book: UnitBook::default() }
    }

    /// The backend.
    pub fn backend(&self) -> &LlvmBackend {
        &self.backend
    }

    /// Units compiled by this compiler that kiln has not released yet.
    pub fn live_units(&self) -> usize {
        self.book.len()
    }
}

impl<H: BeadRef, F> LlvmCompiler<H, F> {
    /// Carries out the budget's evictions of this compiler's code through
    /// `broker` (`Broker::evict`: no bailout counted, recompile paused).
    /// Returns how many were evicted. Call it after `pump`.
    pub fn evict(&mut self, broker: &dyn DynBroker<H>) -> usize {
        self.book.evict(&self.backend.shared.memory, broker)
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
        let memory = &self.backend.shared.memory;
        let def = memory.run_define(|| (self.define)(request))?;
        let id = self.backend.shared.compile_unit(&def, Owner::Compiler)?;
        Ok(self.book.publish(memory, id, handle_of(id), request.bead.clone()))
    }

    fn release(&mut self, code: CodeHandle) {
        let Some(id) = id_of(code) else {
            log::warn!(target: "kiln", "llvm: release of a handle that is not LLVM's: {code:?}");
            return;
        };
        self.book.forget(id);
        // SAFETY: (1) kiln-core calls `release` exactly once per handle, and
        // only once the code was retired and quiescence declared (or was
        // never published): no thread runs it or reads its OSR table.
        unsafe { self.backend.shared.free_unit(id) };
    }
}
