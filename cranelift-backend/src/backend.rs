//! `CraneliftBackend`: compiles [`FunctionDef`]s into units, hands out their
//! entries, and frees units when the host (or kiln) is done with them.
//!
//! The backend is a cheap handle (`Clone`, `Send`, `Sync`) over one shared
//! state: the target ISA, the host symbols, and the code cache behind one
//! lock that is never held while Cranelift runs. It is used three ways:
//!
//! - standalone: [`compile_function`](CraneliftBackend::compile_function)
//!   and the `unsafe` [`free`](CraneliftBackend::free);
//! - as kiln-std's `JitBackend` (see `jit_backend`), where kiln-std calls
//!   `release` once retired code can no longer run;
//! - as kiln-core's `Compiler` through a [`CraneliftCompiler`](crate::CraneliftCompiler).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use cranelift_codegen::ir::Type;
use cranelift_codegen::isa::{OwnedTargetIsa, TargetIsa};
use kiln_core::{CodeHandle, OsrEntry};

use crate::cache::{CodeCache, CodeStats};
use crate::codegen;
use crate::config::{ConfigError, CraneliftConfig, HostSymbol};
use crate::def::{DefKind, FunctionDef, Source};
use crate::error::CraneliftError;
use crate::unit::{Owner, Unit};

/// The state every clone of a backend shares.
pub(crate) struct Shared {
    pub(crate) isa: OwnedTargetIsa,
    pub(crate) symbols: BTreeMap<String, HostSymbol>,
    pub(crate) page_size: usize,
    pub(crate) eviction_pause: u32,
    budget: Option<usize>,
    cache: Mutex<CodeCache>,
}

impl Shared {
    pub(crate) fn cache(&self) -> MutexGuard<'_, CodeCache> {
        // A panic never happens with the lock held (Cranelift runs outside
        // it), but if one did the books are still consistent: go on.
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Compiles `source` and registers the unit for `owner`; returns its
    /// id. If the budget is exceeded, the coldest units are chosen and
    /// queued for eviction, never evicted here: this runs inside a kiln
    /// compile, which must not call back into kiln. They are sent back once
    /// the compile is over, by their owner's path: kiln-std's post-compile
    /// hook (`JitBackend::after_compile`) or `CraneliftCompiler::evict`.
    pub(crate) fn compile_unit(&self, source: &Source, owner: Owner) -> Result<u64, CraneliftError> {
        let started = std::time::Instant::now();
        let built = match codegen::build(self, source, self.budget.is_some()) {
            Ok(built) => built,
            Err(error) => return Err(self.failed(error)),
        };
        if let Some(budget) = self.budget
            && built.bytes > budget
        {
            let needed = built.bytes;
            // SAFETY: (1, 2) the module's entries were never handed out.
            unsafe { Unit::new(source.name.clone(), built, Owner::Host).free() };
            self.cache().failed();
            return Err(CraneliftError::OverBudget { function: source.name.clone(), needed, budget });
        }
        let bytes = built.bytes;
        let mut cache = self.cache();
        let id = cache.insert(Unit::new(source.name.clone(), built, owner));
        let victims = if self.budget.is_some() {
            cache.sweep();
            cache.choose_victims(id)
        } else {
            0
        };
        let resident = cache.stats().resident_bytes;
        drop(cache);
        log::debug!(
            target: "kiln",
            "cranelift: compiled `{}` ({} OSR entries, {bytes} B of code, {resident} B resident{}) in {:.1} µs",
            source.name,
            source.osr.len(),
            if victims > 0 { format!(", {victims} cold units to evict") } else { String::new() },
            started.elapsed().as_secs_f64() * 1e6,
        );
        Ok(id)
    }

    /// Counts the failed compile (and a caught panic) and logs it; returns
    /// `error`.
    pub(crate) fn failed(&self, error: CraneliftError) -> CraneliftError {
        let mut cache = self.cache();
        cache.failed();
        if matches!(error, CraneliftError::Panicked { .. }) {
            cache.panicked();
            drop(cache);
            log::error!(target: "kiln", "cranelift: a host callback panicked (caught): {error}");
        } else {
            drop(cache);
            log::warn!(target: "kiln", "cranelift: {error}");
        }
        error
    }

    /// Frees unit `id`; false if there is none.
    ///
    /// # Safety
    ///
    /// 1. No thread runs or will call code of the unit, or reads its OSR table.
    pub(crate) unsafe fn free_unit(&self, id: u64) -> bool {
        let unit = self.cache().remove(id);
        match unit {
            Some(unit) => {
                log::trace!(target: "kiln", "cranelift: freed `{}` ({} B)", unit.name, unit.bytes);
                // SAFETY: (1) by this function's contract.
                unsafe { unit.free() };
                true
            }
            None => false,
        }
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

/// Code compiled through the standalone API: its entries and the handle
/// that frees it.
#[derive(Debug)]
pub struct CompiledFunction {
    entry: *mut (),
    osr: Vec<OsrEntry>,
    handle: CodeHandle,
    bytes: usize,
}

impl CompiledFunction {
    /// The normal entry (call it with the definition's signature in the
    /// host calling convention, `extern "C"`).
    pub fn entry(&self) -> *mut () {
        self.entry
    }

    /// The OSR entries, sorted by site.
    pub fn osr_entries(&self) -> &[OsrEntry] {
        &self.osr
    }

    /// The OSR entry at `site`, if the definition declared one.
    pub fn osr_entry(&self, site: u64) -> Option<*mut ()> {
        self.osr.binary_search_by_key(&site, |entry| entry.site).ok().map(|index| self.osr[index].code)
    }

    /// The handle that frees this code ([`CraneliftBackend::free`]).
    pub fn handle(&self) -> CodeHandle {
        self.handle
    }

    /// Code memory its module maps.
    pub fn code_bytes(&self) -> usize {
        self.bytes
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
        let page_size = isa.page_size_align_log2();
        let shared = Shared {
            isa,
            symbols,
            page_size: 1 << page_size,
            eviction_pause,
            budget,
            cache: Mutex::new(CodeCache::new(budget)),
        };
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
        self.shared.budget
    }

    /// Code memory counters and gauges.
    pub fn stats(&self) -> CodeStats {
        self.shared.cache().stats()
    }

    /// Compiles `def` into a unit of its own. The code is the caller's
    /// until [`free`](Self::free)d; it counts toward the budget but is never
    /// evicted (no bead can send it back to an interpreter).
    pub fn compile_function(&self, def: FunctionDef) -> Result<CompiledFunction, CraneliftError> {
        let (id, _) = self.compile_def(def, Owner::Host)?;
        let cache = self.shared.cache();
        let unit = cache.get(id).expect("just compiled");
        Ok(CompiledFunction {
            entry: unit.entry as *mut (),
            osr: unit.osr.to_vec(),
            handle: CodeHandle::from_raw(id as usize).expect("unit ids start at 1"),
            bytes: unit.bytes,
        })
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
        unsafe { self.shared.free_unit(handle.get() as u64) }
    }
}
