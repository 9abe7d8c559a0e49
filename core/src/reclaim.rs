//! The reclamation protocol: when retired code may be released.
//!
//! Code that is no longer published may still be running on some thread.
//! kiln releases it only once every thread that could have loaded it has
//! passed a quiescent point since it was unpublished. This module is the
//! whole rule; every path that retires (publish over old code, swap,
//! bailout, invalidate, reload, evict, a hand-made `Broker::retire`) and
//! every path that releases (a host `quiesce`, a round of registered
//! threads, unmanaged parking, shutdown) goes through it, under the broker's
//! lock.
//!
//! # Terms
//!
//! - **Epoch**: one counter, advanced only by `Reclamation::advance` and
//!   `Reclamation::advance_from`. An advance from `e` to `e + 1` certifies
//!   that every thread that may run kiln code passed a quiescent point after
//!   the epoch became `e`.
//! - **Tag**: code is retired in the current epoch and tagged with it.
//! - **Mode**: who certifies advances ([`ReclaimMode`]): nobody
//!   (`Unmanaged`), the host (`Host`: [`Broker::quiesce`]), or a round of
//!   registered threads (`Registered`: [`Broker::quiesce_from`]).
//! - **Floor**: the epoch of the last mode switch.
//!
//! # Invariants
//!
//! 1. **Two advances after retirement.** Code tagged `t` is released when
//!    the epoch reaches `max(t, floor) + 2`. It was unpublished while the
//!    epoch was `t`; the advance to `t + 1` may have been certified by a
//!    quiescent point taken before the unpublish, but the advance to `t + 2`
//!    certifies points taken after the epoch became `t + 1`, which is after
//!    the unpublish (same lock). A thread past such a point can no longer
//!    load the old code (the unpublish happens before its point).
//! 2. **A round and its advance are one step.** `advance_from(e)` advances
//!    only if the epoch is still `e`, checked and changed under one lock, so
//!    two reclaimers that saw the same round of reports cannot both advance
//!    on it: the loser sees the epoch moved and must gather a new round.
//! 3. **A mode switch is a grace period of its own.** Advances made under
//!    the old mode (none are made while unmanaged, but the host may have
//!    made some before threads registered) do not count for code retired
//!    before the switch: the switch raises the floor to the current epoch,
//!    so such code needs two advances by the new mode.
//! 4. **Unmanaged mode never releases.** Nobody certifies anything, so the
//!    epoch does not move; retired code is only moved out of the ring
//!    (`Reclamation::park`) to a place that never frees backend code
//!    (kiln-std's limbo). Parked code becomes releasable only when a later
//!    mode counts two advances from the switch (kiln-std's limbo tags it
//!    with the floor).
//! 5. **Modes only move forward**: `Unmanaged → Host → Registered`, or
//!    `Unmanaged → Registered`. A host `quiesce` in `Registered` mode is a
//!    declaration for every thread and advances without a round.
//! 6. **Bounded.** The ring holds `CAPACITY` handles; a retirement that
//!    finds it full is refused (the caller reports it and reclaims), and
//!    compile jobs that will replace code reserve their slot when claimed,
//!    so a finished compile is never stuck holding code it cannot retire.
//!
//! Epochs are `u32` and wrap; comparisons use wrapping distance, valid while
//! a reader's view is less than 2³¹ advances old.
//!
//! [`Broker::quiesce`]: crate::Broker::quiesce
//! [`Broker::quiesce_from`]: crate::Broker::quiesce_from

use heapless::Deque;

use crate::compiler::CodeHandle;

/// Who declares quiescence for a broker (see the module notes of
/// [`Broker::quiesce`](crate::Broker::quiesce) and kiln-std's reclamation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum ReclaimMode {
    /// Nobody: retired code can only be parked, never released.
    Unmanaged = 0,
    /// The host, by calling [`Broker::quiesce`](crate::Broker::quiesce).
    Host = 1,
    /// Rounds of registered threads, through
    /// [`Broker::quiesce_from`](crate::Broker::quiesce_from) (the host may
    /// still call `quiesce`).
    Registered = 2,
}

