//! `LlvmBackend`: compiles [`FunctionDef`]s into units, hands out their
//! entries, and frees units when the host (or kiln) is done with them.
//!
//! The backend is a cheap handle (`Clone`, `Send`, `Sync`) over one shared
//! state: the target settings, the host symbols, one ORC LLJIT, and the
//! code cache behind a lock that is never held while LLVM optimizes or
//! generates code (kiln-backend-kit's `CodeMemory`). It is used three ways, like kiln-cranelift's:
//!
//! - standalone: [`compile_function`](LlvmBackend::compile_function) and
//!   the `unsafe` [`free`](LlvmBackend::free);
//! - as kiln-std's `JitBackend` (feature `kiln-std`);
//! - as kiln-core's `Compiler` through an [`LlvmCompiler`](crate::LlvmCompiler).
//!
//! # Code handles
//!
//! A unit's [`CodeHandle`] is its id with [`LLVM_HANDLE_TAG`] (the top bit)
//! set, so a compiler that dispatches by tier can tell an LLVM handle from
//! a Cranelift one (whose ids count up from 1) without a table.

use std::collections::BTreeMap;
use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::time::Instant;

use inkwell::targets::{InitializationConfig, Target, TargetMachine};
use kiln_backend_kit::{Code, CodeStats, CompiledFunction, HostSymbol, Owner};
use kiln_core::{CodeHandle, OsrEntry};

use crate::codegen::{self, Machine};
use crate::config::{ConfigError, LlvmConfig};
use crate::def::{Entry, FunctionDef};
use crate::error::LlvmError;
use crate::orc::{Jit, Tracker};
use crate::unit::CodeMemory;

/// The bit set in every [`CodeHandle`] kiln-llvm hands out.
pub const LLVM_HANDLE_TAG: usize = 1 << (usize::BITS - 1);

/// Whether `handle` names LLVM code (has [`LLVM_HANDLE_TAG`] set).
pub fn is_llvm_handle(handle: CodeHandle) -> bool {
    handle.get() & LLVM_HANDLE_TAG != 0
}

pub(crate) fn handle_of(id: u64) -> CodeHandle {
    CodeHandle::from_raw(LLVM_HANDLE_TAG | id as usize).expect("the tag bit is set")
}

pub(crate) fn id_of(handle: CodeHandle) -> Option<u64> {
    is_llvm_handle(handle).then(|| (handle.get() & !LLVM_HANDLE_TAG) as u64)
}

/// The state every clone of a backend shares.
pub(crate) struct Shared {
    machine: Machine,
    symbols: BTreeMap<String, HostSymbol>,
    /// The units, the budget and its books (kiln-backend-kit).
    pub(crate) memory: CodeMemory,
    /// Dropped only if no unit is left (see `Drop`).
    jit: ManuallyDrop<Jit>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if self.memory.cache().is_empty() {
            // SAFETY: dropped once, here; no unit (hence no code) is left.
            unsafe { ManuallyDrop::drop(&mut self.jit) };
        } else {
            // Units still live may still run (kiln releases them later, or
            // the host leaked them): disposing the JIT would unmap them.
            log::debug!(target: "kiln", "llvm: backend dropped with live units; its code memory stays mapped");
        }
    }
}

impl Shared {
    /// Compiles `def` and registers the unit for `owner`; returns its id.
    /// If the budget is exceeded, the coldest units are chosen and queued
    /// for eviction, never evicted here: this runs inside a kiln compile,
    /// which must not call back into kiln. They are sent back once the
    /// compile is over: kiln-std beads by the post-compile hook
    /// (`JitBackend::after_compile`), kiln-core ones by `LlvmCompiler::evict`.
    pub(crate) fn compile_unit(&self, def: &FunctionDef, owner: Owner) -> Result<u64, LlvmError> {
        let started = Instant::now();
        let id = self.memory.cache().next_id();
        let used = self.memory.use_flag();
        let used_address = used.as_deref().map(|flag| std::ptr::from_ref(flag) as usize);
        let code = match self.link(def, id, used_address) {
            Ok((code, entry, osr, bytes)) => Code { code, entry, osr, bytes, used },
            Err(error) => return Err(self.memory.failed(error)),
        };
        let bytes = code.bytes;
        let registered = self.memory.register(Some(id), def.name.clone(), code, owner);
        log::debug!(
            target: "kiln",
            "llvm: compiled `{}` at -O{} ({} OSR entries, {bytes} B of code, {} B resident) in {:.2} ms",
            def.name,
            self.machine.opt_level,
            def.osr.len(),
            registered.resident,
            started.elapsed().as_secs_f64() * 1e3,
        );
        Ok(id)
    }

