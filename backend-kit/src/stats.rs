//! [`CodeStats`]: what a backend reports about its code memory. One type
//! for every backend, so tiers compare like for like.

/// Counters and gauges of a backend's code memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodeStats {
    /// Units alive: compiled and not yet freed.
    pub live_units: usize,
    /// Code bytes those units map (page granular).
    pub resident_bytes: usize,
    /// Of `resident_bytes`, code already evicted and waiting for kiln to
    /// release it.
    pub evicting_bytes: usize,
    /// Largest `resident_bytes` seen.
    pub peak_resident_bytes: usize,
    /// Units compiled so far.
    pub compiled: u64,
    /// Units freed so far.
    pub freed: u64,
    /// Compiles that failed.
    pub failed: u64,
    /// Of those, compiles in which the host's body callback (or the
    /// compiler itself) panicked: caught, logged (`log::error!`, target
    /// `kiln`) and turned into the backend's `Panicked` error, never unwound
    /// into kiln.
    pub panicked: u64,
    /// Units evicted for the budget.
    pub evicted: u64,
    /// The budget, if any.
    pub budget: Option<usize>,
}