impl ReclaimMode {
    pub(crate) const fn from_u8(raw: u8) -> Self {
        match raw {
            0 => Self::Unmanaged,
            1 => Self::Host,
            _ => Self::Registered,
        }
    }
}

/// `a` is at or after `b` on the wrapping epoch line.
pub(crate) const fn epoch_at_or_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

/// The retire ring and the epoch, kept under the broker's lock.
pub(crate) struct Reclamation<const CAPACITY: usize> {
    ring: Deque<(CodeHandle, u32), CAPACITY>,
    reserved: usize,
    epoch: u32,
    mode: ReclaimMode,
    floor: u32,
}

impl<const CAPACITY: usize> Reclamation<CAPACITY> {
    pub(crate) const fn new() -> Self {
        const { assert!(CAPACITY > 0, "the retire ring needs room for one handle") };
        Self { ring: Deque::new(), reserved: 0, epoch: 0, mode: ReclaimMode::Unmanaged, floor: 0 }
    }

    /// Slots neither used nor reserved.
    pub(crate) fn free(&self) -> usize {
        CAPACITY - self.ring.len() - self.reserved
    }

    /// Holds a slot for a retirement that will happen later.
    pub(crate) fn reserve(&mut self) -> bool {
        let ok = self.free() > 0;
        self.reserved += usize::from(ok);
        ok
    }

    pub(crate) fn unreserve(&mut self) {
        debug_assert!(self.reserved > 0);
        self.reserved -= 1;
    }

    /// Retires `code` in the current epoch, using a reservation if
    /// `reserved`; a full ring hands it back.
    pub(crate) fn retire(&mut self, code: CodeHandle, reserved: bool) -> Result<(), CodeHandle> {
        if reserved {
            self.unreserve();
        } else if self.free() == 0 {
            return Err(code);
        }
        self.ring.push_back((code, self.epoch)).map_err(|(code, _)| code)
    }

    /// Moves to `mode` if it is further along (invariant 5); a switch raises
    /// the floor (invariant 3). Returns the floor.
    pub(crate) fn enter(&mut self, mode: ReclaimMode) -> u32 {
        if mode > self.mode {
            self.mode = mode;
            self.floor = self.epoch;
        }
        self.floor
    }

    /// A declaration by the host: enters `Host` mode if unmanaged, advances,
    /// and moves what is now releasable into `out`.
    pub(crate) fn advance(&mut self, out: &mut heapless::Vec<CodeHandle, CAPACITY>) {
        self.enter(ReclaimMode::Host);
        self.step(out);
    }

    /// A round of registered threads that all reported in epoch `expected`:
    /// advances only if the epoch is still `expected` and the mode is
    /// `Registered` (invariant 2). `false` means the round is void.
    pub(crate) fn advance_from(&mut self, expected: u32, out: &mut heapless::Vec<CodeHandle, CAPACITY>) -> bool {
        if self.mode != ReclaimMode::Registered || self.epoch != expected {
            return false;
        }
        self.step(out);
        true
    }

    fn step(&mut self, out: &mut heapless::Vec<CodeHandle, CAPACITY>) {
        self.epoch = self.epoch.wrapping_add(1);
        // Tags are non-decreasing front to back and the floor applies to all,
        // so the releasable entries are a prefix.
        while let Some(&(code, retired)) = self.ring.front() {
            let counted_from = if epoch_at_or_after(retired, self.floor) { retired } else { self.floor };
            if self.epoch.wrapping_sub(counted_from) < 2 {
                break;
            }
            self.ring.pop_front();
            // Cannot fail: `out` has the ring's capacity and starts empty.
            let _ = out.push(code);
        }
    }

    /// Unmanaged mode: moves every retired handle into `out` to be parked,
    /// without advancing (invariant 4). Does nothing in a managed mode.
    pub(crate) fn park(&mut self, out: &mut heapless::Vec<CodeHandle, CAPACITY>) {
        if self.mode != ReclaimMode::Unmanaged {
            return;
        }
        while let Some((code, _)) = self.ring.pop_front() {
            let _ = out.push(code);
        }
    }

