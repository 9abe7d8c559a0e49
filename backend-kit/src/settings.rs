//! [`MemorySettings`]: the settings every backend's config carries beside
//! its compiler's own — host symbols the generated code may call, the
//! code-memory budget, and how long an evicted function waits before it
//! may be promoted again.

use std::collections::BTreeMap;

/// The address of a host function generated code may call by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostSymbol(*const u8);

// SAFETY: the address of a host function; kiln never dereferences it, and
// generated code calling it is the caller's own contract.
unsafe impl Send for HostSymbol {}
// SAFETY: as for `Send`: an immutable address.
unsafe impl Sync for HostSymbol {}

impl HostSymbol {
    /// The function at `address`.
    pub fn new(address: *const u8) -> Self {
        Self(address)
    }

    /// Its address.
    pub fn address(self) -> *const u8 {
        self.0
    }
}

/// Host symbols, code budget and eviction pause, as a backend's config
/// collects them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemorySettings {
    /// Host symbols by name.
    pub symbols: BTreeMap<String, HostSymbol>,
    /// The code-memory budget in bytes, if any.
    pub code_budget: Option<usize>,
    /// Calls an evicted function must make before it may be promoted again
    /// (at least 1).
    pub eviction_pause: u32,
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self::new()
    }
}

impl MemorySettings {
    /// The default eviction pause, in calls.
    pub const DEFAULT_EVICTION_PAUSE: u32 = 1_000;

    /// No symbols, no budget, the default pause.
    pub fn new() -> Self {
        Self { symbols: BTreeMap::new(), code_budget: None, eviction_pause: Self::DEFAULT_EVICTION_PAUSE }
    }

    /// Makes the host function at `address` callable as `name` (the last
    /// address given for a name wins).
    pub fn symbol(&mut self, name: &str, address: *const u8) {
        self.symbols.insert(name.to_owned(), HostSymbol(address));
    }

    /// Caps the code memory at `bytes`.
    pub fn code_budget(&mut self, bytes: usize) {
        self.code_budget = Some(bytes);
    }

    /// Sets the eviction pause (0 counts as 1: kiln pauses at least a call).
    pub fn eviction_pause(&mut self, calls: u32) {
        self.eviction_pause = calls.max(1);
    }
}