    /// Builds, links and looks up every entry of `def` as unit `id`.
    fn link(
        &self,
        def: &FunctionDef,
        id: u64,
        used: Option<usize>,
    ) -> Result<(Tracker, usize, Vec<OsrEntry>, usize), LlvmError> {
        let function = &def.name;
        let object = codegen::build(&self.machine, def, id, used)?;
        self.memory.fits_budget(function, object.code_bytes)?;
        // A missing import is found here, by name, before anything is linked
        // (ORC would report it only as a failed materialization).
        for import in &object.imports {
            if !self.symbols.contains_key(import) && self.jit.lookup(import).is_err() {
                return Err(LlvmError::MissingSymbol { function: function.clone(), symbol: import.clone() });
            }
        }
        let link_error = |message: String| LlvmError::Link { function: function.clone(), message };
        let tracker = self.jit.add_object(&object.bytes, function).map_err(link_error)?;
        let mut addresses = Vec::with_capacity(object.symbols.len());
        for (entry, symbol) in &object.symbols {
            match self.jit.lookup(symbol) {
                Ok(address) if address != 0 => addresses.push((*entry, address)),
                result => {
                    // SAFETY: (1) no address of this unit was handed out.
                    let _ = unsafe { tracker.remove() };
                    let message = result.err().unwrap_or_else(|| format!("`{symbol}` linked at address 0"));
                    return Err(link_error(message));
                }
            }
        }
        let entry = addresses[0].1;
        let osr = addresses[1..]
            .iter()
            .map(|&(entry, address)| {
                let Entry::Osr { site } = entry else { unreachable!("OSR entries follow the normal one") };
                OsrEntry { site, code: address as *mut () }
            })
            .collect();
        Ok((tracker, entry, osr, object.code_bytes))
    }

    /// Frees unit `id`; false if there is none.
    ///
    /// # Safety
    ///
    /// 1. No thread runs or will call code of the unit, or reads its OSR table.
    pub(crate) unsafe fn free_unit(&self, id: u64) -> bool {
        // SAFETY: (1) by this function's contract.
        let freed = unsafe { self.memory.free_unit(id) };
        if freed {
            // The unit's symbol names are dead now: drop them from ORC's pool.
            self.jit.clear_dead_names();
        }
        freed
    }
}

/// Compiles LLVM IR into native code for kiln on ORC LLJIT, publishes
/// entries and OSR entries, and frees code memory when kiln retires it.
/// Built by [`LlvmConfig`]; see the crate docs.
#[derive(Clone)]
pub struct LlvmBackend {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for LlvmBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlvmBackend")
            .field("machine", &self.shared.machine)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl LlvmBackend {
    /// A backend with [`LlvmConfig::new`]'s defaults.
    pub fn new() -> Result<Self, ConfigError> {
        LlvmConfig::new().build()
    }

    pub(crate) fn from_config(config: LlvmConfig) -> Result<Self, ConfigError> {
        Target::initialize_native(&InitializationConfig::default())
            .map_err(|reason| ConfigError::UnsupportedHost { reason })?;
        let cpu = config.cpu.unwrap_or_else(|| TargetMachine::get_host_cpu_name().to_string());
        let features = match config.features {
            Some(features) => features.join(","),
            None => TargetMachine::get_host_cpu_features().to_string(),
        };
        let triple = TargetMachine::get_default_triple().as_str().to_string_lossy().into_owned();
        let machine = Machine { triple, cpu, features, opt_level: config.opt_level };
        // Fails here, not on a worker, if the host has no target machine.
        machine.target_machine().map_err(|reason| ConfigError::UnsupportedHost { reason })?;
        let jit = Jit::new(&config.memory.symbols).map_err(|reason| ConfigError::Jit { reason })?;
        let memory = CodeMemory::new("llvm", config.memory.code_budget, config.memory.eviction_pause);
        let shared = Shared { machine, symbols: config.memory.symbols, memory, jit: ManuallyDrop::new(jit) };
        Ok(Self { shared: Arc::new(shared) })
    }

    /// The optimization level (0 to 3).
    pub fn opt_level(&self) -> u8 {
        self.shared.machine.opt_level
    }

    /// The CPU code is generated for.
    pub fn cpu(&self) -> &str {
        &self.shared.machine.cpu
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
    pub fn compile_function(&self, def: FunctionDef) -> Result<CompiledFunction, LlvmError> {
        let id = self.shared.compile_unit(&def, Owner::Host)?;
        Ok(self.shared.memory.compiled_function(id, handle_of(id)))
    }

    /// Frees the code behind `handle` (one from [`compile_function`](Self::compile_function)
    /// or an [`LlvmCompiler`](crate::LlvmCompiler)). Returns false if it was
    /// already freed, never existed, or is not an LLVM handle.
    ///
    /// # Safety
    ///
    /// 1. No thread runs or will call any entry of that code, normal or OSR.
    pub unsafe fn free(&self, handle: CodeHandle) -> bool {
        // SAFETY: (1) by this function's contract.
        id_of(handle).is_some_and(|id| unsafe { self.shared.free_unit(id) })
    }
}
