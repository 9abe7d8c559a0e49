//! kiln-std's half of reclamation: the registry of threads that report
//! quiescent points, and the limbo that keeps code retired while nobody
//! declared quiescence. Only what needs allocation lives here; the rules
//! (epochs, rounds, modes, the two-advance rule) are kiln-core's
//! `reclaim` module, and every decision below goes through it.
//!
//! # How kiln-std drives the protocol
//!
//! - **Unmanaged** (a plain beadie user: nobody registered, nobody called
//!   `quiesce`): a reclamation step parks retired code in the limbo, without
//!   advancing the epoch. Parked code is never handed to its backend while
//!   unmanaged.
//! - **Host** (`Beadie::quiesce`): each call is a declaration for every
//!   thread; kiln-core advances and releases. Workers never declare for the
//!   host.
//! - **Registered** (`Beadie::register_thread`): a reclamation step (a
//!   worker, a host pump, a full retire ring) reads the epoch `e`, checks
//!   that every live registered slot reported `e`, and asks kiln-core to
//!   advance from `e` — one step under kiln-core's lock, so of two
//!   reclaimers that saw the same reports only one advances. Once every
//!   registered thread has unregistered, rounds complete without reports:
//!   by the contract below no thread runs kiln code any more.
//!
//! # The limbo across a mode switch
//!
//! Code parked while unmanaged has no epoch (`since: None`). Switching to a
//! managed mode happens with the limbo locked: kiln-core raises its floor
//! to the current epoch, and every unstamped entry is stamped with that
//! floor, so it is released two advances after the switch (kiln-core's
//! invariant 3) — the same wait as code still in the ring. A step drains
//! the ring into the limbo with the limbo locked, so no switch falls
//! between the two. A retirement the full ring refused is parked stamped
//! with the epoch at parking, which is no earlier than the retirement.
//!
//! # Contract for registered threads
//!
//! A thread registers before it runs kiln code; registering and each
//! `quiescent()` report are quiescent points (the thread holds no entry,
//! table or code pointer obtained from kiln at that moment); a thread that
//! drops its registration runs no more kiln code.

use kiln_core::{BeadRef, CodeHandle, DeoptPolicy, Events, HotnessPolicy, ReclaimMode, WakeHook};

use crate::sync::{Arc, AtomicBool, AtomicU32, Mutex, Ordering, lock};

/// What reclamation needs from kiln-core's broker (a trait so the loom
/// model can run this module on a small broker of its own).
pub(crate) trait EpochBroker {
    /// `Broker::epoch`.
    fn epoch(&self) -> u32;
    /// `Broker::reclaim_mode`.
    fn mode(&self) -> ReclaimMode;
    /// `Broker::enter_reclaim_mode`: the floor after the call.
    fn enter(&self, mode: ReclaimMode) -> u32;
    /// `Broker::quiesce_with`.
    fn quiesce(&self, release: &mut dyn FnMut(CodeHandle)) -> usize;
    /// `Broker::quiesce_from`.
    fn quiesce_from(&self, expected: u32, release: &mut dyn FnMut(CodeHandle)) -> Option<usize>;
    /// `Broker::park_retired`.
    fn park(&self, park: &mut dyn FnMut(CodeHandle)) -> usize;
}

impl<H, P, D, W, E, const QUEUE: usize, const RETIRE: usize> EpochBroker
    for kiln_core::Broker<H, P, D, W, E, QUEUE, RETIRE>
where
    H: BeadRef,
    P: HotnessPolicy,
    D: DeoptPolicy,
    W: WakeHook,
    E: Events,
{
    fn epoch(&self) -> u32 {
        kiln_core::Broker::epoch(self)
    }
    fn mode(&self) -> ReclaimMode {
        self.reclaim_mode()
    }
    fn enter(&self, mode: ReclaimMode) -> u32 {
        self.enter_reclaim_mode(mode)
    }
    fn quiesce(&self, release: &mut dyn FnMut(CodeHandle)) -> usize {
        self.quiesce_with(release)
    }
    fn quiesce_from(&self, expected: u32, release: &mut dyn FnMut(CodeHandle)) -> Option<usize> {
        kiln_core::Broker::quiesce_from(self, expected, release)
    }
    fn park(&self, park: &mut dyn FnMut(CodeHandle)) -> usize {
        self.park_retired(park)
    }
}

/// One registered thread's reports.
#[derive(Debug)]
pub(crate) struct ThreadSlot {
    /// The epoch read at the thread's last quiescent point.
    seen: AtomicU32,
    /// Cleared when the thread drops its registration.
    live: AtomicBool,
}

/// A retired code object kept out of the ring.
#[derive(Debug)]
struct Parked {
    code: CodeHandle,
    /// The epoch its two advances count from; `None` while unmanaged.
    since: Option<u32>,
}

/// The registry and the limbo of one domain.
#[derive(Debug, Default)]
pub(crate) struct Reclaimer {
    threads: Mutex<Vec<Arc<ThreadSlot>>>,
    limbo: Mutex<Vec<Parked>>,
}

impl Reclaimer {
    /// Registers the calling thread; registering is a quiescent point.
    pub(crate) fn register(&self, broker: &impl EpochBroker) -> Arc<ThreadSlot> {
        let slot = Arc::new(ThreadSlot { seen: AtomicU32::new(broker.epoch()), live: AtomicBool::new(true) });
        {
            let mut threads = lock(&self.threads);
            // Acquire pairs with the Release in `unregister`.
            threads.retain(|thread| thread.live.load(Ordering::Acquire));
            threads.push(Arc::clone(&slot));
        }
        // In the registry before the switch: a round can never see
        // `Registered` with this thread missing.
        self.enter(broker, ReclaimMode::Registered);
        slot
    }

