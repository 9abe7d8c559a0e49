//! The ORC LLJIT instance behind a backend, through `llvm_sys::orc2`.
//!
//! # Why objects, not IR modules
//!
//! kiln-llvm optimizes and generates code itself (a per-compile LLVM
//! context, a target machine, the new pass manager) and hands LLJIT only
//! the finished object file, added under a resource tracker of its own.
//! So the compile runs on the caller's thread with no lock, nothing of the
//! IR stays resident once the object exists (the context is dropped at the
//! end of the compile), and LLJIT's work is only linking: one JIT for the
//! whole backend, one [`Tracker`] per unit, and removing the tracker frees
//! the unit's code memory.
//!
//! # Thread safety
//!
//! LLJIT and its execution session are internally synchronized (ORC's
//! session lock), so one instance serves every compiling thread. The raw
//! pointers are wrapped here, the only place that touches them.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_char, c_void};

use inkwell::llvm_sys::core::LLVMCreateMemoryBufferWithMemoryRangeCopy;
use inkwell::llvm_sys::error::{LLVMDisposeErrorMessage, LLVMErrorRef, LLVMGetErrorMessage};
use inkwell::llvm_sys::orc2::lljit::{
    LLVMOrcCreateLLJIT, LLVMOrcCreateLLJITBuilder, LLVMOrcDisposeLLJIT, LLVMOrcLLJITAddObjectFileWithRT,
    LLVMOrcLLJITGetExecutionSession, LLVMOrcLLJITGetGlobalPrefix, LLVMOrcLLJITGetMainJITDylib, LLVMOrcLLJITLookup,
    LLVMOrcLLJITMangleAndIntern, LLVMOrcLLJITRef,
};
use inkwell::llvm_sys::orc2::{
    LLVMJITEvaluatedSymbol, LLVMJITSymbolFlags, LLVMJITSymbolGenericFlags, LLVMOrcAbsoluteSymbols,
    LLVMOrcCSymbolMapPair, LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess,
    LLVMOrcExecutionSessionGetSymbolStringPool, LLVMOrcExecutionSessionSetErrorReporter, LLVMOrcJITDylibAddGenerator,
    LLVMOrcJITDylibCreateResourceTracker, LLVMOrcJITDylibDefine, LLVMOrcJITDylibRef, LLVMOrcReleaseResourceTracker,
    LLVMOrcResourceTrackerRef, LLVMOrcResourceTrackerRemove, LLVMOrcSymbolStringPoolClearDeadEntries,
};

use kiln_backend_kit::HostSymbol;

/// Takes an LLVM error's message and frees the error; `None` for success.
fn take_error(error: LLVMErrorRef) -> Option<String> {
    if error.is_null() {
        return None;
    }
    // SAFETY: `error` is a live error; `LLVMGetErrorMessage` consumes it and
    // returns a string we own until `LLVMDisposeErrorMessage`.
    unsafe {
        let message = LLVMGetErrorMessage(error);
        let text = CStr::from_ptr(message).to_string_lossy().into_owned();
        LLVMDisposeErrorMessage(message);
        Some(text)
    }
}

/// ORC's session errors (a failed materialization) go to kiln's log, not
/// stderr: the compile that caused one also gets it back as a value.
extern "C" fn report_session_error(_context: *mut c_void, error: LLVMErrorRef) {
    if let Some(message) = take_error(error) {
        log::warn!(target: "kiln", "llvm: ORC session error: {message}");
    }
}

/// One LLJIT instance: the main JITDylib holds the host symbols and
/// resolves everything else from the process.
pub(crate) struct Jit {
    raw: LLVMOrcLLJITRef,
    dylib: LLVMOrcJITDylibRef,
}

// SAFETY: LLJIT is internally synchronized (see the module docs); the
// handles are used only through its thread-safe entry points.
unsafe impl Send for Jit {}
// SAFETY: as for `Send`.
unsafe impl Sync for Jit {}

impl std::fmt::Debug for Jit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jit").finish_non_exhaustive()
    }
}

