//! Reclaim: retired code waits in the ring until the host (or a round of
//! registered threads) declares quiescence, then goes to a release sink.
//!
//! The rules are `crate::reclaim`'s; this file is the broker's side of them:
//! each method takes the lock once, lets `Reclamation` decide, mirrors the
//! epoch for lock-free readers, and releases outside the lock. Code gets
//! into the ring through `change_code` (see `change.rs`) or [`Broker::retire`].

use super::{Broker, Shared};
use crate::compiler::{CodeHandle, Compiler};
use crate::error::{KilnError, Refused};
use crate::reclaim::ReclaimMode;
use crate::stats::Events;
use crate::sync::Ordering;

impl<H, P, D, W, E, const QUEUE: usize, const RETIRE: usize> Broker<H, P, D, W, E, QUEUE, RETIRE>
where
    E: Events,
{
    /// Retires `code` taken out of a bead by hand ([`Bead::take_code`](crate::Bead::take_code)); it is
    /// released after two quiesces like any other. A full ring hands it back.
    pub fn retire(&self, code: CodeHandle) -> Result<(), Refused<CodeHandle>> {
        self.shared
            .with(|shared| shared.reclaim.retire(code, false))
            .map_err(|code| Refused::new(KilnError::RetireFull, code))?;
        self.counters.retired.bump();
        Ok(())
    }

    /// Declares quiescence for every thread: each thread that may run
    /// kiln-published code has passed a point where it holds no entry, table
    /// or code pointer obtained from kiln, since the previous declaration.
    /// Advances the epoch; code retired two declarations ago (counted from
    /// the later of its retirement and the last reclamation-mode switch) is
    /// released through `compiler`. Returns how many.
    ///
    /// The first call moves an `Unmanaged` broker to [`ReclaimMode::Host`].
    /// See [`crate::reclaim`]'s invariants for the whole protocol.
    pub fn quiesce<C: Compiler<H>>(&self, compiler: &mut C) -> usize {
        self.quiesce_with(|code| compiler.release(code))
    }

    /// [`quiesce`](Self::quiesce), handing released code to `release`
    /// instead of a compiler (a layer that frees code itself).
    pub fn quiesce_with(&self, release: impl FnMut(CodeHandle)) -> usize {
        let mut releasable = heapless::Vec::<CodeHandle, RETIRE>::new();
        let epoch = self.shared.with(|shared| {
            shared.reclaim.advance(&mut releasable);
            self.mirror_reclaim(shared);
            shared.reclaim.epoch()
        });
        let released = self.release_all(release, &releasable);
        self.events.quiesced(epoch, released);
        released
    }

    /// One round of registered threads: every registered thread reported a
    /// quiescent point after reading [`epoch`](Self::epoch) `expected`.
    /// Advances and releases as [`quiesce`](Self::quiesce) does, but only if
    /// the epoch is still `expected` and the broker is in
    /// [`ReclaimMode::Registered`] — checked and advanced in one step, so two
    /// reclaimers that gathered the same round cannot both advance on it.
    /// Released code goes to `release`. `None` means the round is void
    /// (gather a new one); `Some(n)` that the epoch advanced and `n` handles
    /// were released.
    pub fn quiesce_from(&self, expected: u32, release: impl FnMut(CodeHandle)) -> Option<usize> {
        let mut releasable = heapless::Vec::<CodeHandle, RETIRE>::new();
        let advanced = self.shared.with(|shared| {
            let advanced = shared.reclaim.advance_from(expected, &mut releasable);
            self.mirror_reclaim(shared);
            advanced
        });
        advanced.then(|| {
            let released = self.release_all(release, &releasable);
            self.events.quiesced(expected.wrapping_add(1), released);
            released
        })
    }

    /// The reclamation epoch. A registered thread reads it and reports it as
    /// the epoch of its quiescent point; Acquire pairs with the Release store
    /// in `mirror_reclaim`, so the reader sees every unpublish made before
    /// that epoch began.
    pub fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Who declares quiescence now.
    pub fn reclaim_mode(&self) -> ReclaimMode {
        // Relaxed: a hint for picking a path; every decision that depends on
        // the mode is re-checked under the lock.
        ReclaimMode::from_u8(self.reclaim_mode.load(Ordering::Relaxed) as u8)
    }

    /// Moves to `mode` if it is further along (`Unmanaged → Host →
    /// Registered`; modes never move back). A switch is a grace period of its
    /// own: code retired before it needs two advances under the new mode.
    /// Returns the floor (the epoch of the last switch).
    pub fn enter_reclaim_mode(&self, mode: ReclaimMode) -> u32 {
        self.shared.with(|shared| {
            let floor = shared.reclaim.enter(mode);
            self.mirror_reclaim(shared);
            floor
        })
    }

    /// The epoch of the last reclamation-mode switch: code parked before it
    /// (by [`park_retired`](Self::park_retired)) may be released once
    /// [`epoch`](Self::epoch) is two past it.
    pub fn reclaim_floor(&self) -> u32 {
        self.shared.with(|shared| shared.reclaim.floor())
    }

    /// In [`ReclaimMode::Unmanaged`] (nobody declares quiescence), moves
    /// every retired handle out of the ring to `park`, without advancing the
    /// epoch: parked code must never be freed while it may run; it is only
    /// kept from filling the ring. Does nothing in a managed mode. Returns
    /// how many were parked.
    pub fn park_retired(&self, mut park: impl FnMut(CodeHandle)) -> usize {
        let mut parked = heapless::Vec::<CodeHandle, RETIRE>::new();
        self.shared.with(|shared| shared.reclaim.park(&mut parked));
        for &code in &parked {
            park(code);
        }
        parked.len()
    }

    fn mirror_reclaim(&self, shared: &Shared<H, QUEUE, RETIRE>) {
        self.reclaim_mode.store(shared.reclaim.mode() as u32, Ordering::Relaxed);
        // Release pairs with the Acquire in `epoch`: a thread that reads the
        // new epoch sees every unpublish made under the lock before it.
        self.epoch.store(shared.reclaim.epoch(), Ordering::Release);
    }

    fn release_all(&self, mut release: impl FnMut(CodeHandle), handles: &[CodeHandle]) -> usize {
        for &code in handles {
            release(code);
            self.events.released(code);
        }
        self.counters.released.add(handles.len() as u32);
        handles.len()
    }

    /// Releases every retired handle now, whatever its epoch (shutdown),
    /// into `release` (a compiler's `release`, or a place that keeps them).
    ///
    /// # Safety
    ///
    /// 1. No thread is running, or will run, code or OSR entries it obtained
    ///    from this broker before the call, other than code still installed
    ///    in a bead.
    pub unsafe fn release_retired_now(&self, release: impl FnMut(CodeHandle)) -> usize {
        let mut releasable = heapless::Vec::<CodeHandle, RETIRE>::new();
        self.shared.with(|shared| shared.reclaim.drain(&mut releasable));
        self.release_all(release, &releasable)
    }
}
