//! [`CraneliftCompiler`]: kiln-core's [`Compiler`] on Cranelift, for hosts
//! that drive a kiln-core `Broker` themselves (a frame pump, a job system,
//! a plain thread).
//!
//! kiln-core hands the compiler a [`CompileRequest`] naming the bead; the
//! host's `define` callback turns it into a [`FunctionDef`] (typically by
//! looking the function up through the bead's `core_handle()`), and for
//! `JobKind::Osr` jobs declares the OSR entries it wants. The unit's id is
//! the `CodeHandle`; its OSR table is published with the entry and lives
//! until kiln-core releases the handle, which frees the unit's module.
//!
//! The compiler cannot reach the broker while it compiles, so budget
//! evictions of kiln-core code wait in the backend until the host calls
//! [`CraneliftCompiler::evict`] with its broker (after each `pump`, say).
//!
//! The `define` callback runs under `catch_unwind`: a panic is a failed
//! compile (`CompileError::Panicked`, counted in `CodeStats::panicked`).
//!
//! With a `Clone` callback the compiler is `Clone`: clones share the backend
//! and the book of which bead owns which unit, and compile in parallel
//! (Cranelift runs outside every lock), so a job system can run one clone
//! per task.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};

use kiln_core::{BeadRef, CodeHandle, CompileRequest, Compiled, Compiler, DynBroker};

use crate::backend::CraneliftBackend;
use crate::def::{DefKind, FunctionDef};
use crate::error::CompileError;
use crate::unit::Owner;

/// A [`CraneliftBackend`] plus the host's `define` callback, as a
/// kiln-core [`Compiler`] over bead handles `H`. `Clone` if `F` is: clones
/// compile in parallel and share one book of units.
pub struct CraneliftCompiler<H, F> {
    backend: CraneliftBackend,
    define: F,
    /// The bead of every unit this compiler (or a clone) made and kiln has
    /// not released.
    beads: Arc<Mutex<HashMap<u64, H>>>,
}

impl<H, F: Clone> Clone for CraneliftCompiler<H, F> {
    fn clone(&self) -> Self {
        Self { backend: self.backend.clone(), define: self.define.clone(), beads: Arc::clone(&self.beads) }
    }
}

impl<H, F> std::fmt::Debug for CraneliftCompiler<H, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CraneliftCompiler")
            .field("backend", &self.backend)
            .field("units", &self.units().len())
            .finish_non_exhaustive()
    }
}

impl<H, F> CraneliftCompiler<H, F> {
    /// Compiles with `backend`, asking `define` what each job's function is.
    /// (The bound is here, not only on the `Compiler` impl, so that a
    /// closure's argument type is inferred: `|request| ..` needs no
    /// annotation.)
    pub fn new(backend: CraneliftBackend, define: F) -> Self
    where
        F: FnMut(&CompileRequest<'_, H>) -> Result<FunctionDef, CompileError>,
    {
        Self { backend, define, beads: Arc::default() }
    }

    fn units(&self) -> MutexGuard<'_, HashMap<u64, H>> {
        // The book is consistent at every step: a panic elsewhere while it
        // was held leaves nothing half-done.
        self.beads.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The backend.
    pub fn backend(&self) -> &CraneliftBackend {
        &self.backend
    }

    /// Units compiled by this compiler that kiln has not released yet.
    pub fn live_units(&self) -> usize {
        self.units().len()
    }
}

impl<H: BeadRef, F> CraneliftCompiler<H, F> {
    /// Carries out the budget's evictions of this compiler's code: each
    /// victim is sent back to the interpreter through `broker` (any
    /// kiln-core `Broker`, as `&dyn DynBroker`; `evict`: no bailout counted,
    /// recompile paused for the configured calls). Returns how many were
    /// evicted. Call it after `pump`; without it the budget is exceeded but
    /// nothing breaks.
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
            let bead = &bead;
            let installed = bead.bead().compiled().map(|code| code.as_ptr() as usize) == Some(entry);
            let done = installed && broker.evict(bead, pause).is_ok();
            if done {
                evicted += 1;
            } else {
                self.backend.shared.cache().unevict(id);
            }
        }
        evicted
    }
}

impl<H, F> Compiler<H> for CraneliftCompiler<H, F>
where
    H: BeadRef,
    F: FnMut(&CompileRequest<'_, H>) -> Result<FunctionDef, CompileError>,
{
    type Error = CompileError;

    fn compile(&mut self, request: &CompileRequest<'_, H>) -> Result<Compiled, CompileError> {
        // `define` is host code run wherever the host pumps (its own thread,
        // a frame pump, a job-system task): a panic is a failed compile,
        // not an unwind through kiln-core.
        let def = match catch_unwind(AssertUnwindSafe(|| (self.define)(request))) {
            Ok(def) => def?,
            Err(payload) => {
                let message = crate::codegen::panic_message(&payload);
                return Err(self
                    .backend
                    .shared
                    .failed(CompileError::Panicked { function: "(define callback)".to_owned(), message }));
            }
        };
        let id = match def.kind {
            DefKind::Source(source) => self.backend.shared.compile_unit(&source, Owner::Core)?,
            DefKind::Prepared(prepared) => self.backend.adopt(prepared, Owner::Core)?,
            DefKind::Failed(error) => return Err(error),
        };
        self.units().insert(id, request.bead.clone());
        let handle = CodeHandle::from_raw(id as usize).expect("unit ids start at 1");
        let cache = self.backend.shared.cache();
        let unit = cache.get(id).expect("just compiled");
        let compiled = Compiled::new(unit.entry as *mut (), handle).expect("Cranelift code is never at address 0");
        Ok(match &unit.table {
            // The table and its entries live in the unit until `release(handle)`
            // frees it (or kiln hands an unpublished handle back to `release`).
            // SAFETY: `with_osr` (1) valid until release, (2) immutable and Sync.
            Some(table) => unsafe { compiled.with_osr(NonNull::from(&**table)) },
            None => compiled,
        })
    }

    fn release(&mut self, code: CodeHandle) {
        self.units().remove(&(code.get() as u64));
        // SAFETY: (1) kiln-core calls `release` exactly once per handle, and
        // only once the code was retired and quiescence declared (or was
        // never published): no thread runs it or reads its OSR table.
        unsafe { self.backend.free(code) };
    }
}