impl Jit {
    /// An LLJIT for the host, with `symbols` defined in its main JITDylib.
    pub(crate) fn new(symbols: &BTreeMap<String, HostSymbol>) -> Result<Self, String> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: a fresh builder, consumed by `LLVMOrcCreateLLJIT` (which
        // takes ownership of it whether or not it succeeds).
        if let Some(message) = take_error(unsafe { LLVMOrcCreateLLJIT(&mut raw, LLVMOrcCreateLLJITBuilder()) }) {
            return Err(message);
        }
        // SAFETY: `raw` is a live LLJIT; the main JITDylib lives as long.
        let dylib = unsafe { LLVMOrcLLJITGetMainJITDylib(raw) };
        let jit = Self { raw, dylib };
        // SAFETY: the session outlives the LLJIT's use; the reporter needs
        // no context.
        unsafe {
            let session = LLVMOrcLLJITGetExecutionSession(raw);
            LLVMOrcExecutionSessionSetErrorReporter(session, report_session_error, std::ptr::null_mut());
        }
        let mut generator = std::ptr::null_mut();
        // SAFETY: `raw` is live; the generator is handed to the JITDylib,
        // which owns it from then on.
        unsafe {
            let prefix = LLVMOrcLLJITGetGlobalPrefix(raw);
            let error = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(
                &mut generator,
                prefix,
                None,
                std::ptr::null_mut(),
            );
            if let Some(message) = take_error(error) {
                return Err(message);
            }
            LLVMOrcJITDylibAddGenerator(dylib, generator);
        }
        if !symbols.is_empty() {
            let mut pairs = Vec::with_capacity(symbols.len());
            for (name, symbol) in symbols {
                let name = CString::new(name.as_str()).map_err(|_| format!("symbol name `{name}` contains NUL"))?;
                let flags = LLVMJITSymbolFlags {
                    GenericFlags: LLVMJITSymbolGenericFlags::LLVMJITSymbolGenericFlagsExported as u8
                        | LLVMJITSymbolGenericFlags::LLVMJITSymbolGenericFlagsCallable as u8,
                    TargetFlags: 0,
                };
                // SAFETY: `raw` is live; the interned name is owned by the pair
                // and passed on to the materialization unit below.
                let interned = unsafe { LLVMOrcLLJITMangleAndIntern(raw, name.as_ptr()) };
                pairs.push(LLVMOrcCSymbolMapPair {
                    Name: interned,
                    Sym: LLVMJITEvaluatedSymbol { Address: symbol.address() as u64, Flags: flags },
                });
            }
            // SAFETY: `pairs` holds interned names (ownership moves to the
            // unit) and addresses; the unit moves to the JITDylib.
            let error = unsafe {
                let unit = LLVMOrcAbsoluteSymbols(pairs.as_mut_ptr(), pairs.len());
                LLVMOrcJITDylibDefine(dylib, unit)
            };
            if let Some(message) = take_error(error) {
                return Err(message);
            }
        }
        Ok(jit)
    }

    /// Adds `object` under a new resource tracker.
    pub(crate) fn add_object(&self, object: &[u8], name: &str) -> Result<Tracker, String> {
        let buffer_name = CString::new(name).unwrap_or_default();
        // SAFETY: the JITDylib is live; the copy is owned by the buffer, which
        // `LLVMOrcLLJITAddObjectFileWithRT` takes over (also on error).
        unsafe {
            let tracker = Tracker(LLVMOrcJITDylibCreateResourceTracker(self.dylib));
            let buffer = LLVMCreateMemoryBufferWithMemoryRangeCopy(
                object.as_ptr().cast::<c_char>(),
                object.len(),
                buffer_name.as_ptr(),
            );
            match take_error(LLVMOrcLLJITAddObjectFileWithRT(self.raw, tracker.0, buffer)) {
                None => Ok(tracker),
                Some(message) => {
                    // Nothing of the object was materialized; drop the handle.
                    let _ = tracker.remove();
                    Err(message)
                }
            }
        }
    }

    /// Drops interned symbol names nothing refers to any more (a freed
    /// unit's): ORC's string pool keeps them otherwise, about 150 bytes per
    /// unit for the life of the JIT.
    pub(crate) fn clear_dead_names(&self) {
        // SAFETY: `raw` is live; the pool is the session's and takes its own lock.
        unsafe {
            let pool = LLVMOrcExecutionSessionGetSymbolStringPool(LLVMOrcLLJITGetExecutionSession(self.raw));
            LLVMOrcSymbolStringPoolClearDeadEntries(pool);
        }
    }

    /// The address of `name` (linking what defines it, the first time).
    pub(crate) fn lookup(&self, name: &str) -> Result<usize, String> {
        let name = CString::new(name).map_err(|_| format!("symbol name `{name}` contains NUL"))?;
        let mut address = 0;
        // SAFETY: `raw` is live; `address` is written on success.
        match take_error(unsafe { LLVMOrcLLJITLookup(self.raw, &mut address, name.as_ptr()) }) {
            None => Ok(address as usize),
            Some(message) => Err(message),
        }
    }
}

impl Drop for Jit {
    fn drop(&mut self) {
        // SAFETY: the backend drops its JIT only when no unit is left (see
        // `backend::Shared`'s drop), so no code of it can run.
        if let Some(message) = take_error(unsafe { LLVMOrcDisposeLLJIT(self.raw) }) {
            log::warn!(target: "kiln", "llvm: disposing LLJIT: {message}");
        }
    }
}

/// A unit's resource tracker: removing it frees the unit's code.
pub(crate) struct Tracker(LLVMOrcResourceTrackerRef);

// SAFETY: resource trackers are reference-counted ORC objects whose removal
// takes the session lock.
unsafe impl Send for Tracker {}
// SAFETY: as for `Send`; `&Tracker` offers nothing.
unsafe impl Sync for Tracker {}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracker(..)")
    }
}

impl Tracker {
    /// Removes everything added under the tracker (freeing its code memory)
    /// and releases the handle.
    ///
    /// # Safety
    ///
    /// 1. No thread runs, or will call, code added under this tracker.
    pub(crate) unsafe fn remove(self) -> Result<(), String> {
        // SAFETY: (1) by the contract; the handle is released exactly once
        // (`self` is consumed; `Tracker` has no `Drop`).
        unsafe {
            let result = take_error(LLVMOrcResourceTrackerRemove(self.0));
            LLVMOrcReleaseResourceTracker(self.0);
            result.map_or(Ok(()), Err)
        }
    }
}
