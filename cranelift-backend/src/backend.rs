//! `CraneliftBackend`: compiles [`FunctionDef`]s into units, hands out their
//! entries, and frees units when the host (or kiln) is done with them.
//!
//! The backend is a cheap handle (`Clone`, `Send`, `Sync`) over one shared
//! state: the target ISA, the host symbols, and the code cache behind one
//! lock that is never held while Cranelift runs (kiln-backend-kit's
//! `CodeMemory`). It is used three ways:
//!
//! - standalone: [`compile_function`](CraneliftBackend::compile_function)
//!   and the `unsafe` [`free`](CraneliftBackend::free);
//! - as kiln-std's `JitBackend` (see `jit_backend`), where kiln-std calls
//!   `release` once retired code can no longer run;
//! - as kiln-core's `Compiler` through a [`CraneliftCompiler`](crate::CraneliftCompiler).

use std::collections::BTreeMap;
use std::sync::Arc;

use cranelift_codegen::ir::Type;
use cranelift_codegen::isa::{OwnedTargetIsa, TargetIsa};
use kiln_backend_kit::{CodeStats, CompiledFunction, HostSymbol, Owner};
use kiln_core::CodeHandle;

use crate::codegen;
use crate::config::{ConfigError, CraneliftConfig};
use crate::def::{DefKind, FunctionDef, Source};
use crate::error::CraneliftError;
use crate::unit::CodeMemory;

/// The state every clone of a backend shares.
pub(crate) struct Shared {
    pub(crate) isa: OwnedTargetIsa,
    pub(crate) symbols: BTreeMap<String, HostSymbol>,
    pub(crate) page_size: usize,
    /// The units, the budget and its books (kiln-backend-kit).
    pub(crate) memory: CodeMemory,
}

impl Shared {
    /// Compiles `source` and registers the unit for `owner`; returns its
    /// id. If the budget is exceeded, the coldest units are chosen and
    /// queued for eviction, never evicted here: this runs inside a kiln
    /// compile, which must not call back into kiln. They are sent back once
    /// the compile is over, by their owner's path: kiln-std's post-compile
    /// hook (`JitBackend::after_compile`) or `CraneliftCompiler::evict`.
    pub(crate) fn compile_unit(&self, source: &Source, owner: Owner) -> Result<u64, CraneliftError> {
        let started = std::time::Instant::now();
        let built = match codegen::build(self, source) {
            Ok(built) => built,
            Err(error) => return Err(self.memory.failed(error)),
        };
        if let Err(error) = self.memory.fits_budget(&source.name, built.bytes) {
            // SAFETY: (1) the module's entries were never handed out.
            unsafe { kiln_backend_kit::UnitCode::free(built.code, &source.name) };
            self.memory.cache().failed(false);
            return Err(error);
        }
        let bytes = built.bytes;
        let registered = self.memory.register(None, source.name.clone(), built, owner);
        let (victims, resident) = (registered.victims, registered.resident);
        log::debug!(
            target: "kiln",
            "cranelift: compiled `{}` ({} OSR entries, {bytes} B of code, {resident} B resident{}) in {:.1} µs",
            source.name,
            source.osr.len(),
            if victims > 0 { format!(", {victims} cold units to evict") } else { String::new() },
            started.elapsed().as_secs_f64() * 1e6,
        );
        Ok(registered.id)
    }
}

/// Compiles Cranelift IR into native code for kiln, publishes entries and
/// OSR entries, and frees code memory when kiln retires it. Built by
/// [`CraneliftConfig`]; see the crate docs for the module grouping and the
/// code-memory budget.
#[derive(Clone)]
pub struct CraneliftBackend {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for CraneliftBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CraneliftBackend")
            .field("isa", &self.shared.isa.name())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl CraneliftBackend {
    /// A backend with [`CraneliftConfig::new`]'s defaults.
    pub fn new() -> Result<Self, ConfigError> {
        CraneliftConfig::new().build()
    }

    pub(crate) fn from_parts(
        isa: OwnedTargetIsa,
        symbols: BTreeMap<String, HostSymbol>,
        budget: Option<usize>,
        eviction_pause: u32,
    ) -> Self {
        let page_size = 1 << isa.page_size_align_log2();
        let memory = CodeMemory::new("cranelift", budget, eviction_pause);
        let shared = Shared { isa, symbols, page_size, memory };
        Self { shared: Arc::new(shared) }
    }

    /// The target ISA (for signatures, pointer types, flags).
    pub fn isa(&self) -> &dyn TargetIsa {
        &*self.shared.isa
    }

    /// The host's pointer type.
    pub fn pointer_type(&self) -> Type {
        self.shared.isa.pointer_type()
    }

    /// The code-memory budget, if any.
    pub fn code_budget(&self) -> Option<usize> {
        self.shared.memory.budget()
    }

    /// Code memory counters and gauges.
    pub fn stats(&self) -> CodeStats {
        self.shared.memory.stats()
    }

    /// Compiles `def` into a unit of its own. The code is the caller's
    /// until [`free`](Self::free)d; it counts toward the budget but is never
    /// evicted (no bead can send it back to an interpreter).
    pub fn compile_function(&self, def: FunctionDef) -> Result<CompiledFunction, CraneliftError> {
        let (id, _) = self.compile_def(def, Owner::Host)?;
        Ok(self.shared.memory.compiled_function(id, handle_of(id)))
    }

    /// Compiles `def` for `owner` — or, for a definition compiled ahead by
    /// `prepare` (kiln-std adapter), takes its unit over — and returns the
    /// unit's id and whether it was compiled ahead (its OSR entries then
    /// travelled with it already).
    pub(crate) fn compile_def(&self, def: FunctionDef, owner: Owner) -> Result<(u64, bool), CraneliftError> {
        match def.kind {
            DefKind::Source(source) => Ok((self.shared.compile_unit(&source, owner)?, false)),
            #[cfg(feature = "std-adapter")]
            DefKind::Prepared(prepared) => Ok((self.adopt(prepared?, owner)?, true)),
        }
    }

    /// Frees the code behind `handle` (one from [`compile_function`](Self::compile_function)
    /// or a [`CraneliftCompiler`](crate::CraneliftCompiler)). Returns false
    /// if it was already freed or never existed.
    ///
    /// # Safety
    ///
    /// 1. No thread runs or will call any entry of that code, normal or OSR.
    pub unsafe fn free(&self, handle: CodeHandle) -> bool {
        // SAFETY: (1) by this function's contract.
        unsafe { self.shared.memory.free_unit(handle.get() as u64) }
    }
}

/// The handle of unit `id` (ids count up from 1, so it is never null).
pub(crate) fn handle_of(id: u64) -> CodeHandle {
    CodeHandle::from_raw(id as usize).expect("unit ids start at 1")
}
