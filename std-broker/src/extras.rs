//! The rarely used parts of a bead, kept off it: one side table per
//! domain, keyed by the bead's address, holding an entry only for beads
//! that use one of these parts.
//!
//! A bead is 96 bytes of heap with its `Arc` header (see `bead`); every
//! field on it is paid by every registered function, most of which never
//! get an `on_invalidate` hook or climb past a tiered adapter's first tier.
//! Those parts live here, and a bead without any costs nothing here. A
//! flag bit on the bead ([`HAS_EXTRAS`](crate::bead)) says whether it has
//! an entry, so a bead without one never takes this table's lock: not when
//! it is invalidated, not when it drops. The function's name and an
//! attached compile factory and a profile key (with the OSR sites a keyed
//! function used) live here too.
//!
//! The lock is held only to read or change an entry; host callbacks taken
//! from an entry (the `on_invalidate` hook) run after it is released, so a
//! hook may call back into kiln.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// An invalidation hook, as `register` takes it.
pub(crate) type InvalidateHook = Box<dyn Fn() + Send + Sync>;

/// A compile factory attached to a bead, type-erased: each adapter stores
/// its own factory type here and downcasts it back (see
/// `BackendAdapter::attach`). An `Arc`, so the compile that uses it clones
/// it out and releases the table's lock before running it.
pub(crate) type AttachedFactory = Arc<dyn Any + Send + Sync>;

/// One bead's rarely used parts.
#[derive(Default)]
pub(crate) struct Extras {
    /// Runs once when the bead is invalidated.
    pub(crate) on_invalidate: Option<InvalidateHook>,
    /// Bit `i`: a tiered adapter queued the promotion to tier `i + 1` (see
    /// `TieredBound::is_queued_for`).
    pub(crate) queued_tiers: u16,
    /// The function's name, given at registration, for log lines.
    pub(crate) name: Option<Arc<str>>,
    /// The compile factory attached to the bead, if any.
    pub(crate) factory: Option<AttachedFactory>,
    /// The host's key for hotness profiles (see `profile`).
    pub(crate) profile_key: Option<crate::profile::ProfileKey>,
    /// Loop sites a keyed function was promoted at (see `profile`).
    pub(crate) osr_sites: Vec<u64>,
}

/// The side table of one domain. See the module docs. Shared (an `Arc`)
/// by the domain and its log events, which name the bead in each line.
#[derive(Default)]
pub(crate) struct ExtrasTable {
    entries: Mutex<HashMap<usize, Extras>>,
}

impl std::fmt::Debug for ExtrasTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtrasTable").field("entries", &self.lock().len()).finish()
    }
}

impl ExtrasTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Extras>> {
        // A panic never happens under this lock (no host code runs under
        // it), but a poisoned map is still consistent: go on with it.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the entry of the bead at `key`, creating it first;
    /// `created` runs under the lock when it did (the bead sets its flag
    /// there, so the flag is never seen without its entry).
    pub(crate) fn update<R>(&self, key: usize, created: impl FnOnce(), f: impl FnOnce(&mut Extras) -> R) -> R {
        let mut entries = self.lock();
        let entry = entries.entry(key).or_insert_with(|| {
            created();
            Extras::default()
        });
        f(entry)
    }

    /// Runs `f` on the entry of the bead at `key`, if it has one.
    pub(crate) fn read<R>(&self, key: usize, f: impl FnOnce(&mut Extras) -> R) -> Option<R> {
        self.lock().get_mut(&key).map(f)
    }

    /// The name of the bead at `key`, if it was given one. For log lines:
    /// takes the lock, so call it only when the line will be written.
    pub(crate) fn name(&self, key: usize) -> Option<Arc<str>> {
        self.lock().get(&key).and_then(|extras| extras.name.clone())
    }

    /// Drops the entry of the bead at `key` (the bead is dropping).
    pub(crate) fn remove(&self, key: usize) -> Option<Extras> {
        self.lock().remove(&key)
    }

    /// Entries held (beads with a rarely used part).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}
