//! [`CompiledFunction`]: what a backend's standalone `compile_function`
//! returns.

use kiln_core::{CodeHandle, OsrEntry};

/// Code compiled through a backend's standalone API: its entries and the
/// handle that frees it.
#[derive(Debug)]
pub struct CompiledFunction {
    entry: *mut (),
    osr: Vec<OsrEntry>,
    handle: CodeHandle,
    bytes: usize,
}

impl CompiledFunction {
    /// A compiled function at `entry` with `osr` entries (sorted by site),
    /// `bytes` of code memory, freed through `handle`.
    pub fn new(entry: *mut (), osr: Vec<OsrEntry>, handle: CodeHandle, bytes: usize) -> Self {
        Self { entry, osr, handle, bytes }
    }

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

    /// The handle that frees this code (the backend's `free`).
    pub fn handle(&self) -> CodeHandle {
        self.handle
    }

    /// Code memory its unit maps.
    pub fn code_bytes(&self) -> usize {
        self.bytes
    }
}
