//! [`UnitBook`]: which bead owns which unit, for a backend's kiln-core
//! compiler, and the eviction of its units through the broker.
//!
//! The compiler cannot reach the broker while it compiles, so budget
//! evictions of kiln-core code wait in the cache's queue until the host
//! calls the compiler's `evict` with its broker (after each `pump`, say).
//! The book is an `Arc<Mutex<..>>` shared by the compiler's clones and
//! held only to insert, remove or copy out, never while compiling, so a
//! job system's tasks compile in parallel with one clone each.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};

use kiln_core::{BeadRef, CodeHandle, Compiled, DynBroker};

use crate::memory::CodeMemory;

/// The bead of every unit a kiln-core compiler (or a clone) made and kiln
/// has not released. Clones share one book.
#[derive(Debug)]
pub struct UnitBook<H> {
    beads: Arc<Mutex<HashMap<u64, H>>>,
}

impl<H> Clone for UnitBook<H> {
    fn clone(&self) -> Self {
        Self { beads: Arc::clone(&self.beads) }
    }
}

impl<H> Default for UnitBook<H> {
    fn default() -> Self {
        Self { beads: Arc::default() }
    }
}

impl<H> UnitBook<H> {
    fn beads(&self) -> MutexGuard<'_, HashMap<u64, H>> {
        // The book is consistent at every step: a panic elsewhere while it
        // was held leaves nothing half-done.
        self.beads.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Units in the book.
    pub fn len(&self) -> usize {
        self.beads().len()
    }

    /// Whether the book is empty.
    pub fn is_empty(&self) -> bool {
        self.beads().is_empty()
    }

    /// Forgets unit `id` (kiln released it; the backend frees it).
    pub fn forget(&self, id: u64) {
        self.beads().remove(&id);
    }
}

impl<H: BeadRef> UnitBook<H> {
    /// Books unit `id` for `bead` and returns it as kiln-core's `Compiled`
    /// under `handle`, with its OSR table.
    ///
    /// # Panics
    ///
    /// If the unit is not live (call it right after compiling) or its
    /// entry is null.
    pub fn publish<C>(&self, memory: &CodeMemory<C>, id: u64, handle: CodeHandle, bead: H) -> Compiled {
        self.beads().insert(id, bead);
        let cache = memory.cache();
        let unit = cache.get(id).expect("just compiled");
        let compiled = Compiled::new(unit.entry() as *mut (), handle).expect("compiled code is never at address 0");
        match unit.osr_table() {
            // The table and its entries live in the unit until `release(handle)`
            // frees it (or kiln hands an unpublished handle back to `release`).
            // SAFETY: `with_osr` (1) valid until release, (2) immutable and Sync.
            Some(table) => unsafe { compiled.with_osr(NonNull::from(table)) },
            None => compiled,
        }
    }

    /// Carries out the budget's evictions of this book's units: each victim
    /// still installed is sent back to the interpreter through `broker`
    /// (`evict`: no bailout counted, recompile paused for the memory's
    /// eviction pause). Returns how many were evicted; the others count as
    /// live again.
    pub fn evict<C>(&self, memory: &CodeMemory<C>, broker: &dyn DynBroker<H>) -> usize {
        // The book is not held while calling the broker: the broker calls
        // `release` (which takes the book) with its own lock held.
        let victims: Vec<(u64, usize, H)> = {
            let beads = self.beads();
            let victims = memory.cache().take_core_victims(|id| beads.contains_key(&id));
            victims.into_iter().map(|(id, entry)| (id, entry, beads[&id].clone())).collect()
        };
        let pause = NonZeroU32::new(memory.eviction_pause()).unwrap_or(NonZeroU32::MIN);
        let mut evicted = 0;
        for (id, entry, bead) in victims {
            let installed = bead.bead().compiled().map(|code| code.as_ptr() as usize) == Some(entry);
            if installed && broker.evict(&bead, pause).is_ok() {
                evicted += 1;
            } else {
                memory.cache().unevict(id);
            }
        }
        evicted
    }
}
