//! The kiln-std glue (feature `std-adapter`): what a backend's
//! `JitBackend` implementation does with units owned by kiln-std beads.
//!
//! Eviction goes through the bead (`Bead::evict`): recompilation pauses for
//! the eviction pause and the code is retired like any other deopt, so it
//! is freed only once no thread can run it. It is not a bailout: the bead's
//! `bailout_count` is untouched. A compile only chooses the victims;
//! [`CodeMemory::evict_bead_victims`], called from the backend's
//! `JitBackend::after_compile` (which kiln-std runs once the compile is
//! over and its result published), evicts them.

use std::sync::Weak;

use kiln_std::{Bead, OsrEntry};

use crate::memory::CodeMemory;

impl<C> CodeMemory<C> {
    /// Evicts every queued kiln-std victim, whichever compile chose it
    /// (another worker's, a standalone compile's); a victim kiln refused
    /// counts as live again. For `JitBackend::after_compile`.
    pub fn evict_bead_victims(&self) {
        let victims = self.cache().take_bead_victims();
        for (id, entry, bead) in victims {
            log::debug!(target: "kiln", "{}: code budget reached, evicting unit {id}", self.backend());
            if !evict_through_bead(&bead, entry, self.eviction_pause()) {
                self.cache().unevict(id);
            }
        }
    }

    /// What `JitBackend::compile_with_osr` returns for unit `id`: its entry
    /// (null if a racing release freed it already) and, if `with_osr`, its
    /// OSR entries.
    pub fn published(&self, id: u64, with_osr: bool) -> (*mut (), Vec<OsrEntry>) {
        let cache = self.cache();
        match cache.get(id) {
            Some(unit) => (unit.entry() as *mut (), if with_osr { unit.osr().to_vec() } else { Vec::new() }),
            None => (std::ptr::null_mut(), Vec::new()),
        }
    }

    /// The unit `JitBackend::release` names by its entry; `None` (logged)
    /// for code this backend does not know.
    pub fn unit_of_entry(&self, code: *mut ()) -> Option<u64> {
        let id = self.cache().id_of_entry(code as usize);
        if id.is_none() {
            log::warn!(target: "kiln", "{}: release of unknown code {code:p}", self.backend());
        }
        id
    }
}

/// Sends `bead`'s code at `entry` back to the interpreter. True if the code
/// is on its way to release (evicted now, or its bead is gone); false if
/// it is not the bead's installed code or kiln refused (the unit may be
/// chosen again later).
pub fn evict_through_bead(bead: &Weak<Bead>, entry: usize, pause: u32) -> bool {
    // A dropped bead retired its code already.
    let Some(bead) = bead.upgrade() else { return true };
    let installed = |bead: &Bead| bead.compiled().map(|code| code as usize) == Some(entry);
    if !installed(&bead) {
        return false;
    }
    bead.evict(pause);
    !installed(&bead)
}