    /// Shutdown: every handle, whatever its epoch.
    pub(crate) fn drain(&mut self, out: &mut heapless::Vec<CodeHandle, CAPACITY>) {
        while let Some((code, _)) = self.ring.pop_front() {
            let _ = out.push(code);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.ring.len()
    }

    pub(crate) fn epoch(&self) -> u32 {
        self.epoch
    }

    pub(crate) fn mode(&self) -> ReclaimMode {
        self.mode
    }

    pub(crate) fn floor(&self) -> u32 {
        self.floor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(raw: usize) -> CodeHandle {
        CodeHandle::from_raw(raw).unwrap()
    }

    type Out = heapless::Vec<CodeHandle, 4>;

    #[test]
    fn released_two_advances_after_retirement() {
        let mut ring = Reclamation::<4>::new();
        ring.retire(handle(1), false).unwrap();
        let mut out = Out::new();
        ring.advance(&mut out);
        assert!(out.is_empty(), "one quiesce is not enough");
        ring.retire(handle(2), false).unwrap();
        ring.advance(&mut out);
        assert_eq!(out.as_slice(), &[handle(1)]);
        out.clear();
        ring.advance(&mut out);
        assert_eq!(out.as_slice(), &[handle(2)]);
    }

    #[test]
    fn full_ring_refuses_and_reservations_count() {
        let mut ring = Reclamation::<2>::new();
        assert!(ring.reserve());
        ring.retire(handle(1), false).unwrap();
        assert_eq!(ring.retire(handle(2), false), Err(handle(2)));
        assert!(!ring.reserve());
        ring.retire(handle(3), true).unwrap();
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.free(), 0);
    }

    #[test]
    fn a_round_is_void_once_the_epoch_moved() {
        let mut ring = Reclamation::<4>::new();
        let mut out = Out::new();
        assert!(!ring.advance_from(0, &mut out), "no round counts before threads register");
        ring.enter(ReclaimMode::Registered);
        assert!(ring.advance_from(0, &mut out));
        assert!(!ring.advance_from(0, &mut out), "a second reclaimer's round on the same epoch is void");
        assert!(ring.advance_from(1, &mut out));
        assert_eq!(ring.epoch(), 2);
    }

    #[test]
    fn the_mode_switch_needs_two_advances_of_its_own() {
        let mut ring = Reclamation::<4>::new();
        let mut out = Out::new();
        ring.enter(ReclaimMode::Host);
        ring.retire(handle(1), false).unwrap();
        ring.advance(&mut out); // epoch 1: handle 1 needs one more
        ring.enter(ReclaimMode::Registered); // floor 1
        assert!(ring.advance_from(1, &mut out));
        assert!(out.is_empty(), "the first round after the switch must not release older code");
        assert!(ring.advance_from(2, &mut out));
        assert_eq!(out.as_slice(), &[handle(1)]);
    }

    #[test]
    fn unmanaged_parks_without_advancing_and_managed_never_parks() {
        let mut ring = Reclamation::<4>::new();
        let mut out = Out::new();
        ring.retire(handle(1), false).unwrap();
        ring.park(&mut out);
        assert_eq!((out.as_slice(), ring.epoch()), (&[handle(1)][..], 0));
        out.clear();
        ring.retire(handle(2), false).unwrap();
        assert_eq!(ring.enter(ReclaimMode::Host), 0);
        ring.park(&mut out);
        assert!(out.is_empty());
        ring.advance(&mut out);
        assert!(out.is_empty(), "retired before the switch, one advance is not enough");
        ring.advance(&mut out);
        assert_eq!(out.as_slice(), &[handle(2)]);
    }

    #[test]
    fn modes_only_move_forward() {
        let mut ring = Reclamation::<4>::new();
        let mut out = Out::new();
        ring.enter(ReclaimMode::Registered);
        ring.advance(&mut out);
        assert_eq!(ring.mode(), ReclaimMode::Registered);
        assert_eq!(ring.enter(ReclaimMode::Host), 0, "no switch back, the floor stays");
    }

    #[test]
    fn epochs_compare_across_the_wrap() {
        assert!(epoch_at_or_after(0, u32::MAX));
        assert!(epoch_at_or_after(5, 5));
        assert!(!epoch_at_or_after(u32::MAX, 0));
    }
}
