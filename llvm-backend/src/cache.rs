//! The code cache: every live unit, the code-memory budget, and how the
//! coldest code is chosen for eviction.
//!
//! The scheme is kiln-cranelift's, so the two tiers behave alike under one
//! budget policy: the budget bounds `resident − evicting` (page granular);
//! a compile that goes over it evicts the coldest evictable units, never
//! the new one, and only a function larger than the whole budget fails
//! (`LlvmError::OverBudget`). Coldness is a CLOCK-style use bit: with a
//! budget, every entry stores 1 into its unit's byte; each compile sweeps
//! the cache, resetting set bytes and ageing clear ones. Units compiled
//! through the standalone API count toward `resident` but are never
//! evicted: no bead can send them back.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use crate::unit::{Owner, Unit};

/// Counters and gauges of a backend's code memory (the same as
/// kiln-cranelift's `CodeStats`).
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
    /// Of those, compiles in which the host's body callback (or inkwell)
    /// panicked: caught, logged and turned into `LlvmError::Panicked`.
    pub panicked: u64,
    /// Units evicted for the budget.
    pub evicted: u64,
    /// The budget, if any.
    pub budget: Option<usize>,
}

/// A unit chosen for eviction, to be sent back through its owner.
#[derive(Debug)]
pub(crate) struct Victim {
    pub(crate) id: u64,
    #[cfg_attr(not(feature = "kiln-std"), allow(dead_code))]
    pub(crate) entry: usize,
    #[cfg(feature = "kiln-std")]
    pub(crate) bead: Option<std::sync::Weak<kiln_std::Bead>>,
}

/// Live units by id and by entry address, and the budget's books.
#[derive(Debug, Default)]
pub(crate) struct CodeCache {
    units: HashMap<u64, Unit>,
    by_entry: HashMap<usize, u64>,
    next_id: u64,
    stats: CodeStats,
    /// kiln-core units chosen for eviction, for `LlvmCompiler::evict`.
    core_victims: Vec<u64>,
}

impl CodeCache {
    pub(crate) fn new(budget: Option<usize>) -> Self {
        Self { next_id: 1, stats: CodeStats { budget, ..CodeStats::default() }, ..Self::default() }
    }

    pub(crate) fn stats(&self) -> CodeStats {
        CodeStats { live_units: self.units.len(), ..self.stats }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// A fresh unit id (also the tag of the unit's symbol names).
    pub(crate) fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub(crate) fn failed(&mut self, panicked: bool) {
        self.stats.failed += 1;
        if panicked {
            self.stats.panicked += 1;
        }
    }

    /// Adds `unit` as `id`.
    pub(crate) fn insert(&mut self, id: u64, unit: Unit) {
        self.stats.compiled += 1;
        self.stats.resident_bytes += unit.bytes;
        self.stats.peak_resident_bytes = self.stats.peak_resident_bytes.max(self.stats.resident_bytes);
        self.by_entry.insert(unit.entry, id);
        self.units.insert(id, unit);
    }

    pub(crate) fn get(&self, id: u64) -> Option<&Unit> {
        self.units.get(&id)
    }

    #[cfg_attr(not(feature = "kiln-std"), allow(dead_code))]
    pub(crate) fn id_of_entry(&self, entry: usize) -> Option<u64> {
        self.by_entry.get(&entry).copied()
    }

    /// Removes unit `id` for freeing.
    pub(crate) fn remove(&mut self, id: u64) -> Option<Unit> {
        let unit = self.units.remove(&id)?;
        self.by_entry.remove(&unit.entry);
        self.stats.freed += 1;
        self.stats.resident_bytes -= unit.bytes;
        if unit.evicted {
            self.stats.evicting_bytes -= unit.bytes;
        }
        Some(unit)
    }

    /// Ages every unit by one sweep (see the module docs).
    pub(crate) fn sweep(&mut self) {
        for unit in self.units.values_mut() {
            if let Some(used) = &unit.used {
                // Relaxed: a hint; a store racing this swap only shifts the
                // unit's age by one sweep.
                if used.swap(0, Ordering::Relaxed) != 0 {
                    unit.idle = 0;
                } else {
                    unit.idle = unit.idle.saturating_add(1);
                }
            }
        }
    }

    /// Marks the coldest evictable units (never `keep`) as evicted until
    /// the units not yet evicted fit the budget, and returns them.
    pub(crate) fn choose_victims(&mut self, keep: u64) -> Vec<Victim> {
        let Some(budget) = self.stats.budget else { return Vec::new() };
        let mut victims = Vec::new();
        while self.stats.resident_bytes - self.stats.evicting_bytes > budget {
            let coldest = self
                .units
                .iter()
                .filter(|(id, unit)| **id != keep && !unit.evicted && !matches!(unit.owner, Owner::Host))
                // Most idle first; among equals the oldest (smallest id).
                .max_by_key(|(id, unit)| (unit.idle, std::cmp::Reverse(**id)))
                .map(|(id, _)| *id);
            let Some(id) = coldest else { break };
            let unit = self.units.get_mut(&id).expect("chosen from the map");
            unit.evicted = true;
            self.stats.evicting_bytes += unit.bytes;
            self.stats.evicted += 1;
            victims.push(Victim {
                id,
                entry: unit.entry,
                #[cfg(feature = "kiln-std")]
                bead: match &unit.owner {
                    Owner::Std(bead) => Some(bead.clone()),
                    Owner::Core | Owner::Host => None,
                },
            });
        }
        victims
    }

    /// An eviction that could not be carried out (kiln refused): the unit
    /// counts as live again and may be chosen later.
    pub(crate) fn unevict(&mut self, id: u64) {
        if let Some(unit) = self.units.get_mut(&id)
            && unit.evicted
        {
            unit.evicted = false;
            self.stats.evicting_bytes -= unit.bytes;
            self.stats.evicted -= 1;
        }
    }

    pub(crate) fn queue_core_victim(&mut self, id: u64) {
        self.core_victims.push(id);
    }

    /// Takes the queued kiln-core victims `owns` accepts; the others stay.
    pub(crate) fn take_core_victims(&mut self, mut owns: impl FnMut(u64) -> bool) -> Vec<(u64, usize)> {
        let mut taken = Vec::new();
        let units = &self.units;
        self.core_victims.retain(|&id| match units.get(&id) {
            None => false,
            Some(unit) if owns(id) => {
                taken.push((id, unit.entry));
                false
            }
            Some(_) => true,
        });
        taken
    }
}
