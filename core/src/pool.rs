//! A fixed pool of beads, for hosts that want kiln to hold them.
//!
//! `N` slots live inline (the pool can be a `static`). Registering takes a
//! recycled slot or the next never-used one; [`BeadPool::invalidate`]
//! invalidates through the broker and files the slot as dead; [`prune`]
//! moves dead slots to the free list. Neither walks the pool nor allocates.
//! A recycled bead keeps counting generations from where it was, so a stale
//! queue entry for its previous life can never match it.
//!
//! [`prune`]: BeadPool::prune

use crate::bead::Bead;
use crate::error::KilnError;
use crate::sync::{AtomicUsize, Lock, Ordering};

struct Slots<const N: usize> {
    free: heapless::Vec<usize, N>,
    dead: heapless::Vec<usize, N>,
}

/// `N` inline beads with O(1) register, invalidate and prune.
pub struct BeadPool<const N: usize> {
    beads: [Bead; N],
    never_used: AtomicUsize,
    slots: Lock<Slots<N>>,
}

impl<const N: usize> core::fmt::Debug for BeadPool<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BeadPool").field("capacity", &N).field("in_use", &self.in_use()).finish()
    }
}

impl<const N: usize> BeadPool<N> {
    /// An empty pool.
    pub const fn new() -> Self {
        const { assert!(N > 0, "a pool needs at least one slot") };
        Self {
            beads: [const { Bead::new(core::ptr::null_mut()) }; N],
            never_used: AtomicUsize::new(0),
            slots: Lock::new(Slots { free: heapless::Vec::new(), dead: heapless::Vec::new() }),
        }
    }

    /// A bead for the host function `core`, or `CapacityFull`.
    pub fn register(&self, core: *mut ()) -> Result<&Bead, KilnError> {
        let index = match self.slots.with(|slots| slots.free.pop()) {
            Some(index) => index,
            None => {
                let index = self.never_used.fetch_add(1, Ordering::Relaxed);
                if index >= N {
                    self.never_used.fetch_sub(1, Ordering::Relaxed);
                    return Err(KilnError::CapacityFull);
                }
                index
            }
        };
        let bead = &self.beads[index];
        bead.recycle(core);
        Ok(bead)
    }

    /// Invalidates `bead` through `invalidate` (the broker's
    /// [`invalidate`](crate::Broker::invalidate)) and files its slot as dead.
    /// The slot is reused only after the next [`prune`](Self::prune).
    pub fn invalidate(
        &self,
        bead: &Bead,
        invalidate: impl FnOnce(&Bead) -> Result<(), KilnError>,
    ) -> Result<(), KilnError> {
        let index = self.index_of(bead).ok_or(KilnError::Invalidated)?;
        invalidate(bead)?;
        self.slots.with(|slots| {
            // Cannot overflow: each slot is dead at most once between prunes.
            let _ = slots.dead.push(index);
        });
        Ok(())
    }

    /// Makes every dead slot reusable; returns how many. Call when the host
    /// no longer holds references to the invalidated beads.
    pub fn prune(&self) -> usize {
        self.slots.with(|slots| {
            let count = slots.dead.len();
            for index in slots.dead.drain(..) {
                let _ = slots.free.push(index);
            }
            count
        })
    }

    /// Beads registered and not yet pruned.
    pub fn in_use(&self) -> usize {
        let used = self.never_used.load(Ordering::Relaxed).min(N);
        used - self.slots.with(|slots| slots.free.len())
    }

    /// Calls `f` with each registered, live bead of the pool and its
    /// [`BeadProfile`](crate::BeadProfile), in slot order (for a hotness
    /// profile; see [`profile_records`](crate::profile_records)). Reads only:
    /// no lock, no allocation. A bead registered meanwhile may be missed.
    pub fn for_each_profile(&self, mut f: impl FnMut(&Bead, crate::BeadProfile)) {
        let used = self.never_used.load(Ordering::Relaxed).min(N);
        for bead in self.beads[..used].iter().filter(|bead| !bead.is_invalidated()) {
            f(bead, crate::BeadProfile::of(bead));
        }
    }

    fn index_of(&self, bead: &Bead) -> Option<usize> {
        let base = self.beads.as_ptr() as usize;
        let offset = (bead as *const Bead as usize).checked_sub(base)?;
        let index = offset / core::mem::size_of::<Bead>();
        (index < N && offset % core::mem::size_of::<Bead>() == 0).then_some(index)
    }
}

impl<const N: usize> Default for BeadPool<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BeadState;

    fn invalidate_directly(bead: &Bead) -> Result<(), KilnError> {
        let word = bead.word();
        bead.state.store(word.next_generation().with_phase(crate::state::Phase::Invalidated));
        Ok(())
    }

    #[test]
    fn register_until_full_then_recycle_after_prune() {
        let pool = BeadPool::<2>::new();
        let a = pool.register(core::ptr::null_mut()).unwrap();
        let b = pool.register(core::ptr::null_mut()).unwrap();
        assert!(!core::ptr::eq(a, b));
        assert_eq!(pool.register(core::ptr::null_mut()).unwrap_err(), KilnError::CapacityFull);
        assert_eq!(pool.in_use(), 2);

        let old_generation = a.generation();
        pool.invalidate(a, invalidate_directly).unwrap();
        assert_eq!(pool.register(core::ptr::null_mut()).unwrap_err(), KilnError::CapacityFull, "not before prune");
        assert_eq!(pool.prune(), 1);
        assert_eq!(pool.in_use(), 1);

        let mut marker = 0u8;
        let again = pool.register(core::ptr::from_mut(&mut marker).cast()).unwrap();
        assert!(core::ptr::eq(again, a), "the pruned slot is reused");
        assert_eq!(again.state(), BeadState::Interpreted);
        assert_eq!(again.invocation_count(), 0);
        assert_eq!(again.core_handle(), core::ptr::from_mut(&mut marker).cast());
        assert!(again.generation() > old_generation, "generations keep counting across lives");
    }

    #[test]
    fn profiles_cover_the_live_beads() {
        let pool = BeadPool::<4>::new();
        let a = pool.register(core::ptr::null_mut()).unwrap();
        let b = pool.register(core::ptr::null_mut()).unwrap();
        a.tick();
        pool.invalidate(b, invalidate_directly).unwrap();
        let mut seen = heapless::Vec::<u32, 4>::new();
        pool.for_each_profile(|_, profile| seen.push(profile.calls).unwrap());
        assert_eq!(seen.as_slice(), &[1]);
    }

    #[test]
    fn foreign_beads_are_refused() {
        let pool = BeadPool::<1>::new();
        let outsider = Bead::new(core::ptr::null_mut());
        assert_eq!(pool.invalidate(&outsider, invalidate_directly), Err(KilnError::Invalidated));
        assert_eq!(outsider.state(), BeadState::Interpreted, "nothing was done to it");
    }

    #[test]
    fn a_failed_invalidate_files_nothing() {
        let pool = BeadPool::<1>::new();
        let bead = pool.register(core::ptr::null_mut()).unwrap();
        assert_eq!(pool.invalidate(bead, |_| Err(KilnError::RetireFull)), Err(KilnError::RetireFull));
        assert_eq!(pool.prune(), 0);
    }
}
