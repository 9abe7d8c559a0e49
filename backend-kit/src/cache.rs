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
//! not call back into kiln; see the crate docs). Their memory returns when
//! kiln releases them (after quiescence). The compiler is never switched
//! off: the new function is always installed, and only a function larger
//! than the whole budget fails to compile (the backend's `OverBudget`).
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

use crate::stats::CodeStats;
use crate::unit::{Owner, Unit};

/// Live units by id and by entry address, and the budget's books.
#[derive(Debug)]
pub struct CodeCache<C> {
    units: HashMap<u64, Unit<C>>,
    by_entry: HashMap<usize, u64>,
    next_id: u64,
    stats: CodeStats,
    /// Units chosen for eviction and not yet sent back, oldest first: a
    /// compile only chooses; its owner's path evicts once the compile is over.
    queued_victims: Vec<u64>,
}

impl<C> CodeCache<C> {
    /// An empty cache under `budget` bytes of code (none: unbounded). Unit
    /// ids count up from 1.
    pub fn new(budget: Option<usize>) -> Self {
        Self {
            units: HashMap::new(),
            by_entry: HashMap::new(),
            next_id: 1,
            stats: CodeStats { budget, ..CodeStats::default() },
            queued_victims: Vec::new(),
        }
    }

    /// The counters, with the live units counted now.
    pub fn stats(&self) -> CodeStats {
        CodeStats { live_units: self.units.len(), ..self.stats }
    }

    /// Whether no unit is live.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// A fresh unit id, for a backend that needs it before the code exists
    /// (kiln-llvm tags the unit's symbol names with it).
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Counts a failed compile (and whether it was a caught panic).
    pub fn failed(&mut self, panicked: bool) {
        self.stats.failed += 1;
        if panicked {
            self.stats.panicked += 1;
        }
    }

    /// Adds `unit` under a fresh id; returns it.
    pub fn insert(&mut self, unit: Unit<C>) -> u64 {
        let id = self.next_id();
        self.insert_as(id, unit);
        id
    }

    /// Adds `unit` under `id`, taken from [`next_id`](Self::next_id).
    pub fn insert_as(&mut self, id: u64, unit: Unit<C>) {
        self.stats.compiled += 1;
        self.stats.resident_bytes += unit.bytes();
        self.stats.peak_resident_bytes = self.stats.peak_resident_bytes.max(self.stats.resident_bytes);
        self.by_entry.insert(unit.entry(), id);
        self.units.insert(id, unit);
    }

    /// Unit `id`, if live.
    pub fn get(&self, id: u64) -> Option<&Unit<C>> {
        self.units.get(&id)
    }

