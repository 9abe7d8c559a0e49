//! The code cache: every live unit, the code-memory budget, and how the
//! coldest code is chosen for eviction.
//!
//! # Budget and eviction
//!
//! The budget bounds the code memory of live units (`resident`, page
//! granular). When a compile brings `resident − evicting` over the budget,
//! the coldest evictable units are chosen until it fits again: marked
//! evicting at once (so the next compile's books are right) and queued, to
//! be sent back to the interpreter once the compile is over (a compile must
//! not call back into kiln): by kiln-std's post-compile hook for kiln-std
//! beads, by `CraneliftCompiler::evict` for kiln-core ones. Their memory
//! returns when kiln releases them (after quiescence). The compiler is
//! never switched off: the new function is always installed, and only a
//! function larger than the whole budget fails to compile (`CraneliftError::OverBudget`, a failed compile that goes
//! through kiln's failure policy like any other).
//!
//! Coldness is measured like page reference bits (the CLOCK / not-recently-
//! used scheme): with a budget, generated code stores 1 into its unit's
//! `used` byte on every entry (a plain store, no read-modify-write). Each
//! compile sweeps the cache: a unit whose byte is set is reset to idle 0
//! and its byte cleared; one whose byte is clear ages by one sweep. The
//! victim is the unit idle for the most sweeps (the oldest among equals).
//! Compiled code bypasses kiln's counters, so this is the only signal of
//! use that costs the hot path nothing but one store.
//!
//! Units compiled through the standalone API ([`Owner::Host`]) count toward
//! `resident` but are never evicted: no bead can send them back.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use crate::unit::{Owner, Unit};

/// Counters and gauges of a backend's code memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodeStats {
    /// Units (modules) alive: compiled and not yet freed.
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
    /// Of those, compiles in which the host's body callback (or Cranelift
    /// itself) panicked: caught, logged (`log::error!`, target `kiln`) and
    /// turned into `CraneliftError::Panicked`, never unwound into kiln.
    pub panicked: u64,
    /// Units evicted for the budget.
    pub evicted: u64,
    /// The budget, if any.
    pub budget: Option<usize>,
}

/// Live units by id and by entry address, and the budget's books.
#[derive(Debug, Default)]
pub(crate) struct CodeCache {
    units: HashMap<u64, Unit>,
    by_entry: HashMap<usize, u64>,
    next_id: u64,
    stats: CodeStats,
    /// Units chosen for eviction and not yet sent back, oldest first: a
    /// compile only chooses; its owner's path evicts once the compile is over
    /// (`CraneliftCompiler::evict`, kiln-std's post-compile hook).
    queued_victims: Vec<u64>,
}

impl CodeCache {
    pub(crate) fn new(budget: Option<usize>) -> Self {
        Self { next_id: 1, stats: CodeStats { budget, ..CodeStats::default() }, ..Self::default() }
    }

    pub(crate) fn stats(&self) -> CodeStats {
        CodeStats { live_units: self.units.len(), ..self.stats }
    }

    pub(crate) fn failed(&mut self) {
        self.stats.failed += 1;
    }

    pub(crate) fn panicked(&mut self) {
        self.stats.panicked += 1;
    }

    /// Adds `unit`; returns its id.
    pub(crate) fn insert(&mut self, unit: Unit) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.stats.compiled += 1;
        self.stats.resident_bytes += unit.bytes;
        self.stats.peak_resident_bytes = self.stats.peak_resident_bytes.max(self.stats.resident_bytes);
        self.by_entry.insert(unit.entry, id);
        self.units.insert(id, unit);
        id
    }

    pub(crate) fn get(&self, id: u64) -> Option<&Unit> {
        self.units.get(&id)
    }

    #[cfg(feature = "std-adapter")]
    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut Unit> {
        self.units.get_mut(&id)
    }

    #[cfg(feature = "std-adapter")]
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
    /// the units not yet evicted fit the budget, and queues them for their
    /// owners; returns how many it chose.
    pub(crate) fn choose_victims(&mut self, keep: u64) -> usize {
        let Some(budget) = self.stats.budget else { return 0 };
        let mut chosen = 0;
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
            self.queued_victims.push(id);
            chosen += 1;
        }
        chosen
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

    /// Takes the queued victims `owns` accepts (the kiln-core units of one
    /// compiler's book); the others stay.
    pub(crate) fn take_core_victims(&mut self, mut owns: impl FnMut(u64) -> bool) -> Vec<(u64, usize)> {
        let mut taken = Vec::new();
        let units = &self.units;
        self.queued_victims.retain(|&id| match units.get(&id) {
            // Freed meanwhile: nothing left to evict.
            None => false,
            Some(unit) if owns(id) => {
                taken.push((id, unit.entry));
                false
            }
            Some(_) => true,
        });
        taken
    }

    /// Takes the queued victims compiled for kiln-std beads, with their
    /// entries and beads; the others stay.
    #[cfg(feature = "std-adapter")]
    pub(crate) fn take_bead_victims(&mut self) -> Vec<(u64, usize, std::sync::Weak<kiln_std::Bead>)> {
        let mut taken = Vec::new();
        let units = &self.units;
        self.queued_victims.retain(|&id| match units.get(&id) {
            // Freed meanwhile: nothing left to evict.
            None => false,
            Some(Unit { owner: Owner::Std(bead), entry, .. }) => {
                taken.push((id, *entry, bead.clone()));
                false
            }
            Some(_) => true,
        });
        taken
    }
}
