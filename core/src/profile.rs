//! Hotness profiles: what kiln learned about one function, as a
//! fixed-size record a host can save and hand back in a later run.
//!
//! kiln-core keeps no list of beads, so it cannot walk them: the host (or a
//! [`BeadPool`](crate::BeadPool), which does hold its beads) supplies them,
//! with a key of its choosing, and [`records`] fills a caller-owned slice.
//! Nothing allocates; reading a record is a handful of Relaxed loads, never
//! on a call path. The record holds what the bead itself knows (counts,
//! highest tier reached, bailouts, blacklisting); a layer above adds what
//! it tracks off the bead (kiln-std: the OSR sites used) and chooses a file
//! format.

use crate::bead::Bead;

/// What one bead learned so far. `Copy`, fixed-size, no pointers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BeadProfile {
    /// Calls counted (approximate: racing calls may lose counts).
    pub calls: u32,
    /// Weighted loop back-edges counted.
    pub backedges: u32,
    /// The highest tier code was installed at, if any.
    pub tier_reached: Option<u8>,
    /// Bailouts and failed compiles since the last reset.
    pub bailouts: u16,
    /// Whether compilation was refused when the record was read.
    pub blacklisted: bool,
}

impl BeadProfile {
    /// The record of `bead` now.
    pub fn of(bead: &Bead) -> Self {
        Self {
            calls: bead.invocation_count(),
            backedges: bead.backedge_count(),
            tier_reached: bead.tier_reached(),
            bailouts: u16::try_from(bead.bailout_count()).unwrap_or(u16::MAX),
            blacklisted: bead.is_blacklisted(),
        }
    }

    /// One number to order functions by: calls plus back-edges (a loop
    /// that ran hot is as worth compiling as a function called often).
    pub fn hotness(&self) -> u64 {
        u64::from(self.calls) + u64::from(self.backedges)
    }
}

/// A [`BeadProfile`] with the host's key for its function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ProfileRecord<K> {
    /// The host's key (stable across runs; the host decides what it covers).
    pub key: K,
    /// What the bead learned.
    pub profile: BeadProfile,
}

/// Fills `out` with the records of `beads` (key and bead, as the host
/// supplies them) in their order; returns how many were written, at most
/// `out.len()` (the rest are skipped). Invalidated beads are skipped.
pub fn records<'a, K: Copy + 'a>(
    beads: impl IntoIterator<Item = (K, &'a Bead)>,
    out: &mut [ProfileRecord<K>],
) -> usize {
    let mut written = 0;
    for (key, bead) in beads.into_iter().filter(|(_, bead)| !bead.is_invalidated()) {
        let Some(slot) = out.get_mut(written) else { break };
        *slot = ProfileRecord { key, profile: BeadProfile::of(bead) };
        written += 1;
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_bead_has_an_empty_record() {
        let bead = Bead::new(core::ptr::null_mut());
        assert_eq!(BeadProfile::of(&bead), BeadProfile::default());
    }

    #[test]
    fn records_follow_the_beads_and_stop_at_the_slice_end() {
        let (a, b, c) =
            (Bead::new(core::ptr::null_mut()), Bead::new(core::ptr::null_mut()), Bead::new(core::ptr::null_mut()));
        for _ in 0..5 {
            a.tick();
        }
        b.tick();
        let mut out = [ProfileRecord::default(); 2];
        assert_eq!(records([(1u32, &a), (2, &b), (3, &c)], &mut out), 2);
        assert_eq!((out[0].key, out[0].profile.calls, out[0].profile.hotness()), (1, 5, 5));
        assert_eq!((out[1].key, out[1].profile.calls), (2, 1));
    }
}