    /// Unit `id`, if live, to change its owner.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut Unit<C>> {
        self.units.get_mut(&id)
    }

    /// The live unit whose normal entry is at `entry`.
    pub fn id_of_entry(&self, entry: usize) -> Option<u64> {
        self.by_entry.get(&entry).copied()
    }

    /// Removes unit `id` for freeing.
    pub fn remove(&mut self, id: u64) -> Option<Unit<C>> {
        let unit = self.units.remove(&id)?;
        self.by_entry.remove(&unit.entry());
        self.stats.freed += 1;
        self.stats.resident_bytes -= unit.bytes();
        if unit.evicted {
            self.stats.evicting_bytes -= unit.bytes();
        }
        Some(unit)
    }

    /// Ages every unit by one sweep, as CLOCK ages page reference bits: a
    /// unit whose `used` byte is set goes back to idle 0 (byte cleared),
    /// one whose byte is clear ages by one; the victim is the oldest.
    pub fn sweep(&mut self) {
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
    pub fn choose_victims(&mut self, keep: u64) -> usize {
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
            self.stats.evicting_bytes += unit.bytes();
            self.stats.evicted += 1;
            self.queued_victims.push(id);
            chosen += 1;
        }
        chosen
    }

    /// An eviction that could not be carried out (kiln refused): the unit
    /// counts as live again and may be chosen later.
    pub fn unevict(&mut self, id: u64) {
        if let Some(unit) = self.units.get_mut(&id)
            && unit.evicted
        {
            unit.evicted = false;
            self.stats.evicting_bytes -= unit.bytes();
            self.stats.evicted -= 1;
        }
    }

    /// Takes the queued victims `owns` accepts (the kiln-core units of one
    /// compiler's book), with their entries; the others stay.
    pub fn take_core_victims(&mut self, mut owns: impl FnMut(u64) -> bool) -> Vec<(u64, usize)> {
        let mut taken = Vec::new();
        let units = &self.units;
        self.queued_victims.retain(|&id| match units.get(&id) {
            // Freed meanwhile: nothing left to evict.
            None => false,
            Some(unit) if owns(id) => {
                taken.push((id, unit.entry()));
                false
            }
            Some(_) => true,
        });
        taken
    }

    /// Takes the queued victims compiled for kiln-std beads, with their
    /// entries and beads; the others stay. Feature `std-adapter`.
    #[cfg(feature = "std-adapter")]
    #[cfg_attr(docsrs, doc(cfg(feature = "std-adapter")))]
    pub fn take_bead_victims(&mut self) -> Vec<(u64, usize, std::sync::Weak<kiln_std::Bead>)> {
        let mut taken = Vec::new();
        let units = &self.units;
        self.queued_victims.retain(|&id| match units.get(&id) {
            // Freed meanwhile: nothing left to evict.
            None => false,
            Some(unit) => match &unit.owner {
                Owner::Std(bead) => {
                    taken.push((id, unit.entry(), bead.clone()));
                    false
                }
                _ => true,
            },
        });
        taken
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU8;

    use super::*;
    use crate::unit::{Code, UnitCode};

    /// Code with no memory behind it.
    #[derive(Debug)]
    struct FakeCode;

    impl UnitCode for FakeCode {
        unsafe fn free(self, _name: &str) {}
    }

    fn unit(entry: usize, owner: Owner) -> Unit<FakeCode> {
        let code = Code { code: FakeCode, entry, osr: Vec::new(), bytes: 4096, used: Some(Box::new(AtomicU8::new(1))) };
        Unit::new(format!("f{entry}"), code, owner)
    }

    #[test]
    fn the_most_idle_oldest_evictable_unit_goes_first() {
        let mut cache = CodeCache::new(Some(2 * 4096));
        let host = cache.insert(unit(0x10, Owner::Host));
        let first = cache.insert(unit(0x20, Owner::Compiler));
        let second = cache.insert(unit(0x30, Owner::Compiler));
        // Two sweeps: every byte starts set, so all are idle 1 after the second.
        cache.sweep();
        cache.sweep();
        // `second` ran since: it is the warmest.
        cache.get(second).unwrap().used.as_ref().unwrap().store(1, Ordering::Relaxed);
        let newest = cache.insert(unit(0x40, Owner::Compiler));
        cache.sweep();
        // 4 pages in a 2-page budget: two go, never the host's or the new one.
        assert_eq!(cache.choose_victims(newest), 2);
        let taken = cache.take_core_victims(|_| true);
        assert_eq!(taken, vec![(first, 0x20), (second, 0x30)]);
        assert_eq!(cache.stats().evicting_bytes, 2 * 4096);
        assert!(cache.get(host).is_some_and(|unit| !unit.evicted));

        // A refused eviction counts as live again; a freed one leaves the books.
        cache.unevict(second);
        assert_eq!((cache.stats().evicting_bytes, cache.stats().evicted), (4096, 1));
        assert!(cache.remove(first).is_some());
        let stats = cache.stats();
        assert_eq!((stats.live_units, stats.resident_bytes, stats.evicting_bytes, stats.freed), (3, 3 * 4096, 0, 1));
        assert_eq!(cache.id_of_entry(0x20), None);
        assert_eq!(cache.id_of_entry(0x40), Some(newest));
    }

    #[test]
    fn without_a_budget_nothing_is_chosen() {
        let mut cache = CodeCache::new(None);
        let id = cache.insert(unit(0x10, Owner::Compiler));
        cache.insert(unit(0x20, Owner::Compiler));
        assert_eq!(cache.choose_victims(id), 0);
        assert!(cache.take_core_victims(|_| true).is_empty());
        assert_eq!(cache.stats().peak_resident_bytes, 2 * 4096);
    }
}