    /// The thread behind `slot` will run no more kiln code.
    pub(crate) fn unregister(&self, slot: &ThreadSlot) {
        // Release pairs with the Acquire in `round_complete`: whoever skips
        // the slot sees that its thread let go of every kiln pointer.
        slot.live.store(false, Ordering::Release);
    }

    /// The thread behind `slot` passed a quiescent point.
    pub(crate) fn report(&self, broker: &impl EpochBroker, slot: &ThreadSlot) {
        // Release pairs with the Acquire in `round_complete`: the reclaimer
        // that counts this report sees that the thread let go of every kiln
        // pointer it loaded before. The epoch load (Acquire, in
        // `Broker::epoch`) orders the unpublishes of earlier epochs before
        // anything the thread loads after this point.
        slot.seen.store(broker.epoch(), Ordering::Release);
    }

    /// The host declares quiescence for every thread (`Beadie::quiesce`).
    pub(crate) fn quiesce(&self, broker: &impl EpochBroker, release: &mut dyn FnMut(CodeHandle)) -> usize {
        self.enter(broker, ReclaimMode::Host);
        broker.quiesce(release) + self.release_due(broker, release)
    }

    /// One reclamation step (workers after pumping, host pumps, a full
    /// retire ring): park while unmanaged, complete a round of registered
    /// threads, and release what is due in the limbo.
    pub(crate) fn step(&self, broker: &impl EpochBroker, release: &mut dyn FnMut(CodeHandle)) -> usize {
        match broker.mode() {
            ReclaimMode::Unmanaged => {
                // Drained and parked under the limbo lock: a switch, which
                // stamps the limbo under the same lock, falls before or after
                // both, so drained code is always stamped by it (never left
                // unstamped, never stamped late).
                let mut limbo = lock(&self.limbo);
                broker.park(&mut |code| limbo.push(Parked { code, since: None }));
                0
            }
            // Workers never declare quiescence for a host that declares it.
            ReclaimMode::Host => self.release_due(broker, release),
            ReclaimMode::Registered => {
                let expected = broker.epoch();
                let released = match self.round_complete(expected) {
                    true => broker.quiesce_from(expected, release).unwrap_or(0),
                    false => 0,
                };
                released + self.release_due(broker, release)
            }
        }
    }

    /// Every live registered thread reported in `epoch`. In `Registered`
    /// mode the registry is never empty by accident: a slot is pushed before
    /// the switch (`register`), so an empty round means every registered
    /// thread unregistered, and none runs kiln code any more.
    fn round_complete(&self, epoch: u32) -> bool {
        let threads = lock(&self.threads);
        threads.iter().all(|slot| {
            // Acquire pairs with the Release in `unregister`, and the one on
            // `seen` with the Release in `report`.
            !slot.live.load(Ordering::Acquire) || (slot.seen.load(Ordering::Acquire).wrapping_sub(epoch) as i32) >= 0
        })
    }

    /// Keeps `code` (retired, possibly still running) in the limbo.
    pub(crate) fn park(&self, broker: &impl EpochBroker, code: CodeHandle) {
        let mut limbo = lock(&self.limbo);
        // The mode is switched with the limbo locked (`enter`), so this read
        // is ordered with the switch and its stamping by the lock. The epoch
        // read now is no earlier than the retirement.
        let since = match broker.mode() {
            ReclaimMode::Unmanaged => None,
            _ => Some(broker.epoch()),
        };
        limbo.push(Parked { code, since });
    }

    /// Switches the broker's mode with the limbo locked, stamping what was
    /// parked while unmanaged with the new floor.
    fn enter(&self, broker: &impl EpochBroker, mode: ReclaimMode) {
        if broker.mode() >= mode {
            return; // modes only move forward; nothing to stamp
        }
        let mut limbo = lock(&self.limbo);
        let floor = broker.enter(mode);
        for parked in limbo.iter_mut().filter(|parked| parked.since.is_none()) {
            parked.since = Some(floor);
        }
    }

    /// Releases limbo entries two advances past their stamp.
    fn release_due(&self, broker: &impl EpochBroker, release: &mut dyn FnMut(CodeHandle)) -> usize {
        let due: Vec<CodeHandle> = {
            let mut limbo = lock(&self.limbo);
            if limbo.is_empty() {
                return 0;
            }
            // Any epoch read now is a safe bound: it only grows, and each
            // advance to it was certified.
            let epoch = broker.epoch();
            let mut due = Vec::new();
            limbo.retain(|parked| match parked.since {
                Some(since) if (epoch.wrapping_sub(since) as i32) >= 2 => {
                    due.push(parked.code);
                    false
                }
                _ => true,
            });
            due
        };
        for &code in &due {
            release(code);
        }
        due.len()
    }

    /// Code objects in the limbo.
    pub(crate) fn parked(&self) -> usize {
        lock(&self.limbo).len()
    }

    /// Empties the limbo (the domain is dropping: nothing can reach these
    /// objects any more, though threads may still run their code).
    pub(crate) fn take_parked(&self) -> Vec<CodeHandle> {
        std::mem::take(&mut *lock(&self.limbo)).into_iter().map(|parked| parked.code).collect()
    }
}
