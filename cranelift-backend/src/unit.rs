//! Code units: how compiled code is grouped into Cranelift modules.
//!
//! cranelift-jit frees memory only a whole `JITModule` at a time, and a
//! module's `finalize_definitions` seals the pages it mapped so far (they
//! become read+execute; later code goes to new pages). kiln hands code out
//! one function at a time (kiln-core's `Compiler::compile`, kiln-std's
//! `JitBackend::compile` each return callable code), so functions from
//! different compiles could never share a page anyway. kiln-cranelift
//! therefore makes **one module per compile**: a *unit* (kiln-backend-kit's
//! `Unit`) holds the function's normal entry and its OSR entries (they are
//! published and retired together, as one kiln code object), and the
//! unit's module is freed when kiln releases that code object. Nothing
//! waits on another function's retirement, and a unit costs at least one
//! page of code.

use cranelift_jit::JITModule;
use kiln_backend_kit::UnitCode;

/// A unit's code: the module it was compiled into.
pub(crate) struct UnitModule(pub(crate) JITModule);

impl std::fmt::Debug for UnitModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitModule").finish_non_exhaustive()
    }
}

impl UnitCode for UnitModule {
    unsafe fn free(self, _name: &str) {
        // SAFETY: (1) by the trait's contract, no code of the module runs or
        // will be called.
        unsafe { self.0.free_memory() };
    }
}

/// The backend's code memory: units over Cranelift modules.
pub(crate) type CodeMemory = kiln_backend_kit::CodeMemory<UnitModule>;
