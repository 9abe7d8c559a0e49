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
//! compile (`CraneliftError::Panicked`, counted in `CodeStats::panicked`).
//!
//! With a `Clone` callback the compiler is `Clone`: clones share the backend
//! and the book of which bead owns which unit, and compile in parallel
//! (Cranelift runs outside every lock), so a job system can run one clone
//! per task.

use kiln_backend_kit::{Owner, UnitBook};
use kiln_core::{BeadRef, CodeHandle, CompileRequest, Compiled, Compiler, DynBroker};

use crate::backend::{CraneliftBackend, handle_of};
use crate::def::FunctionDef;
use crate::error::CraneliftError;

/// A [`CraneliftBackend`] plus the host's `define` callback, as a
/// kiln-core [`Compiler`] over bead handles `H`. `Clone` if `F` is: clones
/// compile in parallel and share one book of units.
///
/// A host that pumps a kiln-core broker itself (needs no kiln-std):
///
/// ```
/// use cranelift_codegen::ir::{InstBuilder, types::I64};
/// use kiln_core::{AlwaysRecompilePolicy, Bead, Broker, Budget, CompileRequest, NoEvents, NoPump, ThresholdPolicy};
/// use kiln_cranelift::{CraneliftCompiler, CraneliftConfig, FunctionDef};
///
/// /// `square(x) = x * x` as Cranelift IR.
/// fn square_def() -> FunctionDef {
///     FunctionDef::new("square", &[I64], &[I64], |builder, _cx| {
///         let block = builder.create_block();
///         builder.append_block_params_for_function_params(block);
///         builder.switch_to_block(block);
///         builder.seal_block(block);
///         let x = builder.block_params(block)[0];
///         let y = builder.ins().imul(x, x);
///         builder.ins().return_(&[y]);
///         Ok(())
///     })
/// }
///
/// let square = Bead::new(std::ptr::null_mut()); // one bead per function
/// let broker: Broker<&Bead, _, _> = Broker::new(ThresholdPolicy::new(100), AlwaysRecompilePolicy, NoPump, NoEvents);
/// let backend = CraneliftConfig::new().build().expect("a supported host");
/// // `define` names the function behind a job (here there is only one).
/// let mut compiler = CraneliftCompiler::new(backend, |_request: &CompileRequest<'_, &Bead>| Ok(square_def()));
///
/// let mut calls = 0;
/// let code = loop {
///     calls += 1;
///     if let Some(code) = broker.on_invoke(&&square) {
///         break code;
///     }
///     // Interpret meanwhile; here the host pumps between calls (a frame
///     // end, a worker thread), then carries out budget evictions.
///     broker.pump(&mut compiler, Budget::unlimited());
///     compiler.evict(&broker);
/// };
/// // SAFETY (example): the only code compiled for `square` is `square_def`: (i64) -> i64.
/// let native_square: extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(code.as_ptr()) };
/// assert_eq!(native_square(12), 144);
/// assert!(calls > 100);
/// // Retired code is freed once the host declares quiescence.
/// broker.quiesce(&mut compiler);
/// ```
pub struct CraneliftCompiler<H, F> {
    backend: CraneliftBackend,
    define: F,
    /// The bead of every unit this compiler (or a clone) made and kiln has
    /// not released.
    book: UnitBook<H>,
}

impl<H, F: Clone> Clone for CraneliftCompiler<H, F> {
    fn clone(&self) -> Self {
        Self { backend: self.backend.clone(), define: self.define.clone(), book: self.book.clone() }
    }
}

impl<H, F> std::fmt::Debug for CraneliftCompiler<H, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CraneliftCompiler")
            .field("backend", &self.backend)
            .field("units", &self.book.len())
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
        F: FnMut(&CompileRequest<'_, H>) -> Result<FunctionDef, CraneliftError>,
    {
        Self { backend, define, book: UnitBook::default() }
    }

    /// The backend.
    pub fn backend(&self) -> &CraneliftBackend {
        &self.backend
    }

    /// Units compiled by this compiler that kiln has not released yet.
    pub fn live_units(&self) -> usize {
        self.book.len()
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
        self.book.evict(&self.backend.shared.memory, broker)
    }
}

impl<H, F> Compiler<H> for CraneliftCompiler<H, F>
where
    H: BeadRef,
    F: FnMut(&CompileRequest<'_, H>) -> Result<FunctionDef, CraneliftError>,
{
    type Error = CraneliftError;

    fn compile(&mut self, request: &CompileRequest<'_, H>) -> Result<Compiled, CraneliftError> {
        // `define` is host code run wherever the host pumps (its own thread,
        // a frame pump, a job-system task): a panic is a failed compile,
        // not an unwind through kiln-core.
        let memory = &self.backend.shared.memory;
        let def = memory.run_define(|| (self.define)(request))?;
        let (id, _) = self.backend.compile_def(def, Owner::Compiler)?;
        Ok(self.book.publish(memory, id, handle_of(id), request.bead.clone()))
    }

    fn release(&mut self, code: CodeHandle) {
        self.book.forget(code.get() as u64);
        // SAFETY: (1) kiln-core calls `release` exactly once per handle, and
        // only once the code was retired and quiescence declared (or was
        // never published): no thread runs it or reads its OSR table.
        unsafe { self.backend.free(code) };
    }
}
